//! Where the sync bearer token comes from.
//!
//! The worker asks a [`SyncCredentials`] for the token before every request, so a new token is
//! used as soon as it exists. The daemon uses [`KeyStoreToken`]: a vault entry of provider
//! `llm-sidecar-sync` (`llm-sidecar keys add llm-sidecar-sync`), else the account's entitlement
//! token (`account.login`), else an environment variable or a file named in config
//! (`[sync] token_env` / `token_file`). Tokens stay in
//! [`SecretString`]; only a non-reversible in-memory fingerprint is kept to notice a change.

use secrecy::{ExposeSecret, SecretString};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

pub trait SyncCredentials: Send + Sync + std::fmt::Debug {
    /// The current bearer token, or `None` to send requests without `Authorization`.
    fn bearer(&self) -> Option<SecretString>;
}

/// No token at all.
#[derive(Debug, Default)]
pub struct NoToken;

impl SyncCredentials for NoToken {
    fn bearer(&self) -> Option<SecretString> {
        None
    }
}

/// Reads the token from an environment variable (the daemon's environment at start).
#[derive(Debug)]
pub struct EnvToken(pub String);

impl SyncCredentials for EnvToken {
    fn bearer(&self) -> Option<SecretString> {
        std::env::var(&self.0).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).map(SecretString::from)
    }
}

/// Reads the token from a file on every request (so replacing the file takes effect at once).
#[derive(Debug)]
pub struct FileToken(pub PathBuf);

impl SyncCredentials for FileToken {
    fn bearer(&self) -> Option<SecretString> {
        let text = std::fs::read_to_string(&self.0).ok()?;
        let token = text.trim();
        (!token.is_empty()).then(|| SecretString::from(token.to_string()))
    }
}

/// Reads the token from the key store (the vault): the first key stored for one of `providers`
/// (e.g. `llm-sidecar-sync`, then the account's entitlement token), else `fallback` (env/file).
#[derive(Debug)]
pub struct KeyStoreToken {
    pub keys: std::sync::Arc<dyn crate::keystore::KeyStore>,
    pub providers: &'static [&'static str],
    pub fallback: std::sync::Arc<dyn SyncCredentials>,
}

/// The vault entry names the sync token is looked up under, in order.
pub const VAULT_TOKEN_PROVIDERS: &[&str] = &["llm-sidecar-sync", "llm-sidecar-account"];

impl SyncCredentials for KeyStoreToken {
    fn bearer(&self) -> Option<SecretString> {
        for provider in self.providers {
            if let Some(key) = self.keys.keys_for_background(provider).ok().and_then(|k| k.into_iter().next()) {
                return Some(key.secret);
            }
        }
        self.fallback.bearer()
    }
}

/// A fingerprint of a token, to tell whether it changed (never stored or printed).
pub fn fingerprint(token: Option<&SecretString>) -> Option<u64> {
    token.map(|t| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        t.expose_secret().hash(&mut h);
        h.finish()
    })
}
