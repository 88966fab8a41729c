//! Where a streamed call's deltas go: each front door's [`Sink`] (an RPC connection's
//! `chat.chunk` notifications, an HTTP response body's channel), handed to the router, which
//! sends every delta straight into it as it is decoded.
//!
//! Invariant: a sink never fails a call. One that cannot deliver (its peer is gone) drops the
//! delta; ending the call is the caller's cancellation token's job.

use super::Delta;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

/// Receives a streamed call's deltas, in order; a send that waits holds the call back
/// (backpressure from a slow reader).
pub trait Sink: Send {
    fn send(&mut self, delta: Delta) -> BoxFuture<'_, ()>;
}

/// A channel is a sink: a closed one drops the delta.
impl Sink for mpsc::Sender<Delta> {
    fn send(&mut self, delta: Delta) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = mpsc::Sender::send(self, delta).await;
        })
    }
}
