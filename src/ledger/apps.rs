//! App tokens: each HTTP client of the daemon is an app with a name and a bearer token, and its
//! calls are metered under that name.
//!
//! - A token is `lsk_` + 32 random bytes from the OS (`getrandom`), base64url without padding.
//!   It is shown once, when the app is made; the ledger keeps only its SHA-256 hash (`apps`
//!   table, see [`super::schema`]), so the file never holds a usable token.
//! - [`super::Ledger::verify_app_token`] hashes the presented token, looks the hash up (it is
//!   unique and indexed) and compares the stored hash with it in constant time.
//! - Writes (add, remove, last-used) go through the committer, the ledger's one writer. The
//!   last-used time is written at most once per [`TOUCH_EVERY_MS`] per app, without waiting:
//!   verifying stays a read.
//! - Names follow `daemon.hello`'s app names: 1-64 characters, no control characters.

use base64::Engine as _;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What every token starts with (so a leaked one is recognisable, e.g. by secret scanners).
pub const TOKEN_PREFIX: &str = "lsk_";
/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;
/// Longest input [`super::Ledger::verify_app_token`] hashes; anything longer is no token.
pub const MAX_TOKEN_LEN: usize = 256;
/// The stored last-used time of an app is refreshed at most this often.
pub const TOUCH_EVERY_MS: i64 = 60_000;

/// One app as listed (never its token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub name: String,
    pub created_ms: i64,
    /// Last time its token verified (to within [`TOUCH_EVERY_MS`]); `None` if never.
    pub last_used_ms: Option<i64>,
}

/// Whether `name` can name an app: 1-64 characters, none of them a control character.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.chars().count()) && !name.chars().any(char::is_control)
}

/// A fresh token from the OS's random source.
pub fn new_token() -> Result<SecretString, getrandom::Error> {
    let mut bytes = zeroize::Zeroizing::new([0u8; TOKEN_BYTES]);
    getrandom::fill(&mut bytes[..])?;
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + 43);
    token.push_str(TOKEN_PREFIX);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(&bytes[..], &mut token);
    Ok(SecretString::from(token))
}

/// The stored form of a token.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether two hashes are equal, in time independent of where they differ.
pub fn same_hash(a: &[u8], b: &[u8; 32]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::super::{schema, Ledger, LedgerError};
    use super::*;
    use crate::clock::now_ms;
    use secrecy::ExposeSecret;

    #[test]
    fn tokens_are_prefixed_random_base64url() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        let a = a.expose_secret();
        assert!(a.starts_with(TOKEN_PREFIX), "{a}");
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert!(a[TOKEN_PREFIX.len()..].chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(a, b.expose_secret());
    }

    #[test]
    fn names_are_like_hello_app_names() {
        assert!(valid_name("my-editor"));
        assert!(valid_name(&"x".repeat(64)));
        assert!(valid_name("émacs ✓"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"x".repeat(65)));
        assert!(!valid_name("a\nb"));
    }

    #[tokio::test]
    async fn create_verify_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        let before = now_ms();
        let (app, token) = l.create_app("editor").await.unwrap();
        assert_eq!(app.name, "editor");
        assert!(app.created_ms >= before && app.last_used_ms.is_none());
        let (_, other) = l.create_app("notes").await.unwrap();
        let listed = l.apps().unwrap();
        assert_eq!(listed.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["editor", "notes"]);
        assert_eq!(l.verify_app_token(token.expose_secret()).unwrap().as_deref(), Some("editor"));
        assert_eq!(l.verify_app_token(other.expose_secret()).unwrap().as_deref(), Some("notes"));
        assert!(l.remove_app("editor").await.unwrap());
        assert!(!l.remove_app("editor").await.unwrap());
        assert_eq!(l.verify_app_token(token.expose_secret()).unwrap(), None, "a removed app's token");
        assert_eq!(l.apps().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_duplicate_name_is_refused_and_keeps_the_first_token() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        let (_, token) = l.create_app("editor").await.unwrap();
        let e = l.create_app("editor").await.expect_err("duplicate");
        assert!(matches!(&e, LedgerError::AppExists(n) if n == "editor"), "{e:?}");
        assert!(e.to_string().contains("already exists"), "{e}");
        assert_eq!(l.verify_app_token(token.expose_secret()).unwrap().as_deref(), Some("editor"));
        assert!(matches!(l.create_app("").await, Err(LedgerError::InvalidAppName)));
        assert_eq!(l.apps().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn wrong_tokens_do_not_verify() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        let (_, token) = l.create_app("editor").await.unwrap();
        let t = token.expose_secret();
        let mut altered = t.to_string();
        let last = altered.pop().unwrap();
        altered.push(if last == 'A' { 'B' } else { 'A' });
        for wrong in [&altered[..], &t[..t.len() - 1], "", "lsk_", &format!("{t}x"), &"a".repeat(10_000)] {
            assert_eq!(l.verify_app_token(wrong).unwrap(), None, "{wrong}");
        }
    }

    #[tokio::test]
    async fn verifying_records_last_used_through_the_committer() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        let (_, token) = l.create_app("editor").await.unwrap();
        let before = now_ms();
        assert!(l.verify_app_token(token.expose_secret()).unwrap().is_some());
        // The touch is queued without waiting; any later write is committed after it.
        l.create_app("barrier").await.unwrap();
        let used = l.apps().unwrap().into_iter().find(|a| a.name == "editor").unwrap().last_used_ms;
        assert!(used.is_some_and(|u| u >= before), "{used:?}");
    }

    #[tokio::test]
    async fn the_file_holds_no_token_text() {
        let dir = tempfile::tempdir().unwrap();
        let token = {
            let l = Ledger::open(dir.path()).unwrap();
            let (_, token) = l.create_app("editor").await.unwrap();
            l.verify_app_token(token.expose_secret()).unwrap();
            l.create_app("barrier").await.unwrap();
            l.flush().unwrap();
            token
        };
        let t = token.expose_secret();
        let random_part = &t[TOKEN_PREFIX.len()..];
        let mut found_any = false;
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            // The closing committer may fold the WAL into the file and delete it meanwhile.
            let Ok(bytes) = std::fs::read(entry.unwrap().path()) else { continue };
            found_any |= !bytes.is_empty();
            let hay = String::from_utf8_lossy(&bytes);
            assert!(!hay.contains(random_part), "token text in the ledger files");
            // Nor its raw bytes.
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(random_part).unwrap();
            assert!(!bytes.windows(raw.len()).any(|w| w == raw.as_slice()), "token bytes in the ledger files");
        }
        assert!(found_any);
        // The hash is what is stored.
        let l = Ledger::open(dir.path()).unwrap();
        let conn = rusqlite::Connection::open(schema::path_in(dir.path())).unwrap();
        let stored: Vec<u8> =
            conn.query_row("SELECT token_hash FROM apps WHERE name = 'editor'", [], |r| r.get(0)).unwrap();
        assert_eq!(stored, hash(t));
        assert_eq!(l.verify_app_token(t).unwrap().as_deref(), Some("editor"));
    }

    #[tokio::test]
    async fn a_version_1_ledger_opens_and_gains_the_apps_table() {
        let dir = tempfile::tempdir().unwrap();
        {
            let file = schema::prepare(dir.path()).unwrap();
            let conn = rusqlite::Connection::open(&file).unwrap();
            conn.execute_batch(&format!("BEGIN; {}; PRAGMA user_version = 1; COMMIT;", schema::V1)).unwrap();
            conn.execute("INSERT INTO counters VALUES ('month', '2025-01', 'app', 'old', 3, 0, 0, 0, 0, 0, 0, 0)", [])
                .unwrap();
        }
        let l = Ledger::open(dir.path()).unwrap();
        assert!(l.apps().unwrap().is_empty());
        let (_, token) = l.create_app("editor").await.unwrap();
        assert_eq!(l.verify_app_token(token.expose_secret()).unwrap().as_deref(), Some("editor"));
        let old = l.counters(super::super::Period::Month, super::super::Dim::App, "2025-01", "2025-01").unwrap();
        assert_eq!(old[0].counter.requests, 3, "V1 data kept");
        drop(l);
        let conn = rusqlite::Connection::open(schema::path_in(dir.path())).unwrap();
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, schema::VERSION);
        assert!(v >= 2, "{v}");
    }
}
