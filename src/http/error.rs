//! Errors of the HTTP face, in each dialect's own shape.
//!
//! Every error starts as the RPC's structured error (`{code, message, data}`, the one mapping of
//! domain errors in [`crate::api`]) and gets an HTTP status from its code:
//! `invalid_params`/`invalid_request` 400, `unauthorized` 401, `tier_required` 403, `quota_exceeded`
//! 429 (`insufficient_quota`, `x-should-retry: false`), `rate_limited` 429 with `Retry-After`
//! and `retry-after-ms`, `provider_error` 502, `key_missing`/`vault_locked`/`shutting_down` 503,
//! anything else 500. The body is OpenAI's `{error: {message, type, code, param}}` or
//! Anthropic's `{type: "error", error: {type, message}}`; both carry the daemon's own
//! `{code, data}` under `error.llm_sidecar` so an app can build an upgrade prompt from it.
//! Invariant: messages never echo a token or a header value.

use crate::rpc::{ErrorCode, RpcError};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// Which API's shapes a response uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

/// One error answer, before it takes a dialect's shape (boxed: results stay small).
#[derive(Debug, Clone)]
pub struct HttpError(Box<Detail>);

/// What an [`HttpError`] holds.
#[derive(Debug, Clone)]
pub struct Detail {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// The request field at fault (OpenAI's `param`).
    pub param: Option<String>,
    pub data: Value,
    pub retry_after_ms: Option<u64>,
}

impl std::ops::Deref for HttpError {
    type Target = Detail;
    fn deref(&self) -> &Detail {
        &self.0
    }
}

impl std::ops::DerefMut for HttpError {
    fn deref_mut(&mut self) -> &mut Detail {
        &mut self.0
    }
}

impl HttpError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> HttpError {
        HttpError(Box::new(Detail {
            status,
            code,
            message: message.into(),
            param: None,
            data: json!({}),
            retry_after_ms: None,
        }))
    }

    pub fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidParams, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    pub fn internal(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, message)
    }

    pub fn with_param(mut self, param: impl Into<String>) -> HttpError {
        self.param = Some(param.into());
        self
    }

    /// The status of an RPC error code (module docs).
    pub fn status_of(code: &ErrorCode) -> StatusCode {
        match code {
            ErrorCode::InvalidParams | ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::TierRequired => StatusCode::FORBIDDEN,
            ErrorCode::InsufficientCredits => StatusCode::PAYMENT_REQUIRED,
            ErrorCode::QuotaExceeded | ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::ProviderError => StatusCode::BAD_GATEWAY,
            ErrorCode::KeyMissing | ErrorCode::VaultLocked | ErrorCode::ShuttingDown | ErrorCode::Cancelled => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorCode::MethodNotFound => StatusCode::NOT_FOUND,
            ErrorCode::ConfigInvalid | ErrorCode::Internal | ErrorCode::Other(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether an SDK should retry it by itself (both official SDKs honour `x-should-retry`).
    fn should_retry(&self) -> bool {
        matches!(self.code, ErrorCode::RateLimited | ErrorCode::ProviderError | ErrorCode::ShuttingDown)
    }

    /// OpenAI's `type` and `code`.
    fn openai_kind(&self) -> (&'static str, String) {
        match (&self.code, self.status) {
            (ErrorCode::QuotaExceeded, _) => ("insufficient_quota", "insufficient_quota".into()),
            (ErrorCode::InsufficientCredits, _) => ("insufficient_quota", "insufficient_credits".into()),
            (ErrorCode::RateLimited, _) => ("requests", "rate_limit_exceeded".into()),
            (ErrorCode::Unauthorized, _) => ("invalid_request_error", "invalid_api_key".into()),
            (ErrorCode::TierRequired, _) => ("permission_error", "tier_required".into()),
            (c, s) if s.is_client_error() => ("invalid_request_error", c.as_str().to_string()),
            (c, _) => ("server_error", c.as_str().to_string()),
        }
    }

    /// Anthropic's error `type`.
    fn anthropic_kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 => "overloaded_error",
            s if (400..500).contains(&s) => "invalid_request_error",
            _ => "api_error",
        }
    }

    /// The JSON body in `dialect`'s shape (also what a stream sends as its error event).
    pub fn body(&self, dialect: Dialect) -> Value {
        let ours = json!({"code": self.code.as_str(), "data": self.data});
        match dialect {
            Dialect::OpenAi => {
                let (kind, code) = self.openai_kind();
                json!({"error": {
                    "message": self.message, "type": kind, "code": code, "param": self.param, "llm_sidecar": ours,
                }})
            }
            Dialect::Anthropic => json!({
                "type": "error",
                "error": {"type": self.anthropic_kind(), "message": self.message, "llm_sidecar": ours},
            }),
        }
    }

    pub fn response(&self, dialect: Dialect) -> Response {
        let mut r = (self.status, axum::Json(self.body(dialect))).into_response();
        let h = r.headers_mut();
        if let Some(ms) = self.retry_after_ms {
            let secs = ms.div_ceil(1000).max(1);
            h.insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
            h.insert(HeaderName::from_static("retry-after-ms"), HeaderValue::from(ms));
        }
        h.insert(
            HeaderName::from_static("x-should-retry"),
            HeaderValue::from_static(if self.should_retry() { "true" } else { "false" }),
        );
        r
    }
}

impl From<RpcError> for HttpError {
    fn from(e: RpcError) -> HttpError {
        let data = serde_json::to_value(&e.data).unwrap_or_else(|_| json!({}));
        let retry_after_ms =
            data.get("retry_after_ms").and_then(Value::as_u64).filter(|_| e.code == ErrorCode::RateLimited);
        HttpError(Box::new(Detail {
            status: HttpError::status_of(&e.code),
            code: e.code,
            message: e.message,
            param: None,
            data,
            retry_after_ms,
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn each_dialect_has_its_shape() {
        let e = HttpError::from(
            RpcError::new(ErrorCode::RateLimited, "slow down").with_data(&json!({"retry_after_ms": 1500})),
        );
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        let r = e.response(Dialect::OpenAi);
        assert_eq!(r.headers()["retry-after"], "2");
        assert_eq!(r.headers()["retry-after-ms"], "1500");
        let b = e.body(Dialect::OpenAi);
        assert_eq!(b["error"]["code"], "rate_limit_exceeded");
        assert_eq!(b["error"]["llm_sidecar"]["data"]["retry_after_ms"], 1500);
        let a = e.body(Dialect::Anthropic);
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "rate_limit_error");
        let q = HttpError::from(RpcError::new(ErrorCode::QuotaExceeded, "used up"));
        assert_eq!(q.body(Dialect::OpenAi)["error"]["type"], "insufficient_quota");
        assert_eq!(q.response(Dialect::Anthropic).headers()["x-should-retry"], "false");
        assert_eq!(HttpError::status_of(&ErrorCode::TierRequired), StatusCode::FORBIDDEN);
        assert_eq!(HttpError::status_of(&ErrorCode::ProviderError), StatusCode::BAD_GATEWAY);
        let c = HttpError::from(RpcError::new(ErrorCode::InsufficientCredits, "needs 3"));
        assert_eq!(c.status, StatusCode::PAYMENT_REQUIRED);
        assert_eq!(c.body(Dialect::OpenAi)["error"]["code"], "insufficient_credits");
        assert_eq!(c.body(Dialect::Anthropic)["error"]["type"], "invalid_request_error");
    }
}
