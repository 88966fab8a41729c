//! One client connection: read frames, run each request as its own task, write responses.
//!
//! Invariants:
//! - requests on one connection run concurrently (up to `max_inflight_per_connection`); their
//!   responses are written as they finish, matched by msgid;
//! - memory per connection is bounded: when that many requests are running the reader stops
//!   reading, and responses wait in a bounded queue for the writer, so a client that stops
//!   reading stalls only itself;
//! - a malformed frame (bad MessagePack, or over a [`Limits::DAEMON`] limit: 16 MiB, nested over
//!   64, over a million elements or 32 MiB decoded), or one still incomplete after
//!   `daemon.frame_timeout_secs`, closes this connection only, with a logged reason; a
//!   well-formed but invalid request gets an `invalid_request` error and the connection stays
//!   open;
//! - decoding never stalls other connections: a frame over [`BLOCKING_DECODE`] bytes is decoded
//!   on the blocking pool, and the scanner's limits bound what any frame decodes into;
//! - disconnect = cancel: when the connection ends for any reason but a daemon shutdown (end of
//!   input, a reset, a failed write, a protocol violation), every request still running on it is
//!   cancelled through the one registry `$/cancel` uses ([`ConnCtx::inflight`]): a chat call
//!   aborts its upstream request at once, bills the usage so far as `cancelled` and releases its
//!   reservation. A hang-up is noticed even while the reader waits for a free request slot
//!   ([`FrameReader::closed`]). On a graceful shutdown running requests finish instead;
//! - the connection holds its [`Slot`] until it ends; it is marked served at its first complete
//!   message, and until then a new client may evict it when every slot is taken.

use crate::api::{self, Call, ConnCtx, CANCEL_NOTIFICATION};
use crate::daemon::slots::Slot;
use crate::rpc::codec::{FrameError, FrameReader, Limits};
use crate::rpc::message::{encode_response_raw, Message, MessageError};
use crate::rpc::RpcError;
use crate::state::State;
use bytes::Bytes;
use interprocess::local_socket::tokio::Stream;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Frames that may wait for a slow reader before handlers block.
const OUTBOX_FRAMES: usize = 64;

/// Frames larger than this are decoded off the async workers (`spawn_blocking`).
pub const BLOCKING_DECODE: usize = 64 * 1024;

/// Why the read side of a connection stopped.
enum Stop {
    Eof,
    Shutdown,
    /// The peer stopped reading (a write failed) or reset the connection.
    PeerGone(String),
    Violation(String),
    /// Every slot was taken and this connection had never completed a message.
    Evicted,
}

pub async fn serve(stream: Stream, state: Arc<State>, id: u64, peer_pid: Option<i32>, slot: Slot) {
    let _guard = state.connection_guard();
    let (rd, wr) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel::<Bytes>(OUTBOX_FRAMES);
    let write_failed = CancellationToken::new();
    let writer = tokio::spawn(write_loop(wr, rx, write_failed.clone()));
    let conn = Arc::new(ConnCtx {
        id,
        app: Mutex::new("unknown".to_string()),
        app_version: Mutex::new(None),
        peer_pid,
        outbox: tx,
        events: Mutex::default(),
        events_forwarder: Default::default(),
        closed: CancellationToken::new(),
        inflight: Mutex::default(),
        string_errors: Default::default(),
        last_error: Mutex::default(),
    });
    let handlers = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(state.config().daemon.max_inflight_per_connection));
    let frame_timeout = Duration::from_secs(state.config().daemon.frame_timeout_secs);
    let mut frames = FrameReader::with_limits(rd, Limits::DAEMON).with_frame_timeout(frame_timeout);

    let stop = loop {
        let frame = tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => break Stop::Shutdown,
            _ = write_failed.cancelled() => break Stop::PeerGone("a write failed".into()),
            _ = slot.evicted.cancelled() => break Stop::Evicted,
            f = frames.next_frame() => f,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break Stop::Eof,
            Err(FrameError::Io(e)) => break Stop::PeerGone(format!("read error: {e}")),
            Err(e) => break Stop::Violation(e.to_string()),
        };
        let message = if frame.len() > BLOCKING_DECODE {
            match tokio::task::spawn_blocking(move || Message::decode(&frame)).await {
                Ok(m) => m,
                Err(e) => break Stop::Violation(format!("decoding failed: {e}")),
            }
        } else {
            Message::decode(&frame)
        };
        slot.served();
        match message {
            Ok(Message::Request { id: msgid, method, params }) => {
                // Backpressure: wait for a free slot before reading further.
                let permit = tokio::select! {
                    biased;
                    _ = state.shutdown.cancelled() => break Stop::Shutdown,
                    _ = write_failed.cancelled() => break Stop::PeerGone("a write failed".into()),
                    r = frames.closed() => break match r {
                        Ok(()) => Stop::Eof,
                        Err(e) => Stop::PeerGone(format!("read error: {e}")),
                    },
                    p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break Stop::Shutdown },
                };
                let cancel = CancellationToken::new();
                let duplicate = match conn.inflight.lock() {
                    Ok(m) if m.contains_key(&msgid) => true,
                    Ok(mut m) => {
                        m.insert(msgid, cancel.clone());
                        false
                    }
                    Err(_) => true,
                };
                if duplicate {
                    let err =
                        RpcError::invalid_request(format!("msgid {msgid} is already in use by a running request"));
                    let _ = conn.outbox.send(conn.error_response(msgid, err)).await;
                    continue;
                }
                let call = Call { state: state.clone(), conn: conn.clone(), msgid, cancel, params };
                let done = conn.clone();
                let mut answer = Box::pin(async move {
                    let bytes = match api::dispatch(&method, call).await {
                        Ok(result) => Bytes::from(encode_response_raw(msgid, &result.0)),
                        Err(err) => done.error_response(msgid, err),
                    };
                    if let Ok(mut m) = done.inflight.lock() {
                        m.remove(&msgid);
                    }
                    bytes
                });
                // Fast path: most calls finish on their first poll; answer them without a task hop.
                if let Poll::Ready(bytes) = futures::poll!(answer.as_mut()) {
                    drop(permit);
                    if conn.outbox.send(bytes).await.is_err() {
                        break Stop::PeerGone("the writer ended".into());
                    }
                    continue;
                }
                let outbox = conn.outbox.clone();
                handlers.spawn(async move {
                    let _ = outbox.send(answer.await).await;
                    drop(permit);
                });
            }
            Ok(Message::Notification { method, params }) if method == CANCEL_NOTIFICATION => {
                let target = params.first().and_then(|v| v.as_u64()).and_then(|v| u32::try_from(v).ok());
                if !target.is_some_and(|t| conn.cancel(t)) {
                    tracing::debug!(conn = id, "$/cancel for no running request");
                }
            }
            Ok(Message::Notification { method, .. }) => {
                tracing::debug!(conn = id, method = %method.chars().take(64).collect::<String>(), "ignoring unknown notification");
            }
            Ok(Message::Response { .. }) => {
                tracing::debug!(conn = id, "ignoring response: the daemon sends no requests")
            }
            Err(MessageError { id: Some(msgid), reason }) => {
                let err = RpcError::invalid_request(reason);
                let _ = conn.outbox.send(conn.error_response(msgid, err)).await;
            }
            Err(MessageError { id: None, reason }) => break Stop::Violation(reason),
        }
    };

    match &stop {
        Stop::Violation(reason) => tracing::warn!(conn = id, "closing connection: {reason}"),
        Stop::PeerGone(reason) => tracing::debug!(conn = id, "peer gone ({reason})"),
        Stop::Evicted => tracing::debug!(conn = id, "evicted"),
        Stop::Eof | Stop::Shutdown => {}
    }
    if !matches!(stop, Stop::Shutdown) {
        let running = conn.inflight.lock().map(|m| {
            m.values().for_each(CancellationToken::cancel);
            m.len()
        });
        if let Ok(n @ 1..) = running {
            tracing::debug!(conn = id, requests = n, "connection ended; cancelling its running requests");
        }
    }
    conn.closed.cancel();
    handlers.close();
    handlers.wait().await;
    drop(conn); // last sender: the writer drains what is queued and ends
    let _ = writer.await;
    drop(slot);
    tracing::debug!(conn = id, "connection closed");
}

async fn write_loop<W: AsyncWrite + Unpin>(wr: W, mut rx: mpsc::Receiver<Bytes>, failed: CancellationToken) {
    let mut out = BufWriter::with_capacity(64 * 1024, wr);
    while let Some(frame) = rx.recv().await {
        let mut result = out.write_all(&frame).await;
        // Coalesce whatever else is ready into one flush.
        while result.is_ok() {
            match rx.try_recv() {
                Ok(more) => result = out.write_all(&more).await,
                Err(_) => break,
            }
        }
        if result.is_err() || out.flush().await.is_err() {
            failed.cancel();
            return;
        }
    }
    let _ = out.shutdown().await;
}
