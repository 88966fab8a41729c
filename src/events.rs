//! Daemon events (`quota.threshold`, `vault.locked`, ...) fanned out to subscribed connections.
//!
//! Any module emits with [`Bus::emit`]; `events.subscribe` (api/events.rs) forwards the kinds a
//! connection asked for as `event` notifications `[{kind, ...}]`. A connection never receives a
//! notification it did not subscribe to. A subscriber that falls behind by more than the buffer
//! gets one `events.lagged {missed}` event instead of unbounded buffering.

use rmpv::Value;
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Every event kind the daemon emits.
pub const KINDS: &[&str] = &[
    "quota.threshold",
    "quota.exceeded",
    "tier.changed",
    "rate_limited",
    "sync.paused",
    "sync.resumed",
    "vault.locked",
    "vault.unlocked",
    "key.invalid",
];

/// Sent to a subscriber that missed events because it read too slowly.
pub const LAGGED: &str = "events.lagged";

#[derive(Debug, Clone)]
pub struct Event {
    pub kind: &'static str,
    /// A map whose first entry is `kind`.
    pub body: Value,
}

#[derive(Debug, Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus { tx: broadcast::channel(1024).0 }
    }
}

impl Bus {
    /// Emits an event; `fields` must serialize to a map (its entries follow `kind`).
    pub fn emit<T: Serialize>(&self, kind: &'static str, fields: &T) {
        debug_assert!(KINDS.contains(&kind), "unknown event kind {kind}");
        let mut entries = vec![(Value::from("kind"), Value::from(kind))];
        if let Ok(Value::Map(m)) = crate::rpc::to_value(fields) {
            entries.extend(m);
        }
        tracing::debug!(kind, "event");
        let _ = self.tx.send(Arc::new(Event { kind, body: Value::Map(entries) }));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}
