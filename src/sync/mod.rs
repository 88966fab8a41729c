//! Usage sync: a background worker that drains the ledger's outbox to the usage backend as
//! CloudEvents batches (design §7).
//!
//! Invariants:
//! - an outbox entry is removed only after the backend answered 2xx for a batch holding it, so
//!   every record is delivered at least once; event ids are record ids and every batch carries an
//!   `Idempotency-Key`, so an idempotent backend counts each record exactly once;
//! - a retried batch is byte-for-byte the same request with the same `Idempotency-Key`;
//! - 408/429/5xx/network errors retry with full-jitter exponential backoff, honouring
//!   `Retry-After`; 401/403 pause sync (event `sync.paused`) until the token changes
//!   (`sync.resumed`); 404/405/410 and redirects pause it as misconfigured; any other 4xx
//!   splits the batch until the records refused alone are found, which go to the dead letters;
//! - a batch is persisted before its first send, so a re-send after a crash is the same bytes
//!   under the same `Idempotency-Key` (see `worker`);
//! - every event's `subject` is the customer: the entitlement's `sub` when logged in, else
//!   `[sync] subject`, else the OS user ([`subject`]);
//! - sync is off when `[sync] url` is not set; tokens never appear in logs, errors or status.

pub mod backoff;
pub mod cloudevents;
pub mod credentials;
mod worker;

pub use credentials::{EnvToken, FileToken, KeyStoreToken, NoToken, SyncCredentials, VAULT_TOKEN_PROVIDERS};
pub use worker::SyncWorker;

use crate::events::Bus;
use crate::ledger::Ledger;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// `[sync]` in config.toml.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// Backend endpoint (`POST`); sync is off when unset.
    pub url: Option<String>,
    /// Environment variable holding the bearer token.
    pub token_env: Option<String>,
    /// File holding the bearer token (re-read before every request).
    pub token_file: Option<PathBuf>,
    /// Seconds between periodic flushes.
    pub interval_secs: u64,
    /// Flush as soon as this many records wait.
    pub flush_threshold: u64,
    /// Events per request (at most 500).
    pub batch_max_events: usize,
    /// Bytes per request body (at most 1 MiB).
    pub batch_max_bytes: usize,
    /// Seconds before a request is abandoned (and retried).
    pub timeout_secs: u64,
    /// First retry waits up to this long; each further retry doubles it (full jitter).
    pub backoff_initial_ms: u64,
    /// Longest wait between retries.
    pub backoff_max_ms: u64,
    /// On graceful shutdown, keep draining the outbox for at most this many seconds.
    pub shutdown_drain_secs: u64,
    /// The CloudEvents `subject` (the customer) when not logged in; default: the OS user.
    pub subject: Option<String>,
    /// Records older than this many days are not sent (dead letter `too_old`).
    pub max_event_age_days: u32,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            url: None,
            token_env: None,
            token_file: None,
            interval_secs: 300,
            flush_threshold: 500,
            batch_max_events: cloudevents::MAX_EVENTS,
            batch_max_bytes: cloudevents::MAX_BYTES,
            timeout_secs: 30,
            backoff_initial_ms: 1000,
            backoff_max_ms: 300_000,
            shutdown_drain_secs: 5,
            subject: None,
            max_event_age_days: 30,
        }
    }
}

impl SyncConfig {
    /// Checks values; on error returns the dotted key and what is wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(url) = &self.url {
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => return Err(("sync.url", "must be an http:// or https:// URL".into())),
            }
        }
        if self.token_env.is_some() && self.token_file.is_some() {
            return Err(("sync.token_env", "set either token_env or token_file, not both".into()));
        }
        if !(1..=cloudevents::MAX_EVENTS).contains(&self.batch_max_events) {
            return Err(("sync.batch_max_events", format!("must be 1-{}", cloudevents::MAX_EVENTS)));
        }
        if !(1024..=cloudevents::MAX_BYTES).contains(&self.batch_max_bytes) {
            return Err(("sync.batch_max_bytes", format!("must be 1024-{}", cloudevents::MAX_BYTES)));
        }
        if self.interval_secs == 0 || self.interval_secs > 86_400 {
            return Err(("sync.interval_secs", "must be 1-86400".into()));
        }
        if self.flush_threshold == 0 {
            return Err(("sync.flush_threshold", "must be at least 1".into()));
        }
        if self.timeout_secs == 0 || self.timeout_secs > 600 {
            return Err(("sync.timeout_secs", "must be 1-600".into()));
        }
        if self.backoff_initial_ms == 0 || self.backoff_initial_ms > self.backoff_max_ms {
            return Err(("sync.backoff_initial_ms", "must be at least 1 and at most backoff_max_ms".into()));
        }
        if self.backoff_max_ms > 3_600_000 {
            return Err(("sync.backoff_max_ms", "must be at most 3600000 (one hour)".into()));
        }
        if self.shutdown_drain_secs > 300 {
            return Err(("sync.shutdown_drain_secs", "must be at most 300".into()));
        }
        if let Some(s) = &self.subject {
            if !valid_subject(s) {
                return Err(("sync.subject", "must be 1-256 printable characters".into()));
            }
        }
        if !(1..=3650).contains(&self.max_event_age_days) {
            return Err(("sync.max_event_age_days", "must be 1-3650".into()));
        }
        Ok(())
    }

    /// The token source this config names.
    pub fn credentials(&self) -> Arc<dyn SyncCredentials> {
        match (&self.token_env, &self.token_file) {
            (Some(var), _) => Arc::new(EnvToken(var.clone())),
            (None, Some(path)) => Arc::new(FileToken(path.clone())),
            (None, None) => Arc::new(NoToken),
        }
    }
}

/// The entitlement's `sub` when logged in (asked before each batch).
pub type EntitledSubject = Arc<dyn Fn() -> Option<String> + Send + Sync>;
/// The subject of the next batch, fully resolved.
pub(crate) type SubjectFn = Arc<dyn Fn() -> String + Send + Sync>;

fn valid_subject(s: &str) -> bool {
    (1..=256).contains(&s.chars().count()) && !s.chars().any(char::is_control)
}

/// The CloudEvents `subject` (the customer to bill): `entitled` (the entitlement's `sub`), else
/// `configured` (`[sync] subject`), else the OS user (`$USER`, `$LOGNAME`, the name of our uid
/// in `/etc/passwd`, else `uid-<uid>`).
pub fn subject(entitled: Option<String>, configured: Option<&str>) -> String {
    entitled.filter(|s| valid_subject(s)).or_else(|| configured.map(str::to_string)).unwrap_or_else(os_user)
}

fn os_user() -> String {
    let uid = rustix::process::getuid().as_raw();
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| valid_subject(s)))
        .or_else(|| {
            let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
            passwd.lines().find_map(|line| {
                let mut f = line.split(':');
                let (name, _, id) = (f.next()?, f.next()?, f.next()?);
                (id.parse::<u32>().ok() == Some(uid) && valid_subject(name)).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| format!("uid-{uid}"))
}

/// Why `sync.now` could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    #[error("sync is off: set `url` in the [sync] section of config.toml")]
    Disabled,
    #[error("the sync worker is not running")]
    NotRunning,
}

/// What the worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Disabled,
    #[default]
    Idle,
    Sending,
    /// Waiting for `next_attempt_at_ms` after a failure.
    Retrying,
    /// The backend refused the token (401/403); waiting for new credentials.
    Paused,
    /// The backend answered 404/405/410 or a redirect: `[sync] url` is wrong. Nothing is
    /// dead-lettered; `sync.now` tries again.
    Misconfigured,
}

/// The last failure.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LastError {
    pub at_ms: i64,
    /// HTTP status, if the backend answered.
    pub status: Option<u16>,
    pub message: String,
}

/// Everything `sync.status` reports.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SyncStatus {
    pub enabled: bool,
    pub state: Phase,
    /// The backend URL without credentials or query.
    pub endpoint: Option<String>,
    pub source: String,
    /// The `subject` the next batch carries (the customer).
    pub subject: String,
    pub pending: u64,
    pub oldest_pending_age_ms: Option<u64>,
    pub dead_letters: u64,
    pub last_attempt_at_ms: Option<i64>,
    pub last_success_at_ms: Option<i64>,
    pub last_error: Option<LastError>,
    pub next_attempt_at_ms: Option<i64>,
    /// Consecutive failed attempts (0 after a success).
    pub failures: u32,
    /// Records delivered since the daemon started.
    pub sent_total: u64,
    pub batches_total: u64,
}

/// What one `sync.now` achieved.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NowReport {
    pub state: Phase,
    /// Records the backend accepted during this run.
    pub sent: u64,
    /// Records moved to the dead letters during this run.
    pub dead_lettered: u64,
    /// Dead letters moved back to the outbox before the run (`retry_dead_letters`).
    pub requeued: u64,
    /// Records still waiting afterwards.
    pub pending: u64,
    pub error: Option<LastError>,
}

/// Worker state shared with the handle (for `sync.status`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress {
    pub phase: Phase,
    pub last_attempt_at_ms: Option<i64>,
    pub last_success_at_ms: Option<i64>,
    pub last_error: Option<LastError>,
    pub next_attempt_at_ms: Option<i64>,
    pub failures: u32,
    pub sent_total: u64,
    pub batches_total: u64,
}

#[derive(Debug)]
pub(crate) enum Command {
    Now { retry_dead_letters: bool, reply: oneshot::Sender<NowReport> },
    CredentialsChanged,
}

struct Shared {
    enabled: bool,
    endpoint: Option<String>,
    source: String,
    subject: SubjectFn,
    ledger: Arc<Ledger>,
    progress: Arc<Mutex<Progress>>,
    commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("enabled", &self.enabled)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// The daemon's handle on the sync worker.
#[derive(Debug, Clone)]
pub struct SyncHandle(Arc<Shared>);

/// Creates the worker (not yet running) and its handle.
pub fn new(
    config: &SyncConfig,
    ledger: Arc<Ledger>,
    events: Bus,
    credentials: Arc<dyn SyncCredentials>,
    entitled: EntitledSubject,
) -> (SyncHandle, SyncWorker) {
    let (tx, rx) = mpsc::channel(64);
    let endpoint = config.url.as_deref().and_then(redacted_endpoint);
    let source = cloudevents::source(ledger.device_id());
    let progress = Arc::new(Mutex::new(Progress {
        phase: if config.url.is_some() { Phase::Idle } else { Phase::Disabled },
        ..Progress::default()
    }));
    let configured = config.subject.clone();
    let subject: SubjectFn = Arc::new(move || self::subject(entitled(), configured.as_deref()));
    let shared = Shared {
        enabled: config.url.is_some(),
        endpoint,
        source: source.clone(),
        subject: subject.clone(),
        ledger: ledger.clone(),
        progress: progress.clone(),
        commands: tx,
    };
    let worker = SyncWorker::new(worker::Parts {
        cfg: config.clone(),
        ledger,
        events,
        credentials,
        progress,
        commands: rx,
        source,
        subject,
    });
    (SyncHandle(Arc::new(shared)), worker)
}

impl SyncHandle {
    /// Drains the outbox now (ignoring any backoff wait or pause) and reports the outcome.
    pub async fn now(&self, retry_dead_letters: bool) -> Result<NowReport, SyncError> {
        if !self.0.enabled {
            return Err(SyncError::Disabled);
        }
        let (tx, rx) = oneshot::channel();
        self.0
            .commands
            .send(Command::Now { retry_dead_letters, reply: tx })
            .await
            .map_err(|_| SyncError::NotRunning)?;
        rx.await.map_err(|_| SyncError::NotRunning)
    }

    /// Tells a paused worker to try again with the (new) credentials. For the vault and
    /// `account.login`/`account.refresh`.
    pub fn credentials_changed(&self) {
        let _ = self.0.commands.try_send(Command::CredentialsChanged);
    }

    pub fn status(&self) -> SyncStatus {
        let p = self.0.progress.lock().map(|p| p.clone()).unwrap_or_default();
        let counts = self.0.ledger.counts();
        let oldest = if counts.outbox > 0 { self.0.ledger.oldest_pending().ok().flatten() } else { None };
        let now = crate::clock::now_ms();
        SyncStatus {
            enabled: self.0.enabled,
            state: p.phase,
            endpoint: self.0.endpoint.clone(),
            source: self.0.source.clone(),
            subject: (self.0.subject)(),
            pending: counts.outbox,
            oldest_pending_age_ms: oldest.map(|r| u64::try_from(now - r.ts).unwrap_or(0)),
            dead_letters: counts.dead,
            last_attempt_at_ms: p.last_attempt_at_ms,
            last_success_at_ms: p.last_success_at_ms,
            last_error: p.last_error,
            next_attempt_at_ms: p.next_attempt_at_ms,
            failures: p.failures,
            sent_total: p.sent_total,
            batches_total: p.batches_total,
        }
    }
}

/// `scheme://host[:port]/path` of a URL, without user info or query (which may hold secrets).
fn redacted_endpoint(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    let host = u.host_str()?;
    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
    Some(format!("{}://{host}{port}{}", u.scheme(), u.path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_hides_credentials_and_query() {
        assert_eq!(
            redacted_endpoint("https://user:pw@api.example.com:8443/v1/events?api_key=x").as_deref(),
            Some("https://api.example.com:8443/v1/events")
        );
    }

    #[test]
    fn config_validation_names_the_key() {
        assert!(SyncConfig::default().validate().is_ok());
        let bad = SyncConfig { url: Some("ftp://x".into()), ..SyncConfig::default() };
        assert_eq!(bad.validate().map_err(|e| e.0), Err("sync.url"));
        let bad = SyncConfig { batch_max_events: 501, ..SyncConfig::default() };
        assert_eq!(bad.validate().map_err(|e| e.0), Err("sync.batch_max_events"));
        let bad = SyncConfig { backoff_initial_ms: 10_000, backoff_max_ms: 1000, ..SyncConfig::default() };
        assert_eq!(bad.validate().map_err(|e| e.0), Err("sync.backoff_initial_ms"));
        let bad = SyncConfig { subject: Some(String::new()), ..SyncConfig::default() };
        assert_eq!(bad.validate().map_err(|e| e.0), Err("sync.subject"));
        let bad = SyncConfig { max_event_age_days: 0, ..SyncConfig::default() };
        assert_eq!(bad.validate().map_err(|e| e.0), Err("sync.max_event_age_days"));
    }

    #[test]
    fn subject_is_the_entitlement_then_the_config_then_the_os_user() {
        assert_eq!(subject(Some("cus_1".into()), Some("team-a")), "cus_1");
        assert_eq!(subject(None, Some("team-a")), "team-a");
        let os = subject(None, None);
        assert!(!os.is_empty() && os != "local", "{os}");
    }
}
