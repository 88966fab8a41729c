//! Crash-safe replacement of a small file: write a temp file in the same directory, fsync it,
//! rename it over the target, fsync the directory.
//!
//! Invariant: at every instant the target path holds either the complete old content or the
//! complete new content, never a mix. A crash can leave a temp file named
//! `.<name>.tmp-<random>` beside the target; it is never read, and [`remove_stale_temps`]
//! deletes such leftovers at start. Files are created with mode 0600.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Points of [`write_atomic_with`] where a test can inject a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The temp file is complete and synced; the target is not yet replaced.
    TempSynced,
}

/// Atomically replaces `path` with `data` (mode 0600).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    write_atomic_with(path, data, &mut |_| Ok(()))
}

/// [`write_atomic`] with a hook called at each [`Step`]; an error from the hook aborts the write
/// there (tests use it to simulate a crash between the temp write and the rename).
pub(crate) fn write_atomic_with(
    path: &Path,
    data: &[u8],
    hook: &mut dyn FnMut(Step) -> io::Result<()>,
) -> io::Result<()> {
    let (dir, name) = split(path)?;
    let tmp = dir.join(format!("{}{}", temp_prefix(&name), uuid::Uuid::new_v4().simple()));
    let written = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        hook(Step::TempSynced)?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // Make the rename itself durable.
    std::fs::File::open(&dir)?.sync_all()
}

/// Deletes temp files a crashed [`write_atomic`] of `path` may have left. Returns how many.
pub(crate) fn remove_stale_temps(path: &Path) -> io::Result<usize> {
    let (dir, name) = split(path)?;
    let prefix = temp_prefix(&name);
    let mut removed = 0;
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)) {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn temp_prefix(name: &str) -> String {
    format!(".{name}.tmp-")
}

fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no UTF-8 file name"))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_content_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vault.age");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(names(dir.path()), ["vault.age"]);
    }

    #[test]
    fn failure_between_temp_and_rename_keeps_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vault.age");
        write_atomic(&p, b"old content").unwrap();
        let mut saw = Vec::new();
        let err = write_atomic_with(&p, b"new content", &mut |step| {
            saw.push(step);
            Err(io::Error::other("simulated crash"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "simulated crash");
        assert_eq!(saw, [Step::TempSynced]);
        assert_eq!(std::fs::read(&p).unwrap(), b"old content");
        assert_eq!(names(dir.path()), ["vault.age"], "the temp file is cleaned up");
    }

    #[test]
    fn a_crash_leftover_is_ignored_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vault.age");
        write_atomic(&p, b"old content").unwrap();
        // What a real crash after the temp write leaves behind.
        std::fs::write(dir.path().join(".vault.age.tmp-0123abcd"), b"half-written new").unwrap();
        std::fs::write(dir.path().join(".identity.txt.tmp-1"), b"other file's temp").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"old content");
        assert_eq!(remove_stale_temps(&p).unwrap(), 1);
        assert_eq!(names(dir.path()), [".identity.txt.tmp-1", "vault.age"]);
        assert_eq!(remove_stale_temps(&dir.path().join("missing").join("x")).unwrap(), 0);
    }
}
