//! HTTP exchange with a provider: one pooled `reqwest` client (rustls), and the three timeouts.
//!
//! - connect: set on the client;
//! - first byte: from sending the request until the response head arrives;
//! - idle: between two reads of the body (a stream that stalls is cut, a slow but steady one is not).
//!
//! Dropping a [`Body`] or the future returned by [`send`] closes the connection (the request is
//! aborted at once; nothing is drained).

use super::{Provider, ProviderError};
use bytes::Bytes;
use std::time::Duration;

/// Largest non-streaming response or error body read into memory.
pub const MAX_BODY: usize = 32 * 1024 * 1024;
/// Largest error body kept for classification.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Builds the shared client.
pub fn client(connect_timeout: Duration, pool_idle: Duration) -> Result<reqwest::Client, ProviderError> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(pool_idle)
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .user_agent(concat!("llm-sidecar/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ProviderError::Request(format!("cannot build the HTTP client: {e}")))
}

/// Sends `request` and waits (at most `first_byte`) for the response head. A non-2xx answer is
/// read (bounded) and classified by the adapter.
pub async fn send(
    client: &reqwest::Client,
    adapter: &dyn Provider,
    request: reqwest::Request,
    first_byte: Duration,
    idle: Duration,
) -> Result<Body, ProviderError> {
    let response = match tokio::time::timeout(first_byte, client.execute(request)).await {
        Err(_) => return Err(ProviderError::Timeout("waiting for the first byte")),
        Ok(Err(e)) => return Err(ProviderError::from_reqwest(&e)),
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    let mut body = Body { response, idle };
    if status.is_success() {
        return Ok(body);
    }
    let headers = body.response.headers().clone();
    let bytes = body.read_all(MAX_ERROR_BODY).await.unwrap_or_default();
    Err(adapter.classify(status.as_u16(), &headers, &bytes))
}

/// A response body being read.
#[derive(Debug)]
pub struct Body {
    response: reqwest::Response,
    idle: Duration,
}

impl Body {
    /// The next piece of the body; `None` at its end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, ProviderError> {
        match tokio::time::timeout(self.idle, self.response.chunk()).await {
            Err(_) => Err(ProviderError::Timeout("between chunks")),
            Ok(Err(e)) => Err(ProviderError::Transport(super::error::truncate(e.to_string()))),
            Ok(Ok(chunk)) => Ok(chunk),
        }
    }

    /// Reads the whole body (at most `limit` bytes; more is an error).
    pub async fn read_all(&mut self, limit: usize) -> Result<Vec<u8>, ProviderError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next().await? {
            if out.len() + chunk.len() > limit {
                return Err(ProviderError::Malformed(format!("response body exceeds {limit} bytes")));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}
