//! The local socket: path preparation, single-instance lock, stale-socket reclaim, bind.
//!
//! Order matters and is the invariant of this module:
//! 1. the socket's directory exists, is a real directory owned by us, and no other user can
//!    enter it (mode 0700; a directory we create gets exactly that);
//! 2. an exclusive `flock` on `<socket>.lock` is taken *before* the socket file is touched, so a
//!    second daemon fails here with a clear message and never deletes a live daemon's socket;
//! 3. a socket file left behind is removed only if nothing accepts connections on it (stale);
//! 4. the socket is created with mode 0600 before `listen`.
//!
//! The lock is held, and the socket file removed, for exactly the lifetime of [`BoundSocket`].
//!
//! Under a service manager the socket may instead be inherited ([`Activation`]): from systemd
//! (`LISTEN_FDS`, honoured only when `LISTEN_PID` is our pid) or launchd (`launch_activate_socket`
//! on macOS). The manager owns such a socket: the daemon neither locks nor removes it.

use interprocess::local_socket::tokio::Listener;
use interprocess::local_socket::traits::tokio::Listener as _;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("another llm-sidecar daemon is already running on {path}{}", pid.as_ref().map(|p| format!(" (pid {p})")).unwrap_or_default())]
    AlreadyRunning { path: PathBuf, pid: Option<String> },
    #[error("socket directory {path} is not safe: {reason}")]
    UnsafeDir { path: PathBuf, reason: String },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ListenError + 'a {
    move |source| ListenError::Io { action, path: path.to_path_buf(), source }
}

/// A bound, listening socket plus the instance lock that guards it.
pub struct BoundSocket {
    pub listener: Listener,
    pub path: PathBuf,
    /// Whether this process created the socket file (and so must remove it).
    owns_file: bool,
    _lock: Option<File>,
}

impl BoundSocket {
    /// Removes the socket file now (called once accepting stops); idempotent.
    pub fn remove_file(&mut self) {
        if self.owns_file {
            self.owns_file = false;
            if let Err(e) = fs::remove_file(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), "could not remove socket: {e}");
                }
            }
        }
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        self.remove_file();
    }
}

/// Creates (0700) or checks the directory that will hold the socket.
pub fn prepare_dir(dir: &Path) -> Result<(), ListenError> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err("create", dir))?;
            // `recursive` applies the mode to every directory it creates, but umask may narrow it;
            // set it exactly on the last one.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err("chmod", dir))?;
        }
        Err(e) => return Err(io_err("inspect", dir)(e)),
        Ok(meta) => {
            let unsafe_dir = |reason: String| ListenError::UnsafeDir { path: dir.to_path_buf(), reason };
            if meta.file_type().is_symlink() {
                return Err(unsafe_dir("it is a symbolic link".into()));
            }
            if !meta.is_dir() {
                return Err(unsafe_dir("it is not a directory".into()));
            }
            let uid = rustix::process::getuid().as_raw();
            if meta.uid() != uid {
                return Err(unsafe_dir(format!("it is owned by uid {}, not by us (uid {uid})", meta.uid())));
            }
            if meta.mode() & 0o077 != 0 {
                return Err(unsafe_dir(format!(
                    "other users can access it (mode {:o}); use a private directory (mode 0700)",
                    meta.mode() & 0o777
                )));
            }
        }
    }
    Ok(())
}

fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    socket.with_file_name(name)
}

/// Takes the single-instance lock for `socket`, recording our pid in it.
fn take_lock(socket: &Path) -> Result<File, ListenError> {
    let path = lock_path(socket);
    match lock_with_stamp(&path, &format!("{}\n", std::process::id())).map_err(io_err("lock", &path))? {
        Ok(file) => Ok(file),
        Err(holder) => {
            let pid = holder.lines().next().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
            Err(ListenError::AlreadyRunning { path: socket.to_path_buf(), pid })
        }
    }
}

/// Takes an exclusive `flock` on `path` (created 0600) and writes `stamp` into it. When another
/// process holds it, returns what that process wrote (`Ok(Err(stamp))`). The lock lasts as long
/// as the returned file is open; the kernel drops it when the process dies.
pub(crate) fn lock_with_stamp(path: &Path, stamp: &str) -> io::Result<Result<File, String>> {
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(Err(fs::read_to_string(path).unwrap_or_default())),
        Err(TryLockError::Error(e)) => return Err(e),
    }
    file.set_len(0)?;
    file.write_all(stamp.as_bytes())?;
    Ok(Ok(file))
}

/// Removes a socket file nobody listens on; refuses to touch a live one or a non-socket.
fn reclaim_stale(socket: &Path) -> Result<(), ListenError> {
    let meta = match fs::symlink_metadata(socket) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("inspect", socket)(e)),
        Ok(m) => m,
    };
    if !meta.file_type().is_socket() {
        return Err(ListenError::NotASocket { path: socket.to_path_buf() });
    }
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return Err(ListenError::AlreadyRunning { path: socket.to_path_buf(), pid: None });
    }
    fs::remove_file(socket).map_err(io_err("remove stale socket", socket))?;
    tracing::info!(path = %socket.display(), "removed a stale socket left by a previous daemon");
    Ok(())
}

/// Prepares the directory, takes the lock, reclaims a stale socket and binds (mode 0600).
pub fn bind(socket: &Path) -> Result<BoundSocket, ListenError> {
    let dir = socket.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    prepare_dir(dir)?;
    let lock = take_lock(socket)?;
    reclaim_stale(socket)?;
    let name = socket.to_fs_name::<GenericFilePath>().map_err(io_err("name", socket))?;
    let options = || ListenerOptions::new().name(name.clone()).reclaim_name(false).try_overwrite(false);
    let listener = match options().mode(0o600).create_tokio() {
        Ok(l) => l,
        // Platforms that cannot set the mode before bind (macOS): the directory is 0700, so
        // nobody else can reach the socket before we chmod it.
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {
            let l = options().create_tokio().map_err(io_err("bind", socket))?;
            fs::set_permissions(socket, fs::Permissions::from_mode(0o600)).map_err(io_err("chmod", socket))?;
            l
        }
        Err(e) => return Err(io_err("bind", socket)(e)),
    };
    Ok(BoundSocket { listener, path: socket.to_path_buf(), owns_file: true, _lock: Some(lock) })
}

/// A listening socket handed over by a service manager, taken before any thread starts.
pub enum Activation {
    /// Not started by a service manager (or by one that passed no socket).
    None,
    /// `LISTEN_FDS` was set for another process (e.g. inherited from a parent); ignored.
    OtherProcess,
    /// A listening Unix socket passed by systemd or launchd.
    Socket(std::os::unix::net::UnixListener),
}

impl Activation {
    /// Reads the service manager's hand-over. Must run before the async runtime starts threads,
    /// because it clears `LISTEN_*` from the environment.
    pub fn take() -> Result<Activation, ListenError> {
        if let Some(activation) = Self::take_launchd()? {
            return Ok(activation);
        }
        if std::env::var_os("LISTEN_FDS").is_none() {
            return Ok(Activation::None);
        }
        let for_us =
            std::env::var("LISTEN_PID").ok().and_then(|p| p.trim().parse::<u32>().ok()) == Some(std::process::id());
        if !for_us {
            return Ok(Activation::OtherProcess);
        }
        let path = PathBuf::from("LISTEN_FDS");
        match listenfd::ListenFd::from_env().take_unix_listener(0).map_err(io_err("use the socket passed in", &path))? {
            Some(l) => Ok(Activation::Socket(l)),
            None => Ok(Activation::None),
        }
    }

    #[cfg(target_os = "macos")]
    #[allow(unsafe_code)]
    fn take_launchd() -> Result<Option<Activation>, ListenError> {
        use std::os::fd::{FromRawFd, OwnedFd};
        match raunch::activate_socket(LAUNCHD_SOCKET_NAME) {
            Ok(fds) => {
                let mut owned: Vec<OwnedFd> = fds
                    .into_iter()
                    // SAFETY: launch_activate_socket hands us ownership of these freshly created
                    // descriptors; nothing else in this process knows or closes them.
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
                    .collect();
                if owned.is_empty() {
                    return Ok(None);
                }
                Ok(Some(Activation::Socket(std::os::unix::net::UnixListener::from(owned.swap_remove(0)))))
            }
            // Not started by launchd, or no such socket in the plist: bind ourselves.
            Err(_) => Ok(None),
        }
    }

    #[cfg(not(target_os = "macos"))]
    fn take_launchd() -> Result<Option<Activation>, ListenError> {
        Ok(None)
    }
}

/// Name of the socket entry in the launchd plist (`Sockets.<name>`).
pub const LAUNCHD_SOCKET_NAME: &str = "Listeners";

/// Serves on a socket inherited from a service manager.
pub fn adopt(std_listener: std::os::unix::net::UnixListener) -> Result<BoundSocket, ListenError> {
    let path = std_listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("<inherited socket>"));
    let sync = interprocess::os::unix::uds_local_socket::Listener::from(std_listener);
    let tokio_listener = interprocess::os::unix::uds_local_socket::tokio::Listener::try_from(sync)
        .map_err(io_err("use inherited socket", &path))?;
    Ok(BoundSocket { listener: Listener::from(tokio_listener), path, owns_file: false, _lock: None })
}

/// Accepts the next connection (a thin wrapper so callers need not import the trait).
pub async fn accept(listener: &Listener) -> io::Result<interprocess::local_socket::tokio::Stream> {
    listener.accept().await
}
