//! The daemon's shared state, handed to every API handler.
//!
//! Holds the resolved paths, live counters, and the domain services: key vault, events, router,
//! prices, ledger, policy and sync. [`State::open`] opens every service; a failure there stops
//! the daemon at start with a clear error. The data directory is locked for the daemon's
//! lifetime (`<data_dir>/daemon.lock`, holding the pid and socket), so a second daemon on
//! another socket but the same data is refused with a message naming both.
//!
//! Config reload ([`State::reload`], from `SIGHUP` or `daemon.reload`): the file is read and
//! checked in full first; only a valid file replaces anything. Routes, providers, router
//! settings, prices and the policy's rules are swapped as whole values; a running call holds the
//! snapshot it started with and finishes on it. Settings fixed at start (socket, data dir,
//! connection limits, log, vault mode, sync) are named in the reply when they changed.

use crate::config::{Config, ConfigError};
use crate::events::Bus;
use crate::keystore::KeyStore;
use crate::ledger::{Ledger, LedgerError};
use crate::pricing::PriceTable;
use crate::router::Router;
use crate::sync::{SyncHandle, SyncWorker};
use crate::vault::{Vault, VaultError};
use arc_swap::ArcSwap;
use serde::Serialize;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// Name of the data directory's lock file.
pub const DATA_DIR_LOCK: &str = "daemon.lock";

/// Settings read once at start; a reload reports them when they changed.
pub const NOT_RELOADABLE: &[&str] = &[
    "daemon.socket",
    "daemon.data_dir",
    "daemon.max_connections",
    "daemon.max_inflight_per_connection",
    "daemon.shutdown_grace_secs",
    "daemon.frame_timeout_secs",
    "daemon.max_connections_per_process",
    "log",
    "vault.mode",
    "vault.auto_lock_secs",
    "vault.scrypt_log_n",
    "sync",
];

/// Resolved locations of everything the daemon reads or writes.
#[derive(Debug, Clone)]
pub struct Paths {
    pub config_file: PathBuf,
    /// Whether the config file was named explicitly (then a missing file is an error).
    pub config_explicit: bool,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
}

/// Why the daemon's services could not be opened, or a config could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "data directory {path} is in use by another llm-sidecar daemon ({holder}); stop it first, or give this one another data directory (`serve --data-dir DIR`)"
    )]
    DataDirInUse { path: PathBuf, holder: String },
    #[error("cannot open the key vault")]
    Vault(#[source] VaultError),
    #[error("providers and routes: {0}")]
    Router(#[from] crate::router::RouterError),
    #[error("pricing: {0}")]
    Pricing(#[from] crate::pricing::PricingError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("invalid value for `{0}`: {1}")]
    Policy(String, String),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// What a successful reload changed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Reloaded {
    /// Sections that changed and apply to new calls now.
    pub applied: Vec<&'static str>,
    /// Sections that changed but only take effect after a restart.
    pub restart_required: Vec<&'static str>,
    /// What a reload never changes (see [`NOT_RELOADABLE`]).
    pub not_reloadable: &'static [&'static str],
}

/// The services built from the reloadable part of a config.
struct Built {
    router: Router,
    prices: PriceTable,
    rules: crate::policy::Rules,
}

impl Built {
    fn new(config: &Config, config_file: &Path) -> Result<Built, StateError> {
        let router = Router::new(&config.providers, &config.routes, &config.router)?;
        let config_dir = config_file.parent().map(Path::to_path_buf).unwrap_or_default();
        let prices = PriceTable::load(&config.pricing, &config_dir)?;
        let verifier = crate::policy::Verifier::from_config(&config.account, &config_dir)
            .map_err(|(k, m)| StateError::Policy(k, m))?;
        let rules = crate::policy::Rules {
            settings: config.policy.clone(),
            tiers: config.tiers.clone(),
            account: config.account.clone(),
            verifier,
            apps: config.apps.clone(),
            credits: config.credits.clone(),
        };
        Ok(Built { router, prices, rules })
    }
}

#[derive(Debug)]
pub struct State {
    config: ArcSwap<Config>,
    pub paths: Paths,
    pub started: Instant,
    pub started_at: SystemTime,
    connections: AtomicUsize,
    /// Cancelled when the daemon begins a graceful shutdown.
    pub shutdown: CancellationToken,
    pub events: Bus,
    pub keys: Arc<dyn KeyStore>,
    /// The key vault itself (the `keys.*`/`vault.*` methods); `keys` is the same object.
    pub vault: Arc<Vault>,
    /// Providers, routes and the pooled HTTP client (replaced by a reload).
    router: ArcSwap<Router>,
    prices: ArcSwap<PriceTable>,
    /// The usage ledger (`data_dir/ledger`).
    pub ledger: Arc<Ledger>,
    /// The usage sync worker's handle (status, `sync.now`).
    pub sync: SyncHandle,
    /// Tiers, quotas, rate limits and the entitlement.
    pub policy: Arc<crate::policy::Policy>,
    background: std::sync::Mutex<Background>,
    /// One reload at a time.
    reloading: std::sync::Mutex<()>,
    /// Tasks of the HTTP face (connections and their calls): the daemon waits for them, within
    /// its grace period, before the final ledger flush.
    pub front_doors: tokio_util::task::TaskTracker,
    /// Where the HTTP face listens, once it does.
    pub http_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// Held for the daemon's lifetime: the data directory's lock.
    _data_lock: File,
}

/// Background tasks: created by [`State::open`], run by [`State::start_background`], stopped
/// (with the bounded sync drain) by [`State::stop_background`].
#[derive(Debug, Default)]
enum Background {
    Ready(Box<SyncWorker>),
    Running {
        finish: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    },
    #[default]
    Stopped,
}

impl State {
    /// Opens every service under `paths.data_dir`.
    pub fn open(config: Config, paths: Paths, shutdown: CancellationToken) -> Result<State, StateError> {
        crate::ledger::schema::private_dir(&paths.data_dir)
            .map_err(|source| StateError::DataDir { path: paths.data_dir.clone(), source })?;
        let data_lock = lock_data_dir(&paths)?;
        let events = Bus::default();
        let vault =
            Vault::open(&config.vault, &paths.data_dir, events.clone(), shutdown.clone()).map_err(StateError::Vault)?;
        let built = Built::new(&config, &paths.config_file)?;
        let ledger = Arc::new(Ledger::open(&paths.data_dir)?);
        let policy = Arc::new(crate::policy::Policy::new(
            built.rules,
            crate::policy::Clock::from_env(),
            ledger.clone(),
            events.clone(),
        ));
        let entitled = Arc::downgrade(&policy);
        let (sync, worker) = crate::sync::new(
            &config.sync,
            ledger.clone(),
            events.clone(),
            Arc::new(crate::sync::KeyStoreToken {
                keys: vault.clone(),
                providers: crate::sync::VAULT_TOKEN_PROVIDERS,
                fallback: config.sync.credentials(),
            }),
            Arc::new(move || entitled.upgrade().and_then(|p| p.entitlement()).map(|e| e.sub)),
        );
        Ok(State {
            policy,
            router: ArcSwap::from_pointee(built.router),
            prices: ArcSwap::from_pointee(built.prices),
            config: ArcSwap::from_pointee(config),
            paths,
            started: Instant::now(),
            started_at: SystemTime::now(),
            connections: AtomicUsize::new(0),
            shutdown,
            events,
            keys: vault.clone(),
            vault,
            ledger,
            sync,
            background: std::sync::Mutex::new(Background::Ready(Box::new(worker))),
            reloading: std::sync::Mutex::new(()),
            front_doors: tokio_util::task::TaskTracker::new(),
            http_addr: std::sync::OnceLock::new(),
            _data_lock: data_lock,
        })
    }

    /// The configuration in force (a snapshot).
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The router in force (a snapshot: a call keeps the one it started with).
    pub fn router(&self) -> Arc<Router> {
        self.router.load_full()
    }

    /// The price table in force (a snapshot).
    pub fn prices(&self) -> Arc<PriceTable> {
        self.prices.load_full()
    }

    /// Re-reads the config file and applies it to new calls (see the module docs). An invalid
    /// file changes nothing and returns every error it has.
    pub fn reload(&self) -> Result<Reloaded, StateError> {
        let _one = self.reloading.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let new = Config::load(&self.paths.config_file, self.paths.config_explicit)?;
        let built = Built::new(&new, &self.paths.config_file)?;
        let old = self.config();
        let mut applied = Vec::new();
        let mut restart_required = Vec::new();
        let mut note = |changed: bool, reloadable: bool, name: &'static str| {
            if changed {
                if reloadable {
                    applied.push(name)
                } else {
                    restart_required.push(name)
                }
            }
        };
        note(old.providers != new.providers, true, "providers");
        note(old.routes != new.routes, true, "routes");
        note(old.router != new.router, true, "router");
        note(old.pricing != new.pricing, true, "pricing");
        note(old.policy != new.policy, true, "policy");
        note(old.tiers != new.tiers, true, "tiers");
        note(old.account != new.account, true, "account");
        note(old.apps != new.apps, true, "apps");
        note(old.credits != new.credits, true, "credits");
        note(old.vault.probe_base_urls != new.vault.probe_base_urls, true, "vault.probe_base_urls");
        note(old.daemon != new.daemon, false, "daemon");
        note(old.log != new.log, false, "log");
        note(
            old.vault.mode != new.vault.mode
                || old.vault.auto_lock_secs != new.vault.auto_lock_secs
                || old.vault.scrypt_log_n != new.vault.scrypt_log_n,
            false,
            "vault",
        );
        note(old.sync != new.sync, false, "sync");
        note(old.http != new.http, false, "http");
        self.router.store(Arc::new(built.router));
        self.prices.store(Arc::new(built.prices));
        self.policy.reconfigure(built.rules);
        self.config.store(Arc::new(new));
        tracing::info!(?applied, ?restart_required, "configuration reloaded");
        Ok(Reloaded { applied, restart_required, not_reloadable: NOT_RELOADABLE })
    }

    /// Replaces the router with one built afresh from the config in force, so the pooled
    /// provider connections of the old one — whose reused header buffers held keys — close and
    /// are freed once the calls still using them end. Called when the vault locks (route
    /// cooldowns start over).
    pub fn reset_provider_connections(&self) {
        let config = self.config();
        match Router::new(&config.providers, &config.routes, &config.router) {
            Ok(router) => self.router.store(Arc::new(router)),
            Err(e) => tracing::warn!("could not renew the provider connections after the vault locked: {e}"),
        }
    }

    /// Starts the background tasks (the sync worker). Call once, inside the runtime.
    pub fn start_background(&self) {
        let Ok(mut bg) = self.background.lock() else { return };
        if let Background::Ready(worker) = std::mem::take(&mut *bg) {
            let finish = CancellationToken::new();
            tokio::spawn(crate::policy::account::run(self.policy.clone(), self.vault.clone(), self.shutdown.clone()));
            let task = tokio::spawn(worker.run(finish.clone()));
            *bg = Background::Running { finish, task };
        }
    }

    /// Stops the background tasks: the sync worker drains the outbox for at most
    /// `sync.shutdown_drain_secs`; then the ledger is flushed. Call after the last call finished.
    pub async fn stop_background(&self) {
        let running = self.background.lock().map(|mut bg| std::mem::take(&mut *bg)).unwrap_or_default();
        if let Background::Running { finish, task } = running {
            finish.cancel();
            let bound = std::time::Duration::from_secs(self.config().sync.shutdown_drain_secs + 2);
            if tokio::time::timeout(bound, task).await.is_err() {
                tracing::warn!("the sync worker did not stop in time");
            }
        }
        if let Err(e) = self.ledger.flush() {
            tracing::error!("final ledger flush failed: {e}");
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Counts a connection for as long as the returned guard lives.
    pub fn connection_guard(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }
}

pub struct ConnectionGuard(Arc<State>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes `<data_dir>/daemon.lock`, recording our pid and socket in it.
fn lock_data_dir(paths: &Paths) -> Result<File, StateError> {
    let path = paths.data_dir.join(DATA_DIR_LOCK);
    let stamp = format!("{}\n{}\n", std::process::id(), paths.socket.display());
    match crate::daemon::listener::lock_with_stamp(&path, &stamp) {
        Ok(Ok(file)) => Ok(file),
        Ok(Err(holder)) => {
            let mut lines = holder.lines();
            let holder = match (lines.next().filter(|p| !p.is_empty()), lines.next()) {
                (Some(pid), Some(socket)) => format!("pid {pid}, socket {socket}"),
                (Some(pid), None) => format!("pid {pid}"),
                _ => "pid unknown".to_string(),
            };
            Err(StateError::DataDirInUse { path: paths.data_dir.clone(), holder })
        }
        Err(source) => Err(StateError::DataDir { path: path.clone(), source }),
    }
}
