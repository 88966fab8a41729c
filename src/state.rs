//! The daemon's shared state, handed to every API handler.
//!
//! Holds the configuration as loaded at start, the resolved paths, and live counters. Domain
//! services (vault, router, ledger, policy, sync) hang off this struct as they are added.

use crate::config::Config;
use crate::events::Bus;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// Resolved locations of everything the daemon reads or writes.
#[derive(Debug, Clone)]
pub struct Paths {
    pub config_file: PathBuf,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
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
}

impl State {
    pub fn new(config: Config, paths: Paths, shutdown: CancellationToken) -> State {
        State {
            config,
            paths,
            started: Instant::now(),
            started_at: SystemTime::now(),
            connections: AtomicUsize::new(0),
            shutdown,
            events: Bus::default(),
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Counts a connection for as long as the returned guard lives.
    pub fn connection_guard(self: &std::sync::Arc<Self>) -> ConnectionGuard {
        self.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }
}

pub struct ConnectionGuard(std::sync::Arc<State>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}
