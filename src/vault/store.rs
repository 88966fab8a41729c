//! The contents of `vault.age`: a JSON document age-encrypted to the vault's X25519 identity.
//!
//! Plaintext (what `age -d -i identity.txt vault.age` prints):
//! `{"format":"llm-sidecar-vault","version":1,"keys":[{"id","provider","label","secret",
//! "created_at","last_used","status"}]}` with times in Unix milliseconds. Key order is the order
//! the router tries them in.
//!
//! Invariants: plaintext only lives in [`Zeroizing`] buffers and secrets in [`SecretString`]; a
//! file that is not an age file, was encrypted to another key, fails authentication, or holds a
//! document of another shape is reported as such ([`FileError`]) and never rewritten here.

use super::{KeyMeta, KeyStatus};
use age::secrecy::{ExposeSecret, SecretString};
use age::x25519;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use zeroize::Zeroizing;

const FORMAT: &str = "llm-sidecar-vault";
const VERSION: u32 = 1;

/// One stored key: metadata plus the secret.
pub(crate) struct Entry {
    pub meta: KeyMeta,
    pub secret: SecretString,
}

/// Why `vault.age` could not be read (the caller adds the path).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("it is not an age file (damaged, or written by another program)")]
    NotAge,
    #[error("it was encrypted to a different key than identity.txt's (a foreign vault, or the wrong identity.txt)")]
    Foreign,
    #[error("it is damaged: {0}")]
    Corrupt(String),
    #[error("it decrypts, but is not an llm-sidecar vault: {0}")]
    NotVault(String),
    #[error("it was written by a newer llm-sidecar (vault format {0}; this version reads format {VERSION})")]
    TooNew(u32),
}

#[derive(Serialize)]
struct DocOut<'a> {
    format: &'static str,
    version: u32,
    keys: Vec<EntryOut<'a>>,
}

#[derive(Serialize)]
struct EntryOut<'a> {
    id: &'a str,
    provider: &'a str,
    label: &'a str,
    secret: &'a str,
    created_at: i64,
    last_used: Option<i64>,
    status: KeyStatus,
}

#[derive(Deserialize)]
struct DocHead {
    format: String,
    version: u32,
}

/// The document after [`DocHead`] was checked (`format` and `version` are ignored here).
#[derive(Deserialize)]
struct DocIn {
    keys: Vec<EntryIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryIn {
    id: String,
    provider: String,
    label: String,
    secret: SecretField,
    created_at: i64,
    last_used: Option<i64>,
    status: KeyStatus,
}

/// Deserializes straight into a [`SecretString`] (no intermediate `String` left behind).
struct SecretField(SecretString);

impl<'de> Deserialize<'de> for SecretField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SecretField;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<SecretField, E> {
                Ok(SecretField(SecretString::from(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Serializes and encrypts `entries` to `recipient`.
pub(crate) fn seal(entries: &[Entry], recipient: &x25519::Recipient) -> Result<Vec<u8>, String> {
    let doc = DocOut {
        format: FORMAT,
        version: VERSION,
        keys: entries
            .iter()
            .map(|e| EntryOut {
                id: &e.meta.id,
                provider: &e.meta.provider,
                label: &e.meta.label,
                secret: e.secret.expose_secret(),
                created_at: e.meta.created_at,
                last_used: e.meta.last_used,
                status: e.meta.status,
            })
            .collect(),
    };
    // Sized up front so the plaintext is not copied around by reallocation.
    let mut plain = Zeroizing::new(Vec::with_capacity(256 + entries.len() * 512));
    serde_json::to_writer(&mut *plain, &doc).map_err(|e| e.to_string())?;
    plain.push(b'\n');
    let encryptor = age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(plain.len() + 512);
    let mut w = encryptor.wrap_output(&mut out).map_err(|e| e.to_string())?;
    w.write_all(&plain).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// Decrypts and parses a vault file.
pub(crate) fn open(bytes: &[u8], identity: &x25519::Identity) -> Result<Vec<Entry>, FileError> {
    let decryptor = age::Decryptor::new(bytes).map_err(|_| FileError::NotAge)?;
    if decryptor.is_scrypt() {
        return Err(FileError::Foreign);
    }
    let mut reader = match decryptor.decrypt(std::iter::once(identity as &dyn age::Identity)) {
        Ok(r) => r,
        Err(age::DecryptError::NoMatchingKeys) => return Err(FileError::Foreign),
        Err(e) => return Err(FileError::Corrupt(e.to_string())),
    };
    let mut plain = Zeroizing::new(Vec::with_capacity(bytes.len()));
    reader.read_to_end(&mut plain).map_err(|e| FileError::Corrupt(e.to_string()))?;
    parse(&plain)
}

/// Checks, without a key, that `bytes` is an age file encrypted to a recipient (not a passphrase).
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), FileError> {
    let decryptor = age::Decryptor::new(bytes).map_err(|_| FileError::NotAge)?;
    if decryptor.is_scrypt() {
        return Err(FileError::Foreign);
    }
    Ok(())
}

fn parse(plain: &[u8]) -> Result<Vec<Entry>, FileError> {
    let head: DocHead = serde_json::from_slice(plain).map_err(|e| FileError::NotVault(describe(&e)))?;
    if head.format != FORMAT {
        return Err(FileError::NotVault(format!("its `format` is not `{FORMAT}`")));
    }
    if head.version > VERSION {
        return Err(FileError::TooNew(head.version));
    }
    let doc: DocIn = serde_json::from_slice(plain).map_err(|e| FileError::NotVault(describe(&e)))?;
    let mut ids = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(doc.keys.len());
    for k in doc.keys {
        if !ids.insert(k.id.clone()) {
            return Err(FileError::NotVault(format!("key id `{}` appears twice", k.id)));
        }
        let last4 = super::last4(&k.secret.0);
        out.push(Entry {
            meta: KeyMeta {
                id: k.id,
                provider: k.provider,
                label: k.label,
                last4,
                created_at: k.created_at,
                last_used: k.last_used,
                status: k.status,
            },
            secret: k.secret.0,
        });
    }
    Ok(out)
}

/// A JSON error's position and category only: serde_json messages can quote input, which here
/// is plaintext key material.
fn describe(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "unexpected structure",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn entry(id: &str, secret: &str) -> Entry {
        Entry {
            meta: KeyMeta {
                id: id.into(),
                provider: "openai".into(),
                label: "default".into(),
                last4: super::super::last4(&SecretString::from(secret)),
                created_at: 1,
                last_used: None,
                status: KeyStatus::Unknown,
            },
            secret: SecretString::from(secret),
        }
    }

    #[test]
    fn seal_open_round_trip() {
        let id = x25519::Identity::generate();
        let sealed = seal(&[entry("k1", "sk-aaaaaaaaaaaaaaaa1234"), entry("k2", "sk-b")], &id.to_public()).unwrap();
        assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
        let back = open(&sealed, &id).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].meta.id, "k1");
        assert_eq!(back[0].secret.expose_secret(), "sk-aaaaaaaaaaaaaaaa1234");
        assert_eq!(back[0].meta.last4.as_deref(), Some("1234"));
        assert_eq!(back[1].meta.last4, None, "short secrets show no digits");
        check_header(&sealed).unwrap();
    }

    #[test]
    fn foreign_corrupt_and_alien_files_are_told_apart() {
        let id = x25519::Identity::generate();
        let other = x25519::Identity::generate();
        let sealed = seal(&[entry("k1", "sk-x")], &other.to_public()).unwrap();
        assert!(matches!(open(&sealed, &id), Err(FileError::Foreign)));
        assert!(matches!(open(b"{\"keys\": []}", &id), Err(FileError::NotAge)));
        assert!(matches!(check_header(b""), Err(FileError::NotAge)));
        let mut damaged = seal(&[entry("k1", "sk-x")], &id.to_public()).unwrap();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        assert!(matches!(open(&damaged, &id), Err(FileError::Corrupt(_))));
        let alien = age::encrypt(&id.to_public(), b"{\"secret\": \"sk-leak-me\"}").unwrap();
        match open(&alien, &id) {
            Err(FileError::NotVault(m)) => assert!(!m.contains("sk-leak-me"), "{m}"),
            _ => panic!("expected NotVault"),
        }
        let newer =
            age::encrypt(&id.to_public(), b"{\"format\":\"llm-sidecar-vault\",\"version\":9,\"keys\":[]}").unwrap();
        assert!(matches!(open(&newer, &id), Err(FileError::TooNew(9))));
    }
}
