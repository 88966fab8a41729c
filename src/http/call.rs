//! One chat call of the HTTP face: the chat service run in its own task, its deltas and its end
//! carried to the response over a channel.
//!
//! Invariants:
//! - the call runs in a task of its own (tracked by `State::front_doors`), so that a client that
//!   goes away never drops the service mid-call: the response future or body holds a
//!   [`DropGuard`] whose drop cancels the call, which then ends billed with status `cancelled`
//!   exactly as `$/cancel` ends an RPC call;
//! - a streamed answer starts (status 200) only once its first delta or its end is known, so a
//!   refusal before any token (quota, tier, rate limit, bad request) is a plain HTTP error;
//! - deltas reach the body in order; the dialect's encoder turns them into SSE events, several
//!   pending deltas into one write.

use super::error::HttpError;
use crate::chat::service::{self, Answer, Caller, Request, Sink};
use crate::chat::Delta;
use crate::state::State;
use axum::body::{Body, Bytes};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Deltas buffered between the call and the response body.
const BUFFER: usize = 64;
/// At most this many pending deltas go into one write.
const COALESCE: usize = 32;

/// What the call task sends.
enum Event {
    Delta(Delta),
    End(Result<Answer, HttpError>),
}

/// A running call: its events, and the guard that cancels it when dropped.
struct Running {
    rx: mpsc::Receiver<Event>,
    guard: Option<DropGuard>,
}

struct ChannelSink(mpsc::Sender<Event>);

impl Sink for ChannelSink {
    fn send(&mut self, delta: Delta) -> BoxFuture<'_, ()> {
        // A closed channel means the client went away; its guard has cancelled the call.
        Box::pin(async move {
            let _ = self.0.send(Event::Delta(delta)).await;
        })
    }
}

/// Starts `req` for `app`.
fn start(state: &Arc<State>, app: String, req: Request) -> Running {
    let cancel = CancellationToken::new();
    let (tx, rx) = mpsc::channel(BUFFER);
    let guard = cancel.clone().drop_guard();
    let st = state.clone();
    state.front_doors.spawn(async move {
        let mut sink = ChannelSink(tx.clone());
        let sink: Option<&mut dyn Sink> = if req.stream { Some(&mut sink) } else { None };
        let end = match service::run(&st, &Caller { app }, req, sink, &cancel).await {
            Ok(answer) => Ok(answer),
            Err(e) => Err(HttpError::from(crate::api::chat_error(e, &st).await)),
        };
        let _ = tx.send(Event::End(end)).await;
    });
    Running { rx, guard: Some(guard) }
}

impl Running {
    /// The next event; `None` only if the call task died (it never should).
    async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The call's end, skipping deltas (a non-streamed call sends none).
    async fn finish(mut self) -> Result<Answer, HttpError> {
        loop {
            match self.rx.recv().await {
                Some(Event::End(end)) => {
                    self.disarm();
                    return end;
                }
                Some(Event::Delta(_)) => {}
                None => return Err(HttpError::internal("the call ended without an answer")),
            }
        }
    }

    fn disarm(&mut self) {
        if let Some(g) = self.guard.take() {
            g.disarm();
        }
    }
}

/// Runs `req` for `app` and answers it: not streamed, `whole(answer)` as JSON; streamed, an SSE
/// body through `enc`, begun once the first delta or the end is known (a refusal before any
/// token is an error, not a stream).
pub async fn respond(
    state: &Arc<State>,
    app: String,
    req: Request,
    whole: impl FnOnce(&Answer) -> serde_json::Value,
    enc: impl Encoder,
) -> Result<Response, HttpError> {
    let stream = req.stream;
    let mut running = start(state, app, req);
    if !stream {
        let a = running.finish().await?;
        return Ok(axum::Json(whole(&a)).into_response());
    }
    let first = match running.next().await {
        Some(Event::End(Err(e))) => return Err(e),
        Some(e) => e,
        None => return Err(HttpError::internal("the call ended without an answer")),
    };
    Ok(([(CONTENT_TYPE, "text/event-stream"), (CACHE_CONTROL, "no-cache")], sse_body(first, running, enc))
        .into_response())
}

/// Turns a call's events into a dialect's SSE text.
pub trait Encoder: Send + 'static {
    fn delta(&mut self, d: Delta, out: &mut String);
    /// The last events, after which the body ends.
    fn end(&mut self, end: Result<Answer, HttpError>, out: &mut String);
}

/// Appends one SSE event (`event:` only when named).
pub fn sse(out: &mut String, event: Option<&str>, data: &serde_json::Value) {
    if let Some(e) = event {
        out.push_str("event: ");
        out.push_str(e);
        out.push('\n');
    }
    out.push_str("data: ");
    out.push_str(&data.to_string());
    out.push_str("\n\n");
}

/// The streamed body: `first` (already received), then every later event, through `enc`.
fn sse_body(first: Event, running: Running, enc: impl Encoder) -> Body {
    struct St<E> {
        pending: Option<Event>,
        running: Running,
        enc: E,
        done: bool,
    }
    let st = St { pending: Some(first), running, enc, done: false };
    let stream = futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let first = match st.pending.take() {
            Some(e) => e,
            None => st.running.next().await?,
        };
        let mut out = String::new();
        let mut ev = Some(first);
        let mut n = 0;
        while let Some(e) = ev.take() {
            match e {
                Event::Delta(d) => st.enc.delta(d, &mut out),
                Event::End(end) => {
                    st.enc.end(end, &mut out);
                    st.running.disarm();
                    st.done = true;
                    break;
                }
            }
            n += 1;
            if n < COALESCE {
                ev = st.running.rx.try_recv().ok();
            }
        }
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(out)), st))
    });
    Body::from_stream(stream)
}
