//! The daemon process: accept loop, connection slots (limit, per-process share, eviction of
//! connections that never completed a request: [`slots`]), peer check, graceful shutdown.
//!
//! [`run`] serves until its shutdown token is cancelled (SIGTERM/SIGINT in `main`, anything in
//! tests), then stops accepting, removes the socket, gives running calls
//! `daemon.shutdown_grace_secs` to finish, lets the sync worker drain the outbox (bounded by
//! `sync.shutdown_drain_secs`, see [`State::stop_background`]), and returns.

pub mod conn;
pub mod listener;
pub mod slots;

use crate::state::State;
use interprocess::local_socket::traits::StreamCommon as _;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;

pub use listener::{adopt, bind, Activation, BoundSocket, ListenError};

/// Serves connections on `socket` until `state.shutdown` is cancelled.
pub async fn run(state: Arc<State>, mut socket: BoundSocket) {
    let my_uid = rustix::process::getuid().as_raw();
    let daemon = &state.config().daemon;
    let slots = slots::Slots::new(daemon.max_connections, daemon.per_process_limit());
    let tracker = TaskTracker::new();
    let mut next_id: u64 = 1;
    state.start_background();
    tokio::spawn(renew_connections_on_lock(state.clone()));
    tracing::info!(socket = %socket.path.display(), pid = std::process::id(), "listening");
    notify_service_manager(&[sd_notify::NotifyState::Ready]);
    loop {
        let stream = tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => break,
            s = listener::accept(&socket.listener) => s,
        };
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                // e.g. EMFILE: back off briefly instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (uid, pid) = match stream.peer_creds() {
            Ok(c) => (c.euid(), c.pid()),
            Err(e) => {
                tracing::warn!("refusing a connection whose credentials cannot be read: {e}");
                continue;
            }
        };
        if uid != Some(my_uid) {
            tracing::warn!(peer_uid = ?uid, peer_pid = ?pid, "refusing a connection from another user");
            continue;
        }
        let id = next_id;
        next_id += 1;
        // Every slot held by a connection that completed a request: this client waits, and
        // those behind it wait in the listen backlog.
        let slot = loop {
            match slots.admit(id, pid) {
                Ok(slot) => break Some(slot),
                Err(r @ slots::Refusal::ProcessShare(_)) => {
                    tracing::warn!(peer_pid = ?pid, "refusing a connection: {r}");
                    break None;
                }
                Err(slots::Refusal::Full(_)) => tokio::select! {
                    biased;
                    _ = state.shutdown.cancelled() => break None,
                    _ = slots.freed() => {}
                },
            }
        };
        let Some(slot) = slot else { continue };
        let state = state.clone();
        tracker.spawn(conn::serve(stream, state, id, pid, slot));
    }
    notify_service_manager(&[sd_notify::NotifyState::Stopping]);
    socket.remove_file();
    tracker.close();
    let grace = Duration::from_secs(state.config().daemon.shutdown_grace_secs);
    tracing::info!(
        connections = state.connections(),
        "shutting down; waiting up to {}s for running calls",
        grace.as_secs()
    );
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("calls still running after the grace period; exiting anyway");
    }
    // The HTTP face's calls (it stops accepting on the same token) get the same grace.
    state.front_doors.close();
    if tokio::time::timeout(grace, state.front_doors.wait()).await.is_err() {
        tracing::warn!("HTTP calls still running after the grace period; exiting anyway");
    }
    // Bounded sync drain and final ledger flush, while the single-instance lock is still held.
    state.stop_background().await;
    drop(socket);
    tracing::info!("stopped");
}

/// When the vault locks (by hand or idle), drops the provider connection pool, whose buffers
/// held keys ([`State::reset_provider_connections`]); ends with the shutdown.
async fn renew_connections_on_lock(state: Arc<State>) {
    let mut events = state.events.subscribe();
    loop {
        let event = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            e = events.recv() => e,
        };
        match event {
            Ok(e) if e.kind == crate::events::EventKind::VaultLocked => state.reset_provider_connections(),
            Ok(_) => {}
            // Missed events may include a lock: renewing once more is harmless.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => state.reset_provider_connections(),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Tells systemd (`Type=notify`) about state changes; a no-op when not run by systemd.
fn notify_service_manager(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::debug!("sd_notify failed: {e}");
    }
}
