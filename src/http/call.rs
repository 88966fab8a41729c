//! One chat call of the HTTP face: the chat service polled inside the response (the handler's
//! future, then the streamed body), its deltas carried to the body through a channel both ends of
//! which live in that one task.
//!
//! Invariants:
//! - a client that goes away never drops the service mid-call: when the response future or body
//!   is dropped before the call's end, the call is cancelled and handed, as it is, to a task of
//!   its own (tracked by `State::front_doors`), where it ends billed with status `cancelled`
//!   exactly as `$/cancel` ends an RPC call;
//! - while the client is there the call runs in the connection's own task: no task per call and
//!   no wake-up of another task per delta;
//! - a streamed answer starts (status 200) only once its first delta or its end is known, so a
//!   refusal before any token (quota, tier, rate limit, bad request) is a plain HTTP error;
//! - deltas reach the body in order, and all of them before the end (the service sends every
//!   delta before it returns); the dialect's encoder turns them into SSE events, all pending
//!   deltas (up to [`COALESCE`]) into one write.

use super::error::HttpError;
use crate::chat::service::{self, Answer, Caller, Request, Sink};
use crate::chat::Delta;
use crate::state::State;
use axum::body::{Body, Bytes};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Deltas buffered between the service and the body (the service waits when they are full).
const BUFFER: usize = 64;
/// At most this many pending deltas go into one write.
const COALESCE: usize = 32;

/// What a running call yields.
enum Event {
    Delta(Delta),
    End(Result<Answer, HttpError>),
}

type CallFuture = Pin<Box<dyn Future<Output = Result<Answer, HttpError>> + Send>>;

/// A running call: the service's future (polled by whoever holds this), its deltas, and its end
/// once known. Dropped before the end is taken, it cancels the call and lets it finish in a task.
struct Running {
    call: Option<CallFuture>,
    rx: mpsc::Receiver<Delta>,
    end: Option<Result<Answer, HttpError>>,
    cancel: CancellationToken,
    state: Arc<State>,
}

/// Prepares `req` for `app` (nothing runs until the [`Running`] is polled).
fn start(state: &Arc<State>, app: String, req: Request) -> Running {
    let cancel = CancellationToken::new();
    let (tx, rx) = mpsc::channel(BUFFER);
    let (st, token) = (state.clone(), cancel.clone());
    let call: CallFuture = Box::pin(async move {
        // The channel's receiving end is only ever read with `try_recv` (no waker): a send never
        // wakes a task, not even this one.
        let mut sink = tx;
        let sink: Option<&mut dyn Sink> = if req.stream { Some(&mut sink) } else { None };
        match service::run(&st, &Caller { app }, req, sink, &token).await {
            Ok(answer) => Ok(answer),
            Err(e) => Err(HttpError::from(crate::api::chat_error(e, &st).await)),
        }
    });
    Running { call: Some(call), rx, end: None, cancel, state: state.clone() }
}

impl Running {
    /// The next event, driving the call as needed; `None` once the end has been taken.
    async fn next(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| {
            if let Some(e) = self.ready() {
                return Poll::Ready(Some(e));
            }
            let Some(call) = self.call.as_mut() else { return Poll::Ready(None) };
            if let Poll::Ready(end) = call.as_mut().poll(cx) {
                self.call = None;
                self.end = Some(end);
            }
            match self.ready() {
                Some(e) => Poll::Ready(Some(e)),
                None if self.call.is_none() => Poll::Ready(None),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// An event already there: a pending delta, else the end once the call has returned (its
    /// deltas all came before).
    fn ready(&mut self) -> Option<Event> {
        if let Ok(d) = self.rx.try_recv() {
            return Some(Event::Delta(d));
        }
        self.end.take().map(Event::End)
    }

    /// The call's end, skipping deltas (a non-streamed call sends none).
    async fn finish(mut self) -> Result<Answer, HttpError> {
        loop {
            match self.next().await {
                Some(Event::End(end)) => return end,
                Some(Event::Delta(_)) => {}
                None => return Err(HttpError::internal("the call ended without an answer")),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // The client went away mid-call: cancel it and let it end (billed) on its own.
        let Some(call) = self.call.take() else { return };
        self.cancel.cancel();
        // Outside a runtime (the process is tearing it down) no task can start: the call goes
        // with the process, like every other call still running then.
        if tokio::runtime::Handle::try_current().is_ok() {
            self.state.front_doors.spawn(async move {
                let _ = call.await;
            });
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
    fn delta(&mut self, d: Delta, out: &mut Vec<u8>);
    /// The last events, after which the body ends.
    fn end(&mut self, end: Result<Answer, HttpError>, out: &mut Vec<u8>);
}

/// Appends one SSE event (`event:` only when named).
pub fn sse(out: &mut Vec<u8>, event: Option<&str>, data: &(impl serde::Serialize + ?Sized)) {
    if let Some(e) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(e.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    let at = out.len();
    // Serializing plain data and JSON values cannot fail; if it did, an empty object keeps the
    // frame valid.
    if serde_json::to_writer(&mut *out, data).is_err() {
        out.truncate(at);
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
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
        let mut out = Vec::with_capacity(1024);
        let mut ev = Some(first);
        let mut n = 0;
        while let Some(e) = ev.take() {
            match e {
                Event::Delta(d) => st.enc.delta(d, &mut out),
                Event::End(end) => {
                    st.enc.end(end, &mut out);
                    st.done = true;
                    break;
                }
            }
            n += 1;
            if n < COALESCE {
                ev = st.running.ready();
            }
        }
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(out)), st))
    });
    Body::from_stream(stream)
}
