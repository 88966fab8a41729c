//! `events.subscribe` / `events.unsubscribe`: choose which daemon events this connection gets.

use super::{ok, Call, ConnCtx, Method};
use crate::events::{KINDS, LAGGED};
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
            out.extend(KINDS.iter().map(|s| s.to_string()));
        } else if KINDS.contains(&k.as_str()) {
            out.insert(k.clone());
        } else {
            return Err(RpcError::invalid_params(format!(
                "unknown event kind `{k}`; known kinds: {}",
                KINDS.join(", ")
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

/// Forwards subscribed events until the connection closes.
async fn forward(mut rx: tokio::sync::broadcast::Receiver<Arc<crate::events::Event>>, conn: Arc<ConnCtx>) {
    loop {
        let event = tokio::select! {
            _ = conn.closed.cancelled() => return,
            e = rx.recv() => e,
        };
        let body = match event {
            Ok(e) => {
                if !conn.events.lock().map(|s| s.contains(e.kind)).unwrap_or(false) {
                    continue;
                }
                e.body.clone()
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
