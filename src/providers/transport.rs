//! HTTP exchange with a provider: one pooled `reqwest` client (rustls), and the three timeouts.
//! Also [`builder`], where every HTTP client of the daemon starts (providers, `keys.test`, the
//! sync worker, the account backend).
//!
//! Invariant: no client follows redirects. Every request carries a key or token in a header, and
//! a redirect would hand it to whatever host the `Location` names (reqwest strips only
//! `Authorization` and cookies, not `x-api-key`, `x-goog-api-key` or configured headers).
//!
//! - connect: set on the client;
//! - first byte: from sending the request until the response head arrives;
//! - idle: between two reads of the body (a stream that stalls is cut, a slow but steady one is not).
//!
//! Dropping a [`Body`] or the future returned by [`send`] closes the connection (the request is
//! aborted at once; nothing is drained).
//!
//! The router sends through the [`Transport`] trait: [`Http`] (this client) in production, a
//! scripted transport (`script`, test builds only) in its unit tests, which answers with
//! scripted heads, body pieces, pauses and errors under the same timeouts and classification.

use super::{Provider, ProviderError};
use bytes::Bytes;
use futures::future::BoxFuture;
use reqwest::header::HeaderMap;
use std::time::Duration;

/// Largest non-streaming response or error body read into memory.
pub const MAX_BODY: usize = 32 * 1024 * 1024;
/// Largest error body kept for classification.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The `User-Agent` of every request the daemon makes.
pub const USER_AGENT: &str = concat!("llm-sidecar/", env!("CARGO_PKG_VERSION"));

/// The choices every HTTP client of the daemon shares: rustls, [`USER_AGENT`], a connect timeout
/// and redirects never followed (the module's invariant). Callers add their own overall timeout
/// and pool settings, never a redirect policy.
pub fn builder(connect_timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
}

/// Builds the shared provider client: [`builder`] plus a large idle pool.
pub fn client(connect_timeout: Duration, pool_idle: Duration) -> Result<reqwest::Client, ProviderError> {
    builder(connect_timeout)
        .pool_idle_timeout(pool_idle)
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| ProviderError::Request(format!("cannot build the HTTP client: {e}")))
}

/// How the router exchanges one request with a provider: [`send`]'s contract (the head within
/// `first_byte`, a non-2xx answer classified by the adapter, reads of the body within `idle`).
pub trait Transport: Send + Sync + std::fmt::Debug {
    fn send<'a>(
        &'a self,
        adapter: &'a dyn Provider,
        request: reqwest::Request,
        first_byte: Duration,
        idle: Duration,
    ) -> BoxFuture<'a, Result<Body, ProviderError>>;
}

/// The production [`Transport`]: the pooled client from [`client`].
#[derive(Debug, Clone)]
pub struct Http(pub reqwest::Client);

impl Transport for Http {
    fn send<'a>(
        &'a self,
        adapter: &'a dyn Provider,
        request: reqwest::Request,
        first_byte: Duration,
        idle: Duration,
    ) -> BoxFuture<'a, Result<Body, ProviderError>> {
        Box::pin(send(&self.0, adapter, request, first_byte, idle))
    }
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
    let headers = (!status.is_success()).then(|| response.headers().clone());
    let body = Body { source: Source::Http(response), idle };
    match headers {
        None => Ok(body),
        Some(headers) => Err(refused(adapter, status.as_u16(), &headers, body).await),
    }
}

/// A non-2xx answer: its body read (bounded) and classified by the adapter.
async fn refused(adapter: &dyn Provider, status: u16, headers: &HeaderMap, mut body: Body) -> ProviderError {
    let bytes = body.read_all(MAX_ERROR_BODY).await.unwrap_or_default();
    adapter.classify(status, headers, &bytes)
}

/// A response body being read.
#[derive(Debug)]
pub struct Body {
    source: Source,
    idle: Duration,
}

#[derive(Debug)]
enum Source {
    Http(reqwest::Response),
    #[cfg(test)]
    Script(std::collections::VecDeque<script::Piece>),
}

impl Body {
    /// The next piece of the body; `None` at its end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, ProviderError> {
        let chunk = async {
            match &mut self.source {
                Source::Http(response) => {
                    response.chunk().await.map_err(|e| ProviderError::Transport(super::error::truncate(e.to_string())))
                }
                #[cfg(test)]
                Source::Script(pieces) => script::next(pieces).await,
            }
        };
        match tokio::time::timeout(self.idle, chunk).await {
            Err(_) => Err(ProviderError::Timeout("between chunks")),
            Ok(r) => r,
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

/// An error and its sources on one line (`error sending request: connection refused`), for
/// messages about a failed HTTP exchange. Callers strip URLs first (`reqwest::Error::without_url`)
/// so no query string reaches a message.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A scripted [`Transport`] for unit tests: per host, a queue of replies (a head after a delay,
/// or a failure to send; body pieces, pauses and read errors), answered under the same timeouts
/// and classification as [`Http`]. Every request is recorded.
#[cfg(test)]
pub(crate) mod script {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::collections::{HashMap, VecDeque};
    use std::sync::Mutex;

    /// One piece of a scripted body.
    #[derive(Debug)]
    pub enum Piece {
        Bytes(Bytes),
        /// The next read waits this long (under the idle timeout).
        Pause(Duration),
        /// The read fails (e.g. `ProviderError::Transport` for a broken connection).
        Fail(ProviderError),
    }

    /// The answer to one request.
    #[derive(Debug)]
    pub struct Reply {
        head_after: Duration,
        head: Result<(u16, HeaderMap), ProviderError>,
        body: Vec<Piece>,
    }

    impl Reply {
        /// A response head with `status` and no body yet.
        pub fn status(status: u16) -> Reply {
            Reply { head_after: Duration::ZERO, head: Ok((status, HeaderMap::new())), body: Vec::new() }
        }

        /// The request fails before any response (connect error, reset...).
        pub fn error(e: ProviderError) -> Reply {
            Reply { head_after: Duration::ZERO, head: Err(e), body: Vec::new() }
        }

        /// The head (or the send error) arrives after `d`.
        pub fn after(mut self, d: Duration) -> Reply {
            self.head_after = d;
            self
        }

        pub fn header(mut self, name: &'static str, value: &str) -> Reply {
            if let Ok((_, h)) = &mut self.head {
                h.insert(name, value.parse().unwrap());
            }
            self
        }

        pub fn chunk(mut self, bytes: impl AsRef<[u8]>) -> Reply {
            self.body.push(Piece::Bytes(Bytes::copy_from_slice(bytes.as_ref())));
            self
        }

        pub fn pause(mut self, d: Duration) -> Reply {
            self.body.push(Piece::Pause(d));
            self
        }

        pub fn fail(mut self, e: ProviderError) -> Reply {
            self.body.push(Piece::Fail(e));
            self
        }
    }

    /// A request as the script received it.
    #[derive(Debug, Clone)]
    pub struct Sent {
        pub host: String,
        pub at: tokio::time::Instant,
        pub headers: HeaderMap,
    }

    #[derive(Debug, Default)]
    pub struct Scripted {
        replies: Mutex<HashMap<String, VecDeque<Reply>>>,
        sent: Mutex<Vec<Sent>>,
    }

    impl Scripted {
        /// Queues `replies` for requests to `host` (answered in order; one more request panics).
        pub fn on(&self, host: &str, replies: impl IntoIterator<Item = Reply>) -> &Self {
            self.replies.lock().unwrap().entry(host.to_string()).or_default().extend(replies);
            self
        }

        /// Every request received so far, in order.
        pub fn sent(&self) -> Vec<Sent> {
            self.sent.lock().unwrap().clone()
        }

        /// Replies not used yet, over all hosts.
        pub fn unused(&self) -> usize {
            self.replies.lock().unwrap().values().map(VecDeque::len).sum()
        }
    }

    impl Transport for Scripted {
        fn send<'a>(
            &'a self,
            adapter: &'a dyn Provider,
            request: reqwest::Request,
            first_byte: Duration,
            idle: Duration,
        ) -> BoxFuture<'a, Result<Body, ProviderError>> {
            let host = request.url().host_str().unwrap_or_default().to_string();
            let reply = self.replies.lock().unwrap().get_mut(&host).and_then(VecDeque::pop_front);
            let reply = reply.unwrap_or_else(|| panic!("no scripted reply left for {host}"));
            self.sent.lock().unwrap().push(Sent {
                host,
                at: tokio::time::Instant::now(),
                headers: request.headers().clone(),
            });
            Box::pin(async move {
                let Reply { head_after, head, body } = reply;
                let head = async move {
                    tokio::time::sleep(head_after).await;
                    head
                };
                let (status, headers) = match tokio::time::timeout(first_byte, head).await {
                    Err(_) => return Err(ProviderError::Timeout("waiting for the first byte")),
                    Ok(head) => head?,
                };
                let body = Body { source: Source::Script(body.into()), idle };
                if (200..300).contains(&status) {
                    Ok(body)
                } else {
                    Err(refused(adapter, status, &headers, body).await)
                }
            })
        }
    }

    pub(super) async fn next(pieces: &mut VecDeque<Piece>) -> Result<Option<Bytes>, ProviderError> {
        loop {
            match pieces.pop_front() {
                None => return Ok(None),
                Some(Piece::Bytes(b)) => return Ok(Some(b)),
                Some(Piece::Pause(d)) => tokio::time::sleep(d).await,
                Some(Piece::Fail(e)) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers every request with a cross-host redirect; returns the requests it got.
    async fn redirecting_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut requests = Vec::new();
            while let Ok(Ok((mut s, _))) = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await {
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).await.unwrap_or(0);
                requests.push(String::from_utf8_lossy(&buf[..n]).to_lowercase());
                // Another host name for this same server: a followed redirect would show here.
                let reply = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://localhost:{}/stolen\r\n\
                     Content-Length: 0\r\nConnection: close\r\n\r\n",
                    addr.port()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            }
            requests
        });
        (addr, server)
    }

    #[tokio::test]
    async fn builder_never_follows_redirects_and_names_itself() {
        let (addr, server) = redirecting_server().await;
        let client = builder(Duration::from_secs(5)).build().unwrap();
        let r = client.post(format!("http://{addr}/v1/messages")).header("x-api-key", "sk-x").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 307, "the redirect is answered, not followed");
        let requests = server.await.unwrap();
        assert_eq!(requests.len(), 1, "{requests:?}");
        assert!(requests[0].contains(&format!("user-agent: {USER_AGENT}")), "{}", requests[0]);
    }

    #[tokio::test]
    async fn provider_client_never_follows_redirects() {
        let (addr, server) = redirecting_server().await;
        let client = client(Duration::from_secs(5), Duration::from_secs(5)).unwrap();
        let r = client.get(format!("http://{addr}/v1/models")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 307);
        assert_eq!(server.await.unwrap().len(), 1);
    }
}
