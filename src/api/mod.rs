//! The RPC surface: one file per namespace, each turning params into a domain call and its
//! outcome into a result map. This is the only layer that knows RPC params.
//!
//! Invariants: every method is listed in [`METHODS`] (which `daemon.methods` returns, so the
//! table and the dispatcher cannot disagree); handlers never panic on peer input: bad params are
//! `invalid_params`; results are maps encoded with field names.

mod account;
mod apps;
mod chat;
mod credits;
mod daemon;
mod events;
mod keys;
mod models;
mod quota;
mod sync;
mod usage;
mod vault;

use crate::rpc::message::{encode_error_response, encode_error_string_response, Message};
use crate::rpc::{parse_params, Encoded, ErrorCode, RpcError};

/// The structured error of a chat service error: the one mapping every face (RPC, HTTP) uses.
/// An `insufficient_credits` refusal gets the backend's credit-pack checkout link when an
/// account backend is configured (asked for at most [`account::CHECKOUT_WAIT`]).
pub async fn chat_error(e: crate::chat::service::ChatError, state: &State) -> RpcError {
    let backend = quota::has_backend(state);
    let mut err = chat::error(e, backend);
    if backend && err.code == ErrorCode::InsufficientCredits {
        account::add_credits_checkout(state, &mut err).await;
    }
    err
}
use crate::state::State;
use bytes::Bytes;
use futures::future::BoxFuture;
use rmpv::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a connection knows about itself; shared by all calls made on it.
#[derive(Debug)]
pub struct ConnCtx {
    pub id: u64,
    /// Name given in `daemon.hello`, else `unknown`.
    pub app: Mutex<String>,
    pub app_version: Mutex<Option<String>>,
    pub peer_pid: Option<i32>,
    /// Frames queued for this connection's writer (bounded: a slow reader applies backpressure).
    pub outbox: mpsc::Sender<Bytes>,
    /// Event kinds this connection subscribed to (`events.subscribe`).
    pub events: Mutex<BTreeSet<String>>,
    /// Whether this connection's event forwarder task has been started.
    pub events_forwarder: std::sync::atomic::AtomicBool,
    /// Cancelled when the connection stops reading; background tasks tied to it end then.
    pub closed: CancellationToken,
    /// The running requests of this connection by msgid: the one cancel registry (`$/cancel`,
    /// `chat.cancel`, and a lost connection cancel through it).
    pub inflight: Mutex<HashMap<u32, CancellationToken>>,
    /// Set by `daemon.hello {errors: "string"}`: error responses are `"<code>: <message>"`
    /// strings, the only error shape Neovim's `rpcrequest` shows.
    pub string_errors: std::sync::atomic::AtomicBool,
    /// The full error of this connection's last failed request (`daemon.last_error`).
    pub last_error: Mutex<Option<RpcError>>,
}

impl ConnCtx {
    pub fn app(&self) -> String {
        self.app.lock().map(|a| a.clone()).unwrap_or_else(|_| "unknown".to_string())
    }

    /// Cancels the running request `msgid`; false if there is none.
    pub fn cancel(&self, msgid: u32) -> bool {
        let token = self.inflight.lock().ok().and_then(|m| m.get(&msgid).cloned());
        token.inspect(CancellationToken::cancel).is_some()
    }

    /// The response frame for a failed request, in the error style this connection asked for;
    /// remembers the error for `daemon.last_error`.
    pub fn error_response(&self, msgid: u32, err: RpcError) -> Bytes {
        let bytes = if self.string_errors.load(std::sync::atomic::Ordering::Relaxed) {
            encode_error_string_response(msgid, &err.one_line())
        } else {
            encode_error_response(msgid, &err)
        };
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(err);
        }
        Bytes::from(bytes)
    }

    /// Sends a notification to this connection, waiting if its queue is full.
    pub async fn notify(&self, method: &str, params: Vec<Value>) -> bool {
        let bytes = Message::Notification { method: method.to_string(), params }.encode();
        self.outbox.send(Bytes::from(bytes)).await.is_ok()
    }
}

/// One call in progress.
pub struct Call {
    pub state: Arc<State>,
    pub conn: Arc<ConnCtx>,
    pub msgid: u32,
    /// Cancelled by `$/cancel [msgid]`, or when the connection is lost.
    pub cancel: CancellationToken,
    pub params: Vec<Value>,
}

impl Call {
    /// Parses the params array (see [`crate::rpc::parse_params`]).
    pub fn params<T: DeserializeOwned>(&mut self) -> Result<T, RpcError> {
        parse_params(std::mem::take(&mut self.params))
    }
}

pub type Handler = fn(Call) -> BoxFuture<'static, Result<Encoded, RpcError>>;

/// One entry of the method table.
#[derive(Clone)]
pub struct Method {
    pub name: &'static str,
    /// Shape of the single map argument, e.g. `{app: str, version?: str}`; `{}` if none.
    pub params: &'static str,
    pub result: &'static str,
    pub summary: &'static str,
    /// `request` or `notification`.
    pub kind: &'static str,
    pub handler: Option<Handler>,
}

/// Notifications the daemon accepts from clients (handled by the connection itself).
pub const CANCEL_NOTIFICATION: &str = "$/cancel";

/// The method table: every request and notification the daemon understands.
pub static METHODS: LazyLock<Vec<Method>> = LazyLock::new(|| {
    let mut all = daemon::methods();
    all.extend(events::methods());
    all.extend(quota::methods());
    all.extend(credits::methods());
    all.extend(account::methods());
    all.extend(keys::methods());
    all.extend(vault::methods());
    all.extend(chat::methods());
    all.extend(models::methods());
    all.extend(usage::methods());
    all.extend(sync::methods());
    all.extend(apps::methods());
    all.push(Method {
        name: CANCEL_NOTIFICATION,
        params: "[msgid: u32]",
        result: "none (notification)",
        summary: "Cancel a running request of this connection; it then answers `cancelled`",
        kind: "notification",
        handler: None,
    });
    all
});

static BY_NAME: LazyLock<HashMap<&'static str, Handler>> =
    LazyLock::new(|| METHODS.iter().filter_map(|m| m.handler.map(|h| (m.name, h))).collect());

/// Methods that watch `call.cancel` themselves, so they can bill the work done before answering
/// `cancelled`; [`dispatch`] does not race them with their token.
const OWN_CANCEL: &[&str] = &["chat"];

/// Runs one request to completion or cancellation.
pub async fn dispatch(method: &str, call: Call) -> Result<Encoded, RpcError> {
    let Some(handler) = BY_NAME.get(method) else {
        return Err(RpcError::method_not_found(method));
    };
    if OWN_CANCEL.contains(&method) {
        return handler(call).await;
    }
    let cancel = call.cancel.clone();
    tokio::select! {
        r = handler(call) => r,
        _ = cancel.cancelled() => Err(RpcError::new(ErrorCode::Cancelled, "the request was cancelled")),
    }
}

/// Encodes a handler's result struct.
pub(crate) fn ok<T: Serialize>(value: &T) -> Result<Encoded, RpcError> {
    Encoded::named(value)
}
