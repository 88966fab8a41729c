//! How the rest of the daemon obtains provider keys without seeing where they are kept.
//!
//! The vault implements [`KeyStore`]; the router asks it for a provider's keys (in the user's
//! order) for the duration of one request and reports back how each key fared. Secrets stay in
//! [`SecretString`]; nothing here can print them.

use crate::usage_record::KeySource;
use secrecy::SecretString;

/// A key handed out for one request.
pub struct ResolvedKey {
    /// Stable id of the key (vault entry id, or `env:NAME`); safe to log and to store.
    pub id: String,
    pub source: KeySource,
    pub secret: SecretString,
}

impl std::fmt::Debug for ResolvedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedKey").field("id", &self.id).field("source", &self.source).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the vault is locked; unlock it with `llm-sidecar vault unlock`")]
    Locked,
    #[error("key store failure: {0}")]
    Store(String),
}

/// What happened when a key was used, so the store can keep `last_used` and `status` current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOutcome {
    /// The provider accepted the key.
    Ok,
    /// The provider rejected the key (401/403).
    Invalid,
}

pub trait KeyStore: Send + Sync + std::fmt::Debug {
    /// The usable keys for `provider`, in the order the user wants them tried. Empty if none.
    fn keys_for(&self, provider: &str) -> Result<Vec<ResolvedKey>, KeyError>;
    /// Like [`KeyStore::keys_for`], for background work (e.g. the sync token) that is not user
    /// activity: it must not keep an idle vault from auto-locking.
    fn keys_for_background(&self, provider: &str) -> Result<Vec<ResolvedKey>, KeyError> {
        self.keys_for(provider)
    }
    /// Records the outcome of using key `id`.
    fn report(&self, id: &str, outcome: KeyOutcome);
}

/// A store with no keys (used until a vault is configured, and in tests).
#[derive(Debug, Default)]
pub struct NoKeys;

impl KeyStore for NoKeys {
    fn keys_for(&self, _provider: &str) -> Result<Vec<ResolvedKey>, KeyError> {
        Ok(Vec::new())
    }
    fn report(&self, _id: &str, _outcome: KeyOutcome) {}
}
