//! The error object every failed call returns: `{code, message, data}`.
//!
//! Codes are stable snake_case strings (docs/protocol.md lists them); clients branch on `code`
//! and read details from `data`, never from `message`. Messages never contain key material.

use rmpv::Value;
use serde::Serialize;
use std::fmt;

/// Stable error codes. Unknown codes received by a client are kept as [`ErrorCode::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidRequest,
    MethodNotFound,
    InvalidParams,
    Unauthorized,
    VaultLocked,
    KeyMissing,
    TierRequired,
    QuotaExceeded,
    /// The call draws on prepaid credits and the balance does not cover it.
    InsufficientCredits,
    RateLimited,
    ProviderError,
    Cancelled,
    ShuttingDown,
    /// A config file the daemon was asked to load is invalid (`daemon.reload`).
    ConfigInvalid,
    Internal,
    Other(String),
}

impl ErrorCode {
    const KNOWN: [ErrorCode; 15] = [
        ErrorCode::InvalidRequest,
        ErrorCode::MethodNotFound,
        ErrorCode::InvalidParams,
        ErrorCode::Unauthorized,
        ErrorCode::VaultLocked,
        ErrorCode::KeyMissing,
        ErrorCode::TierRequired,
        ErrorCode::QuotaExceeded,
        ErrorCode::InsufficientCredits,
        ErrorCode::RateLimited,
        ErrorCode::ProviderError,
        ErrorCode::Cancelled,
        ErrorCode::ShuttingDown,
        ErrorCode::ConfigInvalid,
        ErrorCode::Internal,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::MethodNotFound => "method_not_found",
            ErrorCode::InvalidParams => "invalid_params",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::VaultLocked => "vault_locked",
            ErrorCode::KeyMissing => "key_missing",
            ErrorCode::TierRequired => "tier_required",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::InsufficientCredits => "insufficient_credits",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ProviderError => "provider_error",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::ConfigInvalid => "config_invalid",
            ErrorCode::Internal => "internal",
            ErrorCode::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> ErrorCode {
        Self::KNOWN.iter().find(|c| c.as_str() == s).cloned().unwrap_or_else(|| ErrorCode::Other(s.to_string()))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A structured RPC error, as sent on the wire.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RpcError {
    pub code: ErrorCode,
    pub message: String,
    /// Always a map (possibly empty).
    pub data: Value,
}

impl RpcError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), data: Value::Map(Vec::new()) }
    }

    /// Adds `data` fields from any serializable map-shaped value (encoded with field names).
    pub fn with_data<T: Serialize>(mut self, data: &T) -> Self {
        if let Ok(v) = crate::rpc::to_value(data) {
            if v.is_map() {
                self.data = v;
            }
        }
        self
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParams, message)
    }

    pub fn method_not_found(method: &str) -> Self {
        #[derive(Serialize)]
        struct Data<'a> {
            method: &'a str,
        }
        Self::new(ErrorCode::MethodNotFound, format!("unknown method `{method}`; daemon.methods lists them"))
            .with_data(&Data { method })
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// The wire form: `{code, message, data}`.
    /// `"<code>: <message>"`, the one-line form of string-style error responses.
    pub fn one_line(&self) -> String {
        format!("{}: {}", self.code.as_str(), self.message)
    }

    pub fn to_value(&self) -> Value {
        Value::Map(vec![
            (Value::from("code"), Value::from(self.code.as_str())),
            (Value::from("message"), Value::from(self.message.as_str())),
            (Value::from("data"), self.data.clone()),
        ])
    }

    /// Reads the wire form; anything that is not a proper error map becomes an `internal` error
    /// describing what was received.
    pub fn from_value(v: &Value) -> Self {
        let field =
            |name: &str| v.as_map().and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(name))).map(|(_, v)| v);
        match (field("code").and_then(Value::as_str), field("message").and_then(Value::as_str)) {
            (Some(code), Some(message)) => Self {
                code: ErrorCode::parse(code),
                message: message.to_string(),
                data: field("data").filter(|d| d.is_map()).cloned().unwrap_or(Value::Map(Vec::new())),
            },
            _ => match v.as_str().and_then(|t| t.split_once(": ")) {
                // The string style of `daemon.hello {errors: "string"}`.
                Some((code, message)) if !code.is_empty() && !code.contains(' ') => {
                    Self::new(ErrorCode::parse(code), message)
                }
                _ => Self::internal(format!("malformed error object: {v}")),
            },
        }
    }

    /// Looks up one field of `data`.
    pub fn data_field(&self, name: &str) -> Option<&Value> {
        self.data.as_map()?.iter().find(|(k, _)| k.as_str() == Some(name)).map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_line_form_reads_back() {
        let e = RpcError::new(ErrorCode::QuotaExceeded, "the monthly quota is used up: 10 of 10");
        let back = RpcError::from_value(&Value::from(e.one_line()));
        assert_eq!(
            (back.code, back.message.as_str()),
            (ErrorCode::QuotaExceeded, "the monthly quota is used up: 10 of 10")
        );
        assert_eq!(RpcError::from_value(&Value::from("no code here")).code, ErrorCode::Internal);
    }

    #[test]
    fn codes_round_trip() {
        for code in ErrorCode::KNOWN {
            assert_eq!(ErrorCode::parse(code.as_str()), code);
        }
        assert_eq!(ErrorCode::parse("future_code"), ErrorCode::Other("future_code".into()));
    }

    #[test]
    fn error_object_round_trips_with_data() {
        #[derive(Serialize)]
        struct D {
            retry_after_ms: u64,
        }
        let e = RpcError::new(ErrorCode::RateLimited, "slow down").with_data(&D { retry_after_ms: 1500 });
        let back = RpcError::from_value(&e.to_value());
        assert_eq!(back, e);
        assert_eq!(back.data_field("retry_after_ms").and_then(Value::as_u64), Some(1500));
        let bad = RpcError::from_value(&Value::from("oops"));
        assert_eq!(bad.code, ErrorCode::Internal);
    }
}
