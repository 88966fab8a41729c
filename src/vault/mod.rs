//! The key vault: the user's provider API keys, age-encrypted in `vault.age` under the data dir.
//!
//! Files: `vault.age` (see [`store`] for the plaintext shape) is encrypted to the X25519 identity
//! in `identity.txt` ([`identity`]), so `age -d -i identity.txt vault.age` decrypts it. In
//! passphrase mode `identity.txt` is itself age-encrypted with the passphrase: the vault starts
//! locked, [`Vault::unlock`] opens it (the first unlock sets the passphrase), [`Vault::lock`] and
//! the idle auto-lock close it again.
//!
//! Invariants:
//! - only this module sees plaintext keys; they live in [`SecretString`]s (zeroized on drop, no
//!   printing `Debug`) and leave it only as a [`ResolvedKey`] for one request, or to the
//!   [`probe`] for `keys.test`. Errors, logs and [`KeyMeta`] carry ids, providers, labels and at
//!   most the last four characters of a long key;
//! - every write goes through [`atomic::write_atomic`]: a crash leaves the old or the new file,
//!   and the in-memory state changes only after the write succeeded (user actions) — `last_used`
//!   from [`KeyStore::report`] is written within [`LAST_USED_FLUSH`], on lock and on shutdown;
//! - a `vault.age` that is unreadable, foreign or damaged stops [`Vault::open`] (identity mode)
//!   or the unlock (passphrase mode) with a clear error, and is never written over;
//! - while locked, no key material is in memory; requests needing keys fail with
//!   [`VaultError::Locked`]; only key use re-arms the auto-lock timer, status requests do not.

mod atomic;
mod config;
mod identity;
pub mod probe;
mod store;

pub use config::{VaultConfig, VaultMode};

use crate::clock::now_ms;
use crate::events::{Bus, EventKind};
use crate::keystore::{KeyError, KeyOutcome, KeyStore, ResolvedKey};
use crate::usage_record::KeySource;
use age::secrecy::{ExposeSecret, SecretString};
use age::x25519;
use identity::IdentityFile;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use store::Entry;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub const VAULT_FILE: &str = "vault.age";
pub const IDENTITY_FILE: &str = "identity.txt";
/// Label of a key added without one.
pub const DEFAULT_LABEL: &str = "default";
/// Shortest passphrase accepted when one is set.
pub const MIN_PASSPHRASE_CHARS: usize = 8;
const MAX_PASSPHRASE_BYTES: usize = 1024;
/// Longest secret: room for an entitlement token (`policy::entitlement::MAX_TOKEN_BYTES`).
const MAX_SECRET_BYTES: usize = 16 * 1024;
/// Keys shorter than this show no `last4`.
const LAST4_MIN_CHARS: usize = 16;
/// How long a `last_used`-only change may wait before it is written.
pub const LAST_USED_FLUSH: Duration = Duration::from_secs(30);

/// Whether a provider accepted a key the last time it was used or tested.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Never tested or used yet.
    Unknown,
    Valid,
    /// Rejected (401/403); the router skips it until it is tested valid or replaced.
    Invalid,
}

/// What apps may know about a key (never the key itself).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyMeta {
    pub id: String,
    pub provider: String,
    pub label: String,
    /// The key's last four characters, for keys of at least 16 characters.
    pub last4: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub last_used: Option<i64>,
    pub status: KeyStatus,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LockState {
    /// Passphrase mode before a passphrase was set; the first unlock sets it.
    Uninitialized,
    Locked,
    Unlocked,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LockReason {
    Manual,
    Idle,
}

impl LockReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LockReason::Manual => "manual",
            LockReason::Idle => "idle",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VaultStatus {
    pub mode: VaultMode,
    pub state: LockState,
    pub locked: bool,
    /// Number of keys (only known while unlocked).
    pub keys: Option<usize>,
    /// Idle auto-lock in seconds; 0 when it does not apply.
    pub auto_lock_secs: u64,
    /// Seconds until the idle auto-lock, while unlocked.
    pub lock_in_secs: Option<u64>,
    pub vault_file: String,
    pub identity_file: String,
}

/// Outcome of [`Vault::test`].
#[derive(Debug, Clone)]
pub struct TestResult {
    pub key: KeyMeta,
    pub checked: probe::Checked,
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}; the file was left untouched (restore it from a backup, or move it away to start with an empty vault)")]
    File {
        path: PathBuf,
        #[source]
        source: store::FileError,
    },
    #[error("{path} is not a usable age identity: {reason}")]
    BadIdentity { path: PathBuf, reason: String },
    #[error("{path} is readable by other users (mode {mode:04o}); run `chmod 600 {path}`")]
    IdentityTooOpen { path: PathBuf, mode: u32 },
    #[error("{vault} exists but {identity} does not, and the vault cannot be decrypted without it; restore identity.txt from your backup")]
    IdentityMissing { vault: PathBuf, identity: PathBuf },
    #[error("{path} is protected by a passphrase but vault.mode is \"identity\"; set vault.mode = \"passphrase\" in config.toml")]
    IdentityEncrypted { path: PathBuf },
    #[error("could not save {path}, so the change was not made: {source}")]
    Save {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not encrypt the vault: {0}")]
    Encrypt(String),
    #[error("the vault is locked; unlock it with `llm-sidecar vault unlock`")]
    Locked,
    #[error("the vault has no passphrase yet; set one with `llm-sidecar vault unlock`")]
    NotInitialized,
    #[error("wrong passphrase")]
    WrongPassphrase,
    #[error("the vault is protected by a passphrase: `passphrase` is required")]
    PassphraseRequired,
    #[error("vault.mode is \"identity\": unlocking takes no passphrase")]
    PassphraseUnused,
    #[error(
        "a new passphrase needs at least {MIN_PASSPHRASE_CHARS} characters (and at most {MAX_PASSPHRASE_BYTES} bytes)"
    )]
    WeakPassphrase,
    #[error("{0}")]
    InvalidInput(String),
    #[error("no key with id `{id}`")]
    KeyNotFound { id: String },
    #[error("this secret is already stored as key `{id}`")]
    DuplicateSecret { id: String },
    #[error(transparent)]
    Probe(#[from] probe::ProbeError),
    #[error("internal vault error: {0}")]
    Internal(String),
}

impl VaultError {
    fn file(path: &Path, source: store::FileError) -> Self {
        VaultError::File { path: path.to_path_buf(), source }
    }
}

/// The unlocked part: identity and entries. Dropping it zeroizes both.
struct Open {
    identity: x25519::Identity,
    entries: Vec<Entry>,
}

struct Inner {
    open: Option<Open>,
    /// Passphrase mode with no passphrase set yet.
    needs_passphrase: bool,
    last_activity: Instant,
    /// Set when memory holds changes not yet written (`last_used`, statuses from reports).
    dirty_since: Option<Instant>,
    /// The pending change should be written now (a status changed).
    flush_now: bool,
}

impl Inner {
    fn open_mut(&mut self) -> Result<&mut Open, VaultError> {
        match (&mut self.open, self.needs_passphrase) {
            (Some(open), _) => Ok(open),
            (None, true) => Err(VaultError::NotInitialized),
            (None, false) => Err(VaultError::Locked),
        }
    }
}

pub struct Vault {
    mode: VaultMode,
    auto_lock: Option<Duration>,
    scrypt_log_n: Option<u8>,
    vault_path: PathBuf,
    identity_path: PathBuf,
    events: Bus,
    inner: Mutex<Inner>,
    /// Wakes the maintenance task (auto-lock, deferred writes).
    wake: Arc<Notify>,
    /// True when a maintenance task runs (a Tokio runtime existed at open).
    maintained: bool,
    /// How long a `last_used`-only change may wait ([`LAST_USED_FLUSH`]; shorter in tests).
    flush_delay: Duration,
    /// One unlock at a time: bounds passphrase guessing to one scrypt at a time.
    unlock_gate: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("mode", &self.mode)
            .field("vault_path", &self.vault_path)
            .field("unlocked", &self.inner.try_lock().ok().map(|i| i.open.is_some()))
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens (or creates) the vault in `data_dir`. In identity mode the vault is decrypted now, so
    /// a damaged or foreign `vault.age` stops the daemon here; in passphrase mode only its header
    /// is checked until the unlock. Temp files left by a crashed write are removed.
    ///
    /// When called inside a Tokio runtime, spawns the task that auto-locks and writes deferred
    /// changes; it ends with `shutdown` (after a final write).
    pub fn open(
        config: &VaultConfig,
        data_dir: &Path,
        events: Bus,
        shutdown: CancellationToken,
    ) -> Result<Arc<Vault>, VaultError> {
        Self::open_with(config, data_dir, events, shutdown, LAST_USED_FLUSH)
    }

    fn open_with(
        config: &VaultConfig,
        data_dir: &Path,
        events: Bus,
        shutdown: CancellationToken,
        flush_delay: Duration,
    ) -> Result<Arc<Vault>, VaultError> {
        harden_process();
        let vault_path = data_dir.join(VAULT_FILE);
        let identity_path = data_dir.join(IDENTITY_FILE);
        for path in [&vault_path, &identity_path] {
            match atomic::remove_stale_temps(path) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(file = %path.display(), "removed {n} temp file(s) left by an interrupted write")
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), "cannot remove temp files of an interrupted write: {e}")
                }
            }
        }
        let runtime = tokio::runtime::Handle::try_current().ok();
        let vault = Arc::new(Vault {
            mode: config.mode,
            auto_lock: (config.mode == VaultMode::Passphrase && config.auto_lock_secs > 0)
                .then(|| Duration::from_secs(config.auto_lock_secs)),
            scrypt_log_n: config.scrypt_log_n,
            vault_path,
            identity_path,
            events,
            inner: Mutex::new(Inner {
                open: None,
                needs_passphrase: false,
                last_activity: Instant::now(),
                dirty_since: None,
                flush_now: false,
            }),
            wake: Arc::new(Notify::new()),
            maintained: runtime.is_some(),
            flush_delay,
            unlock_gate: tokio::sync::Mutex::new(()),
        });
        vault.load_at_start()?;
        if let Some(rt) = runtime {
            rt.spawn(maintain(Arc::downgrade(&vault), vault.wake.clone(), shutdown));
        }
        Ok(vault)
    }

    fn load_at_start(&self) -> Result<(), VaultError> {
        let vault_bytes = self.read_vault_file()?;
        let identity = identity::read(&self.identity_path)?;
        let mut inner = self.inner();
        match (self.mode, identity, &vault_bytes) {
            (_, IdentityFile::Missing, Some(_)) => {
                return Err(VaultError::IdentityMissing {
                    vault: self.vault_path.clone(),
                    identity: self.identity_path.clone(),
                })
            }
            (VaultMode::Identity, IdentityFile::Missing, None) => {
                let identity = x25519::Identity::generate();
                self.write(&self.identity_path, identity::plain_text(&identity).as_bytes())?;
                let open = Open { identity, entries: Vec::new() };
                self.save_open(&open)?;
                tracing::info!(
                    identity = %self.identity_path.display(),
                    "created a new vault identity; back up identity.txt together with vault.age"
                );
                inner.open = Some(open);
            }
            (VaultMode::Identity, IdentityFile::Encrypted(_), _) => {
                return Err(VaultError::IdentityEncrypted { path: self.identity_path.clone() })
            }
            (VaultMode::Identity, IdentityFile::Plain(identity), _) => {
                inner.open = Some(self.load_entries(identity, vault_bytes.as_ref().map(|b| b.as_slice()))?);
            }
            (VaultMode::Passphrase, IdentityFile::Missing, None) => inner.needs_passphrase = true,
            (VaultMode::Passphrase, IdentityFile::Plain(identity), _) => {
                if let Some(bytes) = &vault_bytes {
                    store::open(bytes, &identity).map_err(|e| VaultError::file(&self.vault_path, e))?;
                }
                tracing::warn!(
                    identity = %self.identity_path.display(),
                    "vault.mode is \"passphrase\" but identity.txt is not protected yet; the first `vault unlock` sets the passphrase and encrypts it"
                );
                inner.needs_passphrase = true;
            }
            (VaultMode::Passphrase, IdentityFile::Encrypted(_), _) => {
                if let Some(bytes) = &vault_bytes {
                    store::check_header(bytes).map_err(|e| VaultError::file(&self.vault_path, e))?;
                }
            }
        }
        tracing::info!(mode = self.mode.as_str(), locked = inner.open.is_none(), "vault ready");
        Ok(())
    }

    /// Decrypts `vault_bytes` with `identity`, or creates an empty vault file if there is none.
    fn load_entries(&self, identity: x25519::Identity, vault_bytes: Option<&[u8]>) -> Result<Open, VaultError> {
        match vault_bytes {
            Some(bytes) => {
                let entries = store::open(bytes, &identity).map_err(|e| VaultError::file(&self.vault_path, e))?;
                Ok(Open { identity, entries })
            }
            None => {
                let open = Open { identity, entries: Vec::new() };
                self.save_open(&open)?;
                Ok(open)
            }
        }
    }

    fn read_vault_file(&self) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, VaultError> {
        match std::fs::read(&self.vault_path) {
            Ok(b) => Ok(Some(zeroize::Zeroizing::new(b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(VaultError::Io { action: "read", path: self.vault_path.clone(), source }),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves data that is still consistent (every
        // mutation is a single assignment or rolled back), so poisoning is not fatal.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self, path: &Path, data: &[u8]) -> Result<(), VaultError> {
        atomic::write_atomic(path, data).map_err(|source| VaultError::Save { path: path.to_path_buf(), source })
    }

    fn save_open(&self, open: &Open) -> Result<(), VaultError> {
        let sealed = store::seal(&open.entries, &open.identity.to_public()).map_err(VaultError::Encrypt)?;
        self.write(&self.vault_path, &sealed)
    }

    /// Writes the unlocked entries and clears the pending-change marker.
    fn save(&self, inner: &mut Inner) -> Result<(), VaultError> {
        let open = inner.open_mut()?;
        self.save_open(open)?;
        inner.dirty_since = None;
        inner.flush_now = false;
        Ok(())
    }

    /// Writes pending `last_used`/status changes, if any, logging a failure.
    fn flush(&self) {
        let mut inner = self.inner();
        if inner.dirty_since.is_some() && inner.open.is_some() {
            if let Err(e) = self.save(&mut inner) {
                tracing::warn!("could not write key usage to the vault (will retry): {e}");
                inner.dirty_since = Some(Instant::now());
                inner.flush_now = false;
            }
        }
    }

    /// The vault's state; does not count as activity (never re-arms the auto-lock).
    pub fn status(&self) -> VaultStatus {
        let inner = self.inner();
        let state = match (&inner.open, inner.needs_passphrase) {
            (Some(_), _) => LockState::Unlocked,
            (None, true) => LockState::Uninitialized,
            (None, false) => LockState::Locked,
        };
        VaultStatus {
            mode: self.mode,
            state,
            locked: inner.open.is_none(),
            keys: inner.open.as_ref().map(|o| o.entries.len()),
            auto_lock_secs: self.auto_lock.map_or(0, |d| d.as_secs()),
            lock_in_secs: self
                .auto_lock
                .filter(|_| inner.open.is_some())
                .map(|d| d.saturating_sub(inner.last_activity.elapsed()).as_secs()),
            vault_file: self.vault_path.to_string_lossy().into_owned(),
            identity_file: self.identity_path.to_string_lossy().into_owned(),
        }
    }

    /// Unlocks the vault. Passphrase mode: `passphrase` is required; before a passphrase was set,
    /// this one becomes it (identity.txt is created, or an existing plain one encrypted). Identity
    /// mode: takes no passphrase and reloads the vault after a manual lock. A no-op when unlocked.
    pub async fn unlock(self: &Arc<Self>, passphrase: Option<SecretString>) -> Result<VaultStatus, VaultError> {
        let _one_at_a_time = self.unlock_gate.lock().await;
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.unlock_blocking(passphrase))
            .await
            .map_err(|e| VaultError::Internal(format!("unlock task failed: {e}")))?
    }

    fn unlock_blocking(&self, passphrase: Option<SecretString>) -> Result<VaultStatus, VaultError> {
        let passphrase = match (self.mode, passphrase) {
            (VaultMode::Identity, Some(_)) => return Err(VaultError::PassphraseUnused),
            (VaultMode::Passphrase, None) => return Err(VaultError::PassphraseRequired),
            (_, p) => p,
        };
        let needs_passphrase = {
            let inner = self.inner();
            if inner.open.is_some() {
                drop(inner);
                return Ok(self.status());
            }
            inner.needs_passphrase
        };
        let identity = match passphrase {
            None => match identity::read(&self.identity_path)? {
                IdentityFile::Plain(id) => id,
                IdentityFile::Encrypted(_) => {
                    return Err(VaultError::IdentityEncrypted { path: self.identity_path.clone() })
                }
                IdentityFile::Missing => return Err(self.identity_vanished()),
            },
            Some(pass) if needs_passphrase => self.set_passphrase(&pass)?,
            Some(pass) => match identity::read(&self.identity_path)? {
                IdentityFile::Encrypted(bytes) => identity::decrypt(&self.identity_path, &bytes, &pass)?,
                IdentityFile::Plain(_) => {
                    return Err(VaultError::BadIdentity {
                        path: self.identity_path.clone(),
                        reason: "it was replaced by an unprotected identity while the daemon ran; restart the daemon"
                            .into(),
                    })
                }
                IdentityFile::Missing => return Err(self.identity_vanished()),
            },
        };
        let vault_bytes = self.read_vault_file()?;
        let open = self.load_entries(identity, vault_bytes.as_ref().map(|b| b.as_slice()))?;
        {
            let mut inner = self.inner();
            inner.open = Some(open);
            inner.needs_passphrase = false;
            inner.last_activity = Instant::now();
        }
        self.wake.notify_one();
        self.events.emit(EventKind::VaultUnlocked, &NoFields {});
        tracing::info!("vault unlocked");
        Ok(self.status())
    }

    fn identity_vanished(&self) -> VaultError {
        VaultError::BadIdentity { path: self.identity_path.clone(), reason: "the file disappeared".into() }
    }

    /// Passphrase mode, first unlock: protects the existing plain identity (or a new one) with
    /// `pass` and returns it.
    fn set_passphrase(&self, pass: &SecretString) -> Result<x25519::Identity, VaultError> {
        let chars = pass.expose_secret().chars().count();
        if chars < MIN_PASSPHRASE_CHARS || pass.expose_secret().len() > MAX_PASSPHRASE_BYTES {
            return Err(VaultError::WeakPassphrase);
        }
        let (identity, migrated) = match identity::read(&self.identity_path)? {
            IdentityFile::Missing => (x25519::Identity::generate(), false),
            IdentityFile::Plain(id) => (id, true),
            IdentityFile::Encrypted(bytes) => return identity::decrypt(&self.identity_path, &bytes, pass),
        };
        let protected = identity::encrypt(&identity, pass, self.scrypt_log_n)?;
        self.write(&self.identity_path, &protected)?;
        if migrated {
            tracing::info!(identity = %self.identity_path.display(), "identity.txt is now protected by the passphrase");
        } else {
            tracing::info!(identity = %self.identity_path.display(), "created a passphrase-protected vault identity");
        }
        Ok(identity)
    }

    /// Locks the vault: writes pending changes and drops every key from memory.
    pub fn lock(&self, reason: LockReason) -> VaultStatus {
        let was_open = {
            let mut inner = self.inner();
            if inner.open.is_some() && inner.dirty_since.is_some() {
                if let Err(e) = self.save(&mut inner) {
                    tracing::warn!("could not write key usage before locking; it is lost: {e}");
                }
            }
            inner.dirty_since = None;
            inner.open.take().is_some()
        };
        if was_open {
            #[derive(Serialize)]
            struct Locked {
                reason: LockReason,
            }
            self.events.emit(EventKind::VaultLocked, &Locked { reason });
            tracing::info!(reason = reason.as_str(), "vault locked");
        }
        self.status()
    }

    /// Stores a key. A key with the same provider and label is replaced (same id and position,
    /// status reset); otherwise it is added after the provider's other keys. Returns its metadata
    /// and whether it replaced one.
    pub fn set(
        &self,
        provider: &str,
        label: Option<&str>,
        secret: SecretString,
    ) -> Result<(KeyMeta, bool), VaultError> {
        check_provider(provider)?;
        let label = label.unwrap_or(DEFAULT_LABEL);
        check_label(label)?;
        check_secret(&secret)?;
        let mut inner = self.inner();
        inner.last_activity = Instant::now();
        let open = inner.open_mut()?;
        let same = |e: &Entry| e.meta.provider == provider && e.meta.label == label;
        if let Some(dup) = open.entries.iter().find(|e| !same(e) && e.secret.expose_secret() == secret.expose_secret())
        {
            return Err(VaultError::DuplicateSecret { id: dup.meta.id.clone() });
        }
        let position = open.entries.iter().position(same);
        let meta = KeyMeta {
            id: position.map_or_else(new_id, |i| open.entries[i].meta.id.clone()),
            provider: provider.to_string(),
            label: label.to_string(),
            last4: last4(&secret),
            created_at: now_ms(),
            last_used: None,
            status: KeyStatus::Unknown,
        };
        let entry = Entry { meta: meta.clone(), secret };
        let undo = match position {
            Some(i) => Undo::Restore(i, std::mem::replace(&mut open.entries[i], entry)),
            None => {
                open.entries.push(entry);
                Undo::Pop
            }
        };
        if let Err(e) = self.save(&mut inner) {
            if let Ok(open) = inner.open_mut() {
                match undo {
                    Undo::Restore(i, old) => open.entries[i] = old,
                    Undo::Pop => {
                        open.entries.pop();
                    }
                }
            }
            return Err(e);
        }
        tracing::info!(key = %meta.id, provider = %meta.provider, replaced = position.is_some(), "key stored");
        Ok((meta, position.is_some()))
    }

    /// Metadata of every key (of one provider, if given), in the order the router tries them.
    pub fn list(&self, provider: Option<&str>) -> Result<Vec<KeyMeta>, VaultError> {
        let mut inner = self.inner();
        inner.last_activity = Instant::now();
        let open = inner.open_mut()?;
        Ok(open
            .entries
            .iter()
            .filter(|e| provider.is_none_or(|p| e.meta.provider == p))
            .map(|e| e.meta.clone())
            .collect())
    }

    /// Removes a key and returns its metadata.
    pub fn remove(&self, id: &str) -> Result<KeyMeta, VaultError> {
        let mut inner = self.inner();
        inner.last_activity = Instant::now();
        let open = inner.open_mut()?;
        let i = open
            .entries
            .iter()
            .position(|e| e.meta.id == id)
            .ok_or_else(|| VaultError::KeyNotFound { id: id.to_string() })?;
        let entry = open.entries.remove(i);
        if let Err(e) = self.save(&mut inner) {
            if let Ok(open) = inner.open_mut() {
                open.entries.insert(i, entry);
            }
            return Err(e);
        }
        tracing::info!(key = %entry.meta.id, provider = %entry.meta.provider, "key removed");
        Ok(entry.meta.clone())
    }

    /// Checks key `id` with its provider (see [`probe`]: `overrides` is `vault.probe_base_urls`,
    /// `specs` the providers the daemon runs) and stores the verdict.
    pub async fn test(
        self: &Arc<Self>,
        id: &str,
        overrides: &BTreeMap<String, String>,
        specs: &BTreeMap<String, crate::providers::ProviderSpec>,
    ) -> Result<TestResult, VaultError> {
        let (provider, secret) = {
            let mut inner = self.inner();
            inner.last_activity = Instant::now();
            let open = inner.open_mut()?;
            let entry = open
                .entries
                .iter()
                .find(|e| e.meta.id == id)
                .ok_or_else(|| VaultError::KeyNotFound { id: id.to_string() })?;
            (entry.meta.provider.clone(), SecretString::from(entry.secret.expose_secret()))
        };
        let checked = probe::check(&provider, &secret, overrides, specs).await?;
        drop(secret);
        let me = self.clone();
        let id = id.to_string();
        let status = if checked.valid { KeyStatus::Valid } else { KeyStatus::Invalid };
        let key = tokio::task::spawn_blocking(move || me.record_status(&id, status, "test"))
            .await
            .map_err(|e| VaultError::Internal(format!("test task failed: {e}")))??;
        tracing::info!(key = %key.id, provider = %key.provider, status = ?key.status, "key tested");
        Ok(TestResult { key, checked })
    }

    /// Sets a key's status, writes it now, and emits `key.invalid` when it becomes invalid.
    fn record_status(&self, id: &str, status: KeyStatus, source: &'static str) -> Result<KeyMeta, VaultError> {
        let mut inner = self.inner();
        let open = inner.open_mut()?;
        let entry = open
            .entries
            .iter_mut()
            .find(|e| e.meta.id == id)
            .ok_or_else(|| VaultError::KeyNotFound { id: id.to_string() })?;
        let changed = entry.meta.status != status;
        entry.meta.status = status;
        let meta = entry.meta.clone();
        if changed {
            self.save(&mut inner)?;
            drop(inner);
            if status == KeyStatus::Invalid {
                self.emit_invalid(&meta, source);
            }
        }
        Ok(meta)
    }

    fn emit_invalid(&self, meta: &KeyMeta, source: &'static str) {
        #[derive(Serialize)]
        struct Invalid<'a> {
            id: &'a str,
            provider: &'a str,
            label: &'a str,
            /// `test` (keys.test) or `call` (a provider rejected it during a call).
            source: &'static str,
        }
        tracing::warn!(key = %meta.id, provider = %meta.provider, "the provider rejected a key");
        self.events.emit(
            EventKind::KeyInvalid,
            &Invalid { id: &meta.id, provider: &meta.provider, label: &meta.label, source },
        );
    }

    /// When the maintenance task should next run [`Vault::tick`].
    fn next_due(&self) -> Option<Instant> {
        let inner = self.inner();
        let lock_at = self.auto_lock.filter(|_| inner.open.is_some()).map(|d| inner.last_activity + d);
        let flush_at = inner.dirty_since.map(|t| if inner.flush_now { Instant::now() } else { t + self.flush_delay });
        match (lock_at, flush_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Auto-locks an idle vault and writes changes that are due.
    fn tick(&self) {
        let now = Instant::now();
        let (idle, flush_due) = {
            let inner = self.inner();
            let idle = self.auto_lock.is_some_and(|d| inner.open.is_some() && now >= inner.last_activity + d);
            let flush_due = inner.dirty_since.is_some_and(|t| inner.flush_now || now >= t + self.flush_delay);
            (idle, flush_due)
        };
        if idle {
            self.lock(LockReason::Idle);
        } else if flush_due {
            self.flush();
        }
    }
}

enum Undo {
    Restore(usize, Entry),
    Pop,
}

#[derive(Serialize)]
struct NoFields {}

impl KeyStore for Vault {
    fn keys_for(&self, provider: &str) -> Result<Vec<ResolvedKey>, KeyError> {
        self.resolve(provider, true)
    }

    fn keys_for_background(&self, provider: &str) -> Result<Vec<ResolvedKey>, KeyError> {
        self.resolve(provider, false)
    }

    fn report(&self, id: &str, outcome: KeyOutcome) {
        let status = match outcome {
            KeyOutcome::Ok => KeyStatus::Valid,
            KeyOutcome::Invalid => KeyStatus::Invalid,
        };
        let mut inner = self.inner();
        let Some(entry) = inner.open.as_mut().and_then(|o| o.entries.iter_mut().find(|e| e.meta.id == id)) else {
            return;
        };
        let changed = entry.meta.status != status;
        entry.meta.status = status;
        entry.meta.last_used = Some(now_ms());
        let meta = entry.meta.clone();
        let newly_dirty = inner.dirty_since.is_none();
        inner.dirty_since.get_or_insert_with(Instant::now);
        inner.flush_now |= changed;
        drop(inner);
        if changed && status == KeyStatus::Invalid {
            self.emit_invalid(&meta, "call");
        }
        if self.maintained {
            // The maintenance task may be sleeping with no deadline: give it one.
            if changed || newly_dirty {
                self.wake.notify_one();
            }
        } else if changed {
            self.flush();
        }
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Runs [`Vault::tick`] when due: on the auto-lock deadline, when a deferred write is due, or
/// when woken. Writes pending changes and ends on shutdown or when the vault is dropped.
async fn maintain(vault: Weak<Vault>, wake: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let due = match vault.upgrade() {
            Some(v) => v.next_due(),
            None => return,
        };
        let sleep = async {
            match due {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => {
                if let Some(v) = vault.upgrade() {
                    let _ = tokio::task::spawn_blocking(move || v.flush()).await;
                }
                return;
            }
            _ = sleep => {}
            _ = &mut notified => {}
        }
        let Some(v) = vault.upgrade() else { return };
        let _ = tokio::task::spawn_blocking(move || v.tick()).await;
    }
}

/// Keeps plaintext keys out of core dumps and away from same-user debuggers (Linux).
fn harden_process() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{set_dumpable_behavior, setrlimit, DumpableBehavior, Resource, Rlimit};
        if let Err(e) = set_dumpable_behavior(DumpableBehavior::NotDumpable) {
            tracing::warn!("cannot make the process undumpable: {e}");
        }
        if let Err(e) = setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) }) {
            tracing::warn!("cannot disable core dumps: {e}");
        }
    }
}

fn check_provider(provider: &str) -> Result<(), VaultError> {
    let ok = (1..=64).contains(&provider.len())
        && provider.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && provider.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(VaultError::InvalidInput(
            "`provider` must be 1-64 characters of a-z, 0-9, `.`, `_`, `-` (e.g. `openai`)".into(),
        ))
    }
}

fn check_label(label: &str) -> Result<(), VaultError> {
    let ok = (1..=64).contains(&label.chars().count()) && label.trim() == label && !label.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(VaultError::InvalidInput(
            "`label` must be 1-64 printable characters without leading or trailing spaces".into(),
        ))
    }
}

/// Never echoes the secret: messages only say what is wrong with it.
fn check_secret(secret: &SecretString) -> Result<(), VaultError> {
    let s = secret.expose_secret();
    if s.is_empty() {
        return Err(VaultError::InvalidInput("`secret` is empty".into()));
    }
    if s.len() > MAX_SECRET_BYTES {
        return Err(VaultError::InvalidInput(format!("`secret` is longer than {MAX_SECRET_BYTES} bytes")));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(VaultError::InvalidInput(
            "`secret` may only contain printable ASCII without spaces or line breaks".into(),
        ));
    }
    Ok(())
}

/// Last four characters of a key of at least [`LAST4_MIN_CHARS`] characters.
pub(crate) fn last4(secret: &SecretString) -> Option<String> {
    let s = secret.expose_secret();
    let n = s.chars().count();
    (n >= LAST4_MIN_CHARS).then(|| s.chars().skip(n - 4).collect())
}

fn new_id() -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("key_{}", &hex[..12])
}

#[cfg(test)]
mod tests;

impl Vault {
    /// A provider's usable keys; `user_activity` re-arms the idle auto-lock timer.
    fn resolve(&self, provider: &str, user_activity: bool) -> Result<Vec<ResolvedKey>, KeyError> {
        let mut inner = self.inner();
        let open = inner.open.as_ref().ok_or(KeyError::Locked)?;
        let keys = open
            .entries
            .iter()
            .filter(|e| e.meta.provider == provider && e.meta.status != KeyStatus::Invalid)
            .map(|e| ResolvedKey {
                id: e.meta.id.clone(),
                source: KeySource::Byok,
                secret: SecretString::from(e.secret.expose_secret()),
            })
            .collect();
        if user_activity {
            inner.last_activity = Instant::now();
        }
        Ok(keys)
    }
}
