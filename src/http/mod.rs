//! The HTTP face: OpenAI- and Anthropic-compatible endpoints on loopback, so that SDKs and
//! editors that take a base URL can use the daemon with an app token as their API key.
//!
//! It is a front door, not a second implementation: each endpoint maps its dialect onto the
//! chat service's [`Request`](crate::chat::service::Request) and the service's answer back
//! ([`openai`], [`anthropic`], [`models`]); errors come from the same mapping the RPC uses
//! ([`crate::api::chat_error`]) and take the dialect's shape ([`error`]).
//!
//! Invariants:
//! - it listens on loopback only ([`config::parse_listen`]), off unless `[http] listen` or
//!   `serve --http` says so;
//! - every request but a CORS preflight needs an app token (`Authorization: Bearer lsk_…` or
//!   `x-api-key: lsk_…`), checked by hash in constant time ([`crate::ledger::Ledger::verify_app_token`]);
//!   the token names the app for metering, events and policy, and is never logged or echoed;
//! - a `Host` that is not a loopback name is refused (DNS rebinding), and so is an `Origin`
//!   not in `http.cors_origins` (browsers on other origins cannot reach it);
//! - request heads, bodies and their arrival times are bounded (`[http]` limits);
//! - a client that goes away cancels its call, which is billed with what it used ([`call`]);
//! - on shutdown the listener stops accepting and running calls get the daemon's grace period.

pub mod anthropic;
mod call;
pub mod config;
pub mod error;
mod models;
pub mod openai;

pub use config::{parse_listen, HttpConfig, DEFAULT_LISTEN};

use crate::state::State;
use axum::body::{Body, Bytes};
use axum::extract::{Request as HttpRequest, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use error::{Dialect, HttpError};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What the handlers share.
pub struct Face {
    pub state: Arc<State>,
    max_body_bytes: usize,
    cors_origins: Vec<String>,
}

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpListenError {
    #[error("http.listen: {0}")]
    Address(String),
    #[error("cannot listen on {addr} for the HTTP face: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the listener (loopback only).
pub async fn bind(listen: &str) -> Result<TcpListener, HttpListenError> {
    let addr = parse_listen(listen).map_err(HttpListenError::Address)?;
    TcpListener::bind(addr).await.map_err(|source| HttpListenError::Bind { addr, source })
}

impl Face {
    /// The app of the request's token.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<String, HttpError> {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        let token = bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok())).map(str::trim);
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(HttpError::unauthorized(
                "no app token: send `Authorization: Bearer lsk_…` or `x-api-key: lsk_…` (create one with `llm-sidecar apps add NAME`)",
            ));
        };
        match self.state.ledger.verify_app_token(token) {
            Ok(Some(app)) => Ok(app),
            Ok(None) => Err(HttpError::unauthorized(
                "invalid app token (`llm-sidecar apps list` shows the apps; a removed app's token no longer works)",
            )),
            Err(e) => {
                tracing::error!("cannot check an app token: {e}");
                Err(HttpError::internal("cannot check the app token; see the daemon's log"))
            }
        }
    }
}

/// Reads a request body within `http.max_body_bytes` (the body timeout is the listener's).
pub(crate) async fn read_body(face: &Face, body: Body) -> Result<Bytes, HttpError> {
    axum::body::to_bytes(body, face.max_body_bytes).await.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            HttpError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                crate::rpc::ErrorCode::InvalidRequest,
                format!("the request body is larger than http.max_body_bytes ({} bytes)", face.max_body_bytes),
            )
        } else {
            HttpError::new(
                StatusCode::REQUEST_TIMEOUT,
                crate::rpc::ErrorCode::InvalidRequest,
                "the request body did not arrive in time or was cut off",
            )
        }
    })
}

/// Parses a JSON body, off the async thread when it is large (as the RPC does with large
/// frames: [`crate::daemon::conn::BLOCKING_DECODE`]); the message names the field at fault.
pub(crate) async fn parse_body<T: serde::de::DeserializeOwned + Send + 'static>(body: Bytes) -> Result<T, HttpError> {
    if body.len() <= crate::daemon::conn::BLOCKING_DECODE {
        return parse_json(&body);
    }
    tokio::task::spawn_blocking(move || parse_json(&body))
        .await
        .map_err(|_| HttpError::internal("the request body's parser stopped"))?
}

/// Parses a JSON body; the message names the field at fault.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, HttpError> {
    // Tracking the path costs on every field: only a body that fails is read again to find it.
    if let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let mut msg: String = inner.to_string().chars().take(300).collect();
        if path != "." && !path.is_empty() {
            msg = format!("{path}: {msg}");
        }
        let mut err = HttpError::bad_request(format!("invalid request body: {msg}"));
        if path != "." && !path.is_empty() {
            err = err.with_param(path);
        }
        err
    })
}

/// Seconds since the Unix epoch (OpenAI's `created`).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The dialect of errors for a request that no handler answered yet.
fn dialect_of(path: &str, headers: &HeaderMap) -> Dialect {
    if path.starts_with("/v1/messages") || headers.contains_key("anthropic-version") {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    }
}

/// Whether `host` (a `Host` header) names this machine's loopback.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => {
            host.rsplit_once(':').map_or(host, |(h, p)| if p.chars().all(|c| c.is_ascii_digit()) { h } else { host })
        }
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuses a non-loopback `Host` and an `Origin` that is not allowed, before any handler.
async fn guard(AxState(face): AxState<Arc<Face>>, req: HttpRequest, next: Next) -> Response {
    let headers = req.headers();
    let refuse = |msg: &str| {
        HttpError::new(StatusCode::FORBIDDEN, crate::rpc::ErrorCode::InvalidRequest, msg)
            .response(dialect_of(req.uri().path(), headers))
    };
    if let Some(host) = headers.get(axum::http::header::HOST) {
        if !host.to_str().is_ok_and(loopback_host) {
            return refuse("the HTTP face answers requests for localhost only (the Host header names another host)");
        }
    }
    if let Some(origin) = headers.get(axum::http::header::ORIGIN) {
        let allowed = origin.to_str().is_ok_and(|o| face.cors_origins.iter().any(|a| a == o));
        if !allowed {
            return refuse("requests from web pages are refused unless their origin is in http.cors_origins");
        }
    }
    next.run(req).await
}

async fn not_found(req: HttpRequest) -> Response {
    let path: String = req.uri().path().chars().take(100).collect();
    HttpError::new(
        StatusCode::NOT_FOUND,
        crate::rpc::ErrorCode::MethodNotFound,
        format!("no endpoint {} {path}: the HTTP face serves POST /v1/chat/completions, POST /v1/messages, POST /v1/messages/count_tokens and GET /v1/models", req.method()),
    )
    .response(dialect_of(req.uri().path(), req.headers()))
}

fn router(face: Arc<Face>, cfg: &HttpConfig) -> axum::Router {
    use axum::routing::{get, post};
    use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
    let mut app = axum::Router::new()
        .route("/v1/chat/completions", post(openai::completions))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/v1/models", get(models::list))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(face.clone(), guard))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(Duration::from_secs(cfg.body_timeout_secs)));
    if !cfg.cors_origins.is_empty() {
        let origins: Vec<HeaderValue> = cfg.cors_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
        app = app.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST])
                .allow_headers(AllowHeaders::mirror_request())
                .max_age(Duration::from_secs(600)),
        );
    }
    app.with_state(face)
}

/// Serves the HTTP face on `listener` until `state.shutdown`; then stops accepting and gives
/// open connections `daemon.shutdown_grace_secs` to finish.
pub async fn serve(state: Arc<State>, listener: TcpListener) {
    let cfg = state.config().http.clone();
    let face = Arc::new(Face {
        state: state.clone(),
        max_body_bytes: cfg.max_body_bytes,
        cors_origins: cfg.cors_origins.clone(),
    });
    let app = router(face, &cfg);
    let limit = Arc::new(Semaphore::new(cfg.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "HTTP face listening");
    }
    loop {
        let permit = tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => break,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let accepted = tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("HTTP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(cfg.header_timeout_secs))
            .max_header_size(cfg.max_header_bytes)
            .max_headers(100);
        let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        state.front_doors.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("HTTP connection ended: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    let grace = Duration::from_secs(state.config().daemon.shutdown_grace_secs);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("HTTP calls still running after the grace period");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for ok in ["localhost", "localhost:8931", "127.0.0.1:1", "[::1]:8931", "127.0.0.1", "LOCALHOST:80"] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in ["evil.example:8931", "192.168.0.2:8931", "localhost.evil.example", "[2001:db8::1]:80", ""] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }
}
