//! What can go wrong talking to a provider, and whether trying again can help.
//!
//! [`ProviderError::is_retryable`] drives the router: connect errors, timeouts, dropped
//! connections, malformed bodies, 408/429/500/502/503/504/529 and error events of type
//! `overloaded_error` / `rate_limit_error` / `api_error` are retryable; other 4xx are not. A
//! retry hint comes from `retry-after-ms`, `Retry-After` (seconds or HTTP date) or Google's
//! `RetryInfo.retryDelay` in the body. Messages carry the provider's text, never key material
//! (the router also redacts the key from them).

use reqwest::header::HeaderMap;
use std::time::{Duration, SystemTime};

/// Longest provider message kept in an error (the rest is cut).
const MAX_MESSAGE: usize = 500;

/// The kind of a [`ProviderError`], as attempts and usage records name it (snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    BadRequest,
    ConnectError,
    Timeout,
    ConnectionLost,
    KeyInvalid,
    RateLimited,
    ServerError,
    Rejected,
    StreamError,
    Malformed,
    Unsupported,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::BadRequest => "bad_request",
            FailureKind::ConnectError => "connect_error",
            FailureKind::Timeout => "timeout",
            FailureKind::ConnectionLost => "connection_lost",
            FailureKind::KeyInvalid => "key_invalid",
            FailureKind::RateLimited => "rate_limited",
            FailureKind::ServerError => "server_error",
            FailureKind::Rejected => "rejected",
            FailureKind::StreamError => "stream_error",
            FailureKind::Malformed => "malformed",
            FailureKind::Unsupported => "unsupported",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// The request could not be built (bad config, bad URL); never retried.
    #[error("cannot build the request: {0}")]
    Request(String),
    #[error("cannot connect: {0}")]
    Connect(String),
    /// No answer in time: `what` says which timeout fired.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// The connection broke (reset, closed early, unreadable body).
    #[error("connection lost: {0}")]
    Transport(String),
    /// A non-2xx HTTP answer.
    #[error("HTTP {status}: {message}")]
    Http { status: u16, message: String, code: Option<String>, retry_after: Option<Duration> },
    /// An error event inside a 2xx stream.
    #[error("error in stream: {message}")]
    Stream { status: Option<u16>, code: Option<String>, message: String, retryable: bool },
    /// The provider sent something that is not its wire format.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The request uses a feature this wire format (or provider) lacks; never retried, and the
    /// app is told which (`invalid_params` with `data.feature`).
    #[error("{feature} is not supported by this provider's API")]
    Unsupported { feature: &'static str },
}

impl ProviderError {
    /// Whether the same request may succeed if sent again (to this target or another).
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Request(_) | ProviderError::Unsupported { .. } => false,
            ProviderError::Connect(_)
            | ProviderError::Timeout(_)
            | ProviderError::Transport(_)
            | ProviderError::Malformed(_) => true,
            ProviderError::Http { status, .. } => retryable_status(*status),
            ProviderError::Stream { retryable, .. } => *retryable,
        }
    }

    /// The provider rejected the key.
    pub fn is_auth(&self) -> bool {
        matches!(self.status(), Some(401 | 403))
    }

    /// The HTTP (or in-stream) status, when there is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ProviderError::Http { status, .. } => Some(*status),
            ProviderError::Stream { status, .. } => *status,
            _ => None,
        }
    }

    /// How long the provider asked us to wait before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// What kind of failure this is, for attempts, records and logs.
    pub fn kind(&self) -> FailureKind {
        match self {
            ProviderError::Request(_) => FailureKind::BadRequest,
            ProviderError::Connect(_) => FailureKind::ConnectError,
            ProviderError::Timeout(_) => FailureKind::Timeout,
            ProviderError::Transport(_) => FailureKind::ConnectionLost,
            ProviderError::Http { status: 401 | 403, .. } => FailureKind::KeyInvalid,
            ProviderError::Http { status: 429, .. } => FailureKind::RateLimited,
            ProviderError::Http { status, .. } if *status >= 500 => FailureKind::ServerError,
            ProviderError::Http { .. } => FailureKind::Rejected,
            ProviderError::Stream { .. } => FailureKind::StreamError,
            ProviderError::Malformed(_) => FailureKind::Malformed,
            ProviderError::Unsupported { .. } => FailureKind::Unsupported,
        }
    }

    /// Replaces every occurrence of `secret` in the message (providers sometimes echo keys).
    pub fn redact(self, secret: &str) -> ProviderError {
        if secret.len() < 4 {
            return self;
        }
        let r = |s: String| if s.contains(secret) { s.replace(secret, "[redacted]") } else { s };
        match self {
            ProviderError::Request(m) => ProviderError::Request(r(m)),
            ProviderError::Connect(m) => ProviderError::Connect(r(m)),
            ProviderError::Transport(m) => ProviderError::Transport(r(m)),
            ProviderError::Malformed(m) => ProviderError::Malformed(r(m)),
            ProviderError::Http { status, message, code, retry_after } => {
                ProviderError::Http { status, message: r(message), code, retry_after }
            }
            ProviderError::Stream { status, code, message, retryable } => {
                ProviderError::Stream { status, code, message: r(message), retryable }
            }
            e @ (ProviderError::Timeout(_) | ProviderError::Unsupported { .. }) => e,
        }
    }

    /// Maps a reqwest failure (no key material: reqwest never prints headers).
    pub fn from_reqwest(e: &reqwest::Error) -> ProviderError {
        let text = without_url(e);
        if e.is_timeout() {
            ProviderError::Timeout("waiting for the provider")
        } else if e.is_connect() {
            ProviderError::Connect(text)
        } else if e.is_builder() {
            ProviderError::Request(text)
        } else {
            ProviderError::Transport(text)
        }
    }
}

/// The statuses worth retrying: 408, 429, 500, 502, 503, 504 and Anthropic's 529.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504 | 529)
}

/// Error-event types (Anthropic/OpenAI style) that mean "try again".
pub fn retryable_error_type(kind: &str) -> bool {
    matches!(
        kind,
        "overloaded_error"
            | "rate_limit_error"
            | "rate_limit_exceeded"
            | "api_error"
            | "server_error"
            | "timeout_error"
    )
}

fn without_url(e: &reqwest::Error) -> String {
    // Query strings never carry keys here (keys go in headers), but keep messages short anyway.
    let mut text = e.to_string();
    if let Some(src) = std::error::Error::source(e) {
        text = format!("{text}: {src}");
    }
    truncate(text)
}

pub(crate) fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Classifies a non-2xx answer from any of the supported wire formats.
///
/// Reads `error.message` / `error.type` / `error.code` / `error.status` (OpenAI, Anthropic,
/// Google envelopes) and the retry hints described in the module doc.
pub fn classify_http(status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let err = json.as_ref().and_then(|j| j.get("error"));
    let message = err
        .and_then(|e| e.get("message").and_then(|m| m.as_str()).or_else(|| e.as_str()))
        .map(str::to_string)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body).trim().to_string();
            if text.is_empty() {
                format!("status {status}")
            } else {
                text
            }
        });
    let code = err.and_then(|e| {
        e.get("type")
            .and_then(|t| t.as_str())
            .or_else(|| e.get("status").and_then(|s| s.as_str()))
            .or_else(|| e.get("code").and_then(|c| c.as_str()))
            .map(str::to_string)
    });
    let retry_after = retry_after_headers(headers).or_else(|| err.and_then(google_retry_delay));
    ProviderError::Http { status, message: truncate(message), code, retry_after }
}

/// No cap on a provider's retry hint here: the router compares it with
/// `router.max_retry_after_ms` and moves on to the next target when it is longer, so capping it
/// would hide that. (Values too large for a `Duration` become `Duration::MAX`.)
const RETRY_HINT_CAP: Duration = Duration::MAX;

/// `retry-after-ms` (OpenAI, Anthropic) wins over `Retry-After` (seconds or an HTTP date).
pub fn retry_after_headers(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(d) = text("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|ms| crate::retry::seconds(ms / 1000.0, RETRY_HINT_CAP))
    {
        return Some(d);
    }
    crate::retry::parse_retry_after(text("retry-after")?, SystemTime::now(), RETRY_HINT_CAP)
}

/// Google's `details[] {@type: ...RetryInfo, retryDelay: "34.4s"}`.
fn google_retry_delay(err: &serde_json::Value) -> Option<Duration> {
    let details = err.get("details")?.as_array()?;
    details.iter().find_map(|d| {
        let ty = d.get("@type")?.as_str()?;
        if !ty.ends_with("google.rpc.RetryInfo") {
            return None;
        }
        let secs = d.get("retryDelay")?.as_str()?.strip_suffix('s')?.parse::<f64>().ok()?;
        crate::retry::seconds(secs, RETRY_HINT_CAP)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn gemini_429_retry_info_from_body() {
        let body = crate::providers::test_support::fixture("gemini_error_429_retryinfo.json");
        let e = classify_http(429, &HeaderMap::new(), &body);
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_millis(34_400)));
        assert_eq!(e.status(), Some(429));
        assert_eq!(e.kind(), FailureKind::RateLimited);
        match &e {
            ProviderError::Http { message, code, .. } => {
                assert!(message.starts_with("You exceeded your current quota"), "{message}");
                assert_eq!(code.as_deref(), Some("RESOURCE_EXHAUSTED"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_headers_in_all_forms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after_headers(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after_headers(&h), Some(Duration::from_millis(150)));
        let mut h = HeaderMap::new();
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        h.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        let d = retry_after_headers(&h).unwrap();
        assert!(d > Duration::from_secs(27) && d <= Duration::from_secs(30), "{d:?}");
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after_headers(&h), None);
        // A bad retry-after-ms falls back to Retry-After; absurd values do not panic.
        h.insert("retry-after", HeaderValue::from_static("3"));
        h.insert("retry-after-ms", HeaderValue::from_static("-5"));
        assert_eq!(retry_after_headers(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", HeaderValue::from_static("1e300"));
        assert_eq!(retry_after_headers(&h), Some(Duration::MAX));
        h.remove("retry-after-ms");
        h.insert("retry-after", HeaderValue::from_static("1e300"));
        assert_eq!(retry_after_headers(&h), Some(Duration::MAX));
    }

    #[test]
    fn statuses_and_anthropic_overload() {
        for s in [408, 429, 500, 502, 503, 504, 529] {
            assert!(classify_http(s, &HeaderMap::new(), b"").is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 422] {
            assert!(!classify_http(s, &HeaderMap::new(), b"").is_retryable(), "{s}");
        }
        let body = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let e = classify_http(529, &HeaderMap::new(), body);
        assert!(e.is_retryable());
        assert_eq!(e.to_string(), "HTTP 529: Overloaded");
        assert!(classify_http(401, &HeaderMap::new(), b"{}").is_auth());
    }

    #[test]
    fn redacts_echoed_keys() {
        let e = classify_http(
            401,
            &HeaderMap::new(),
            br#"{"error":{"message":"Incorrect API key provided: sk-abc123456"}}"#,
        );
        let e = e.redact("sk-abc123456");
        assert_eq!(e.to_string(), "HTTP 401: Incorrect API key provided: [redacted]");
    }
}
