//! Connection slots: who may hold one of the daemon's `max_connections`.
//!
//! Invariants:
//! - at most `max_connections` connections are admitted at once, and at most
//!   `max_connections_per_process` of them from one peer process (by its pid), so one process
//!   cannot take every slot;
//! - connections that never completed a message (that only hold a slot, with nothing or a
//!   partial frame sent) are the first to go: a new connection over its process's share evicts
//!   that process's oldest such connection, or is refused at once if it has none; a new
//!   connection when every slot is taken evicts the oldest such connection of any process, or
//!   waits (and those behind it in the listen backlog) if there is none;
//! - a slot is freed when its [`Slot`] is dropped (the connection's task ended) or at once when it
//!   is evicted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The daemon's table of admitted connections.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    per_process: usize,
    taken: Mutex<HashMap<u64, Entry>>,
    freed: Notify,
}

#[derive(Debug)]
struct Entry {
    pid: Option<i32>,
    since: Instant,
    served: Arc<AtomicBool>,
    evict: CancellationToken,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("its process already holds {0} connections (daemon.max_connections_per_process)")]
    ProcessShare(usize),
    #[error("all {0} connection slots are held by connections that completed a request")]
    Full(usize),
}

/// One admitted connection's slot.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    served: Arc<AtomicBool>,
    /// Cancelled when a new client evicts this connection.
    pub evicted: CancellationToken,
}

impl Slot {
    /// Notes that the connection completed a message: it is no longer evictable.
    pub fn served(&self) {
        self.served.store(true, Ordering::Relaxed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut t) = self.slots.taken.lock() {
            t.remove(&self.id);
        }
        self.slots.freed.notify_waiters();
    }
}

impl Slots {
    pub fn new(max: usize, per_process: usize) -> Arc<Slots> {
        Arc::new(Slots { max, per_process, taken: Mutex::default(), freed: Notify::new() })
    }

    /// Admits connection `id` of process `pid`, evicting the oldest never-served connection if
    /// every slot is taken.
    pub fn admit(self: &Arc<Self>, id: u64, pid: Option<i32>) -> Result<Slot, Refusal> {
        let mut taken = self.taken.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let oldest_idle = |taken: &HashMap<u64, Entry>, of: Option<Option<i32>>| {
            let idle = taken.iter().filter(|(_, e)| !e.served.load(Ordering::Relaxed) && of.is_none_or(|p| e.pid == p));
            idle.min_by_key(|(_, e)| e.since).map(|(id, _)| *id)
        };
        let evict = |taken: &mut HashMap<u64, Entry>, victim: u64, why: &str| {
            if let Some(e) = taken.remove(&victim) {
                tracing::info!(conn = victim, peer_pid = ?e.pid, "evicting a connection that never completed a request: {why}");
                e.evict.cancel();
            }
        };
        if pid.is_some() && taken.values().filter(|e| e.pid == pid).count() >= self.per_process {
            let Some(victim) = oldest_idle(&taken, Some(pid)) else {
                return Err(Refusal::ProcessShare(self.per_process));
            };
            evict(&mut taken, victim, "its process holds its whole share");
        } else if taken.len() >= self.max {
            let Some(victim) = oldest_idle(&taken, None) else { return Err(Refusal::Full(self.max)) };
            evict(&mut taken, victim, "every slot is taken");
        }
        let served = Arc::new(AtomicBool::new(false));
        let evicted = CancellationToken::new();
        let entry = Entry { pid, since: Instant::now(), served: served.clone(), evict: evicted.clone() };
        taken.insert(id, entry);
        Ok(Slot { slots: self.clone(), id, served, evicted })
    }

    /// Resolves after some slot was freed (or spuriously); for a caller refused with
    /// [`Refusal::Full`] to try again.
    pub async fn freed(&self) {
        let wait = self.freed.notified();
        tokio::pin!(wait);
        wait.as_mut().enable();
        let full = self.taken.lock().map(|t| t.len() >= self.max).unwrap_or(false);
        if full {
            wait.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_over_its_share_evicts_its_own_idle_connection_or_is_refused() {
        let slots = Slots::new(10, 2);
        let a0 = slots.admit(1, Some(10)).expect("a0");
        let a1 = slots.admit(2, Some(10)).expect("a1");
        let a2 = slots.admit(3, Some(10)).expect("a2 evicts a0");
        assert!(a0.evicted.is_cancelled() && !a1.evicted.is_cancelled());
        a1.served();
        a2.served();
        assert_eq!(slots.admit(4, Some(10)).err(), Some(Refusal::ProcessShare(2)));
        assert!(slots.admit(5, Some(20)).is_ok(), "another process is not affected");
        drop(a1);
        assert!(slots.admit(6, Some(10)).is_ok(), "a freed slot counts again");
    }

    #[test]
    fn when_full_the_oldest_never_served_connection_of_any_process_goes() {
        let slots = Slots::new(4, 4);
        let a1 = slots.admit(1, Some(10)).expect("a1");
        let a2 = slots.admit(2, Some(10)).expect("a2");
        let b1 = slots.admit(3, Some(20)).expect("b1");
        let b2 = slots.admit(4, Some(20)).expect("b2");
        a1.served();
        b2.served();
        let c1 = slots.admit(5, Some(30)).expect("c1");
        assert!(a2.evicted.is_cancelled() && !a1.evicted.is_cancelled());
        let c2 = slots.admit(6, Some(30)).expect("c2");
        assert!(b1.evicted.is_cancelled() && !b2.evicted.is_cancelled());
        c1.served();
        c2.served();
        assert_eq!(slots.admit(7, Some(40)).err(), Some(Refusal::Full(4)));
        drop(c1);
        let d = slots.admit(8, Some(40)).expect("d");
        drop((a1, a2, b1, b2, c2, d));
        assert!(slots.taken.lock().expect("lock").is_empty());
    }
}
