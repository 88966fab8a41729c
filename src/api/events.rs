//! `events.subscribe` / `events.unsubscribe`: choose which daemon events this connection gets,
//! and the forwarder that sends them.
//!
//! This is where an [`Event`] becomes MessagePack: the notification `event` carries one map
//! `{kind, <fields in the emitter's order>}` (see [`encode`]); `events.lagged {missed}` tells a
//! slow reader how many it lost.

use super::{ok, Call, ConnCtx, Method};
use crate::events::{Event, EventKind, Field, LAGGED};
use crate::rpc::{Encoded, RpcError};
use rmpv::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

pub(super) fn methods() -> Vec<Method> {
    vec![
        Method {
            name: "events.subscribe",
            params: "{kinds: [str]}  (\"*\" for all)",
            result: "{kinds: [str]}",
            summary: "Receive `event` notifications [{kind, ...}] for these kinds on this connection (adds to earlier subscriptions)",
            kind: "request",
            handler: Some(|c| Box::pin(subscribe(c))),
        },
        Method {
            name: "events.unsubscribe",
            params: "{kinds?: [str]}  (omitted: all)",
            result: "{kinds: [str]}",
            summary: "Stop receiving these event kinds",
            kind: "request",
            handler: Some(|c| Box::pin(unsubscribe(c))),
        },
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeParams {
    kinds: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UnsubscribeParams {
    kinds: Option<Vec<String>>,
}

#[derive(Serialize)]
struct KindsResult {
    kinds: Vec<String>,
}

fn expand(kinds: &[String]) -> Result<BTreeSet<String>, RpcError> {
    let mut out = BTreeSet::new();
    for k in kinds {
        if k == "*" {
            out.extend(EventKind::ALL.iter().map(|k| k.as_str().to_string()));
        } else if EventKind::parse(k).is_some() {
            out.insert(k.clone());
        } else {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            return Err(RpcError::invalid_params(format!(
                "unknown event kind `{k}`; known kinds: {}",
                known.join(", ")
            )));
        }
    }
    Ok(out)
}

fn current(conn: &ConnCtx) -> Vec<String> {
    conn.events.lock().map(|s| s.iter().cloned().collect()).unwrap_or_default()
}

async fn subscribe(mut c: Call) -> Result<Encoded, RpcError> {
    let p: SubscribeParams = c.params()?;
    let add = expand(&p.kinds)?;
    c.conn.events.lock().map_err(|_| RpcError::internal("subscription state poisoned"))?.extend(add);
    // One forwarder per connection, for its whole life (unsubscribing only filters).
    if !c.conn.events_forwarder.swap(true, std::sync::atomic::Ordering::SeqCst) {
        tokio::spawn(forward(c.state.events.subscribe(), c.conn.clone()));
    }
    ok(&KindsResult { kinds: current(&c.conn) })
}

async fn unsubscribe(mut c: Call) -> Result<Encoded, RpcError> {
    let p: UnsubscribeParams = c.params()?;
    let remove = match &p.kinds {
        Some(k) => Some(expand(k)?),
        None => None,
    };
    if let Ok(mut subs) = c.conn.events.lock() {
        match remove {
            Some(r) => subs.retain(|k| !r.contains(k)),
            None => subs.clear(),
        }
    }
    ok(&KindsResult { kinds: current(&c.conn) })
}

/// The notification body of `e`: a map whose first entry is `kind`, then the fields in order.
fn encode(e: &Event) -> Value {
    let field = |f: &Field| match f {
        Field::Nil => Value::Nil,
        Field::Bool(b) => Value::from(*b),
        Field::Int(i) => Value::from(*i),
        Field::Uint(u) => Value::from(*u),
        Field::Float(x) => Value::from(*x),
        Field::Str(s) => Value::from(s.as_str()),
    };
    let mut entries = Vec::with_capacity(e.fields.len() + 1);
    entries.push((Value::from("kind"), Value::from(e.kind.as_str())));
    entries.extend(e.fields.iter().map(|(name, f)| (Value::from(*name), field(f))));
    Value::Map(entries)
}

/// Forwards subscribed events until the connection closes.
async fn forward(mut rx: tokio::sync::broadcast::Receiver<Arc<Event>>, conn: Arc<ConnCtx>) {
    loop {
        let event = tokio::select! {
            _ = conn.closed.cancelled() => return,
            e = rx.recv() => e,
        };
        let body = match event {
            Ok(e) => {
                if !conn.events.lock().map(|s| s.contains(e.kind.as_str())).unwrap_or(false) {
                    continue;
                }
                encode(&e)
            }
            Err(RecvError::Lagged(_)) if conn.events.lock().map(|s| s.is_empty()).unwrap_or(true) => continue,
            Err(RecvError::Lagged(missed)) => Value::Map(vec![
                (Value::from("kind"), Value::from(LAGGED)),
                (Value::from("missed"), Value::from(missed)),
            ]),
            Err(RecvError::Closed) => return,
        };
        if !conn.notify("event", vec![body]).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::events::Bus;
    use crate::rpc::message::encode_value;

    #[derive(Serialize, Clone, Copy)]
    #[serde(rename_all = "snake_case")]
    enum Reason {
        Idle,
    }

    /// Every field type an emitter uses: `Option<&str>`, `&'static str`, `u64`/`u32`/`u16`,
    /// `i64`, `f64`, a unit enum variant.
    #[derive(Serialize)]
    struct Fields<'a> {
        from: Option<&'a str>,
        to: Option<&'a str>,
        source: &'static str,
        retry_after_ms: u64,
        limit: u32,
        status: Option<u16>,
        used: i64,
        fraction: f64,
        reason: Reason,
    }

    /// The bytes the daemon sent before events were typed: the fields struct with `kind` first,
    /// encoded with field names.
    #[derive(Serialize)]
    struct Before<'a> {
        kind: &'static str,
        #[serde(flatten)]
        fields: &'a Fields<'a>,
    }

    #[test]
    fn encoding_is_the_map_the_emitter_described() {
        let fields = Fields {
            from: None,
            to: Some("pro"),
            source: "entitlement",
            retry_after_ms: 1500,
            limit: 60,
            status: Some(401),
            used: -2,
            fraction: 0.8,
            reason: Reason::Idle,
        };
        let bus = Bus::default();
        let mut rx = bus.subscribe();
        bus.emit(EventKind::TierChanged, &fields);
        let sent = encode_value(&encode(&rx.try_recv().unwrap()));
        let before = encode_value(&crate::rpc::to_value(&Before { kind: "tier.changed", fields: &fields }).unwrap());
        assert_eq!(sent, before);
        #[derive(Serialize)]
        struct NoFields {}
        bus.emit(EventKind::VaultUnlocked, &NoFields {});
        let sent = encode_value(&encode(&rx.try_recv().unwrap()));
        assert_eq!(sent, encode_value(&Value::Map(vec![(Value::from("kind"), Value::from("vault.unlocked"))])));
    }
}
