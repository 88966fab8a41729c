//! The daemon's shared state, handed to every API handler.
//!
//! Holds the configuration as loaded at start, the resolved paths, live counters, and the domain
//! services (key store, events; later router, ledger, policy, sync). [`State::open`] opens every
//! service; a failure there stops the daemon at start with a clear error.

use crate::config::Config;
use crate::events::Bus;
use crate::keystore::KeyStore;
use crate::ledger::{Ledger, LedgerError};
use crate::sync::{SyncHandle, SyncWorker};
use crate::vault::{Vault, VaultError};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// Resolved locations of everything the daemon reads or writes.
#[derive(Debug, Clone)]
pub struct Paths {
    pub config_file: PathBuf,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
}

/// Why the daemon's services could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
}

#[derive(Debug)]
pub struct State {
    pub config: Config,
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
    /// Providers, routes and the pooled HTTP client.
    pub router: crate::router::Router,
    pub prices: crate::pricing::PriceTable,
    /// The usage ledger (`data_dir/ledger`).
    pub ledger: Arc<Ledger>,
    /// The usage sync worker's handle (status, `sync.now`).
    pub sync: SyncHandle,
    /// Tiers, quotas, rate limits and the entitlement.
    pub policy: Arc<crate::policy::Policy>,
    background: std::sync::Mutex<Background>,
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
        std::fs::create_dir_all(&paths.data_dir)
            .map_err(|source| StateError::DataDir { path: paths.data_dir.clone(), source })?;
        let events = Bus::default();
        let vault =
            Vault::open(&config.vault, &paths.data_dir, events.clone(), shutdown.clone()).map_err(StateError::Vault)?;
        let router = crate::router::Router::new(&config.providers, &config.routes, &config.router)?;
        let config_dir = paths.config_file.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        let prices = crate::pricing::PriceTable::load(&config.pricing, &config_dir)?;
        let ledger = Arc::new(Ledger::open(&paths.data_dir.join("ledger"))?);
        let (sync, worker) = crate::sync::new(
            &config.sync,
            ledger.clone(),
            events.clone(),
            Arc::new(crate::sync::KeyStoreToken {
                keys: vault.clone(),
                providers: crate::sync::VAULT_TOKEN_PROVIDERS,
                fallback: config.sync.credentials(),
            }),
        );
        let verifier = crate::policy::Verifier::from_config(&config.account, &config_dir)
            .map_err(|(k, m)| StateError::Policy(k, m))?;
        let policy = Arc::new(crate::policy::Policy::new(
            config.policy.clone(),
            config.tiers.clone(),
            config.account.clone(),
            verifier,
            crate::policy::Clock::from_env(),
            ledger.clone(),
            events.clone(),
        ));
        Ok(State {
            policy,
            router,
            prices,
            config,
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
        })
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
            let bound = std::time::Duration::from_secs(self.config.sync.shutdown_drain_secs + 2);
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
