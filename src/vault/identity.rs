//! The vault's age X25519 identity in `identity.txt`: reading, creating, and protecting it with
//! a passphrase.
//!
//! The plain file is exactly what `age-keygen` writes (comments, then one `AGE-SECRET-KEY-1...`
//! line), so `age -d -i identity.txt vault.age` decrypts the vault. In passphrase mode the file
//! holds that same text age-encrypted to the passphrase (scrypt, ASCII armor): the age tool
//! accepts such an "encrypted identity file" with `-i` and asks for the passphrase.
//!
//! Invariant: the identity text only exists in [`Zeroizing`] buffers; the parsed identity zeroizes
//! itself on drop.

use super::VaultError;
use age::armor::{ArmoredReader, ArmoredWriter, Format};
use age::secrecy::{ExposeSecret, SecretString};
use age::x25519;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::str::FromStr;
use zeroize::Zeroizing;

/// Highest scrypt work factor accepted (both for writing and for reading the identity): 2^22
/// needs 4 GiB of memory, far beyond age's default of about one second of work.
pub const MAX_SCRYPT_LOG_N: u8 = 22;

/// What `identity.txt` holds.
pub(crate) enum IdentityFile {
    Missing,
    Plain(x25519::Identity),
    /// Passphrase-protected: the raw file (an age file encrypted with scrypt).
    Encrypted(Vec<u8>),
}

/// Reads `identity.txt`. A plain identity readable by group or others is refused (like ssh does
/// with private keys); an encrypted one must be an age passphrase file.
pub(crate) fn read(path: &Path) -> Result<IdentityFile, VaultError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(IdentityFile::Missing),
        Err(source) => return Err(VaultError::Io { action: "read", path: path.to_path_buf(), source }),
    };
    if is_age_file(&bytes) {
        let decryptor = age::Decryptor::new(ArmoredReader::new(&bytes[..]))
            .map_err(|e| bad(path, &format!("it looks like an age file but its header is unreadable ({e})")))?;
        if !decryptor.is_scrypt() {
            return Err(bad(path, "it is an age file but not one protected by a passphrase"));
        }
        return Ok(IdentityFile::Encrypted(bytes.to_vec()));
    }
    let mode = std::fs::metadata(path)
        .map_err(|source| VaultError::Io { action: "inspect", path: path.to_path_buf(), source })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(VaultError::IdentityTooOpen { path: path.to_path_buf(), mode: mode & 0o777 });
    }
    parse_plain(&bytes).map(IdentityFile::Plain).map_err(|reason| bad(path, reason))
}

/// Parses `age-keygen` output: the first `AGE-SECRET-KEY-1` line, ignoring comments.
pub(crate) fn parse_plain(bytes: &[u8]) -> Result<x25519::Identity, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "it is neither text nor an age file")?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .ok_or("it contains no AGE-SECRET-KEY-1 line")?;
    x25519::Identity::from_str(line).map_err(|_| "its AGE-SECRET-KEY-1 line is not a valid X25519 identity")
}

/// The text `age-keygen` would write for `identity`.
pub(crate) fn plain_text(identity: &x25519::Identity) -> Zeroizing<String> {
    let created =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    Zeroizing::new(format!(
        "# created: {created}\n# public key: {}\n{}\n",
        identity.to_public(),
        identity.to_string().expose_secret()
    ))
}

/// Encrypts the identity text with `passphrase` (scrypt; `log_n` or age's ~1 s default), armored.
pub(crate) fn encrypt(
    identity: &x25519::Identity,
    passphrase: &SecretString,
    log_n: Option<u8>,
) -> Result<Vec<u8>, VaultError> {
    let fail = |e: &dyn std::fmt::Display| VaultError::Encrypt(e.to_string());
    let mut recipient = age::scrypt::Recipient::new(SecretString::from(passphrase.expose_secret().to_owned()));
    if let Some(n) = log_n.filter(|n| (1..=MAX_SCRYPT_LOG_N).contains(n)) {
        recipient.set_work_factor(n);
    }
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient)).map_err(|e| fail(&e))?;
    let mut out = Vec::new();
    let armor = ArmoredWriter::wrap_output(&mut out, Format::AsciiArmor).map_err(|e| fail(&e))?;
    let mut writer = encryptor.wrap_output(armor).map_err(|e| fail(&e))?;
    writer.write_all(plain_text(identity).as_bytes()).map_err(|e| fail(&e))?;
    writer.finish().and_then(|armor| armor.finish()).map_err(|e| fail(&e))?;
    Ok(out)
}

/// Decrypts a passphrase-protected identity file. A wrong passphrase is
/// [`VaultError::WrongPassphrase`].
pub(crate) fn decrypt(path: &Path, bytes: &[u8], passphrase: &SecretString) -> Result<x25519::Identity, VaultError> {
    let decryptor = age::Decryptor::new(ArmoredReader::new(bytes))
        .map_err(|e| bad(path, &format!("its age header is unreadable ({e})")))?;
    let mut identity = age::scrypt::Identity::new(SecretString::from(passphrase.expose_secret().to_owned()));
    identity.set_max_work_factor(MAX_SCRYPT_LOG_N);
    let mut reader = match decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity)) {
        Ok(r) => r,
        Err(age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys) => {
            return Err(VaultError::WrongPassphrase)
        }
        Err(e) => return Err(bad(path, &e.to_string())),
    };
    let mut text = Zeroizing::new(Vec::new());
    reader.read_to_end(&mut text).map_err(|e| bad(path, &format!("it does not decrypt cleanly ({e})")))?;
    parse_plain(&text).map_err(|reason| bad(path, reason))
}

/// True if `bytes` start like an age file, binary or armored.
pub(crate) fn is_age_file(bytes: &[u8]) -> bool {
    bytes.starts_with(b"age-encryption.org/") || bytes.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
}

fn bad(path: &Path, reason: &str) -> VaultError {
    VaultError::BadIdentity { path: path.to_path_buf(), reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn plain_text_round_trips_through_age_identity_file() {
        let id = x25519::Identity::generate();
        let text = plain_text(&id);
        assert!(text.starts_with("# created: "));
        let parsed = parse_plain(text.as_bytes()).unwrap();
        assert_eq!(parsed.to_public().to_string(), id.to_public().to_string());
        // The age crate's own identity-file parser (what `age -i` uses) accepts it too.
        let ids = age::IdentityFile::from_buffer(text.as_bytes()).unwrap().into_identities().unwrap();
        assert_eq!(ids.len(), 1);
    }

    #[test]
    fn passphrase_protection_round_trip_and_wrong_passphrase() {
        let id = x25519::Identity::generate();
        let pass = SecretString::from("correct horse battery".to_string());
        let file = encrypt(&id, &pass, Some(2)).unwrap();
        assert!(file.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----"));
        let back = decrypt(Path::new("identity.txt"), &file, &pass).unwrap();
        assert_eq!(back.to_public().to_string(), id.to_public().to_string());
        let wrong = SecretString::from("wrong horse".to_string());
        assert!(matches!(decrypt(Path::new("identity.txt"), &file, &wrong), Err(VaultError::WrongPassphrase)));
    }

    #[test]
    fn reading_rejects_open_permissions_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("identity.txt");
        assert!(matches!(read(&p).unwrap(), IdentityFile::Missing));
        std::fs::write(&p, plain_text(&x25519::Identity::generate()).as_bytes()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read(&p).err().unwrap();
        assert!(e.to_string().contains("0644"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(read(&p).unwrap(), IdentityFile::Plain(_)));
        std::fs::write(&p, b"hello\n").unwrap();
        let e = read(&p).err().unwrap();
        assert!(e.to_string().contains("AGE-SECRET-KEY-1"), "{e}");
    }
}
