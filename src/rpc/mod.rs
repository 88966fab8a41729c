//! MessagePack-RPC: framing ([`codec`]), message shapes ([`message`]), the error object
//! ([`error`]), socket discovery ([`socket_path`]) and a small async [`client::Client`] shared by
//! the CLI and the tests.
//!
//! Result maps are always encoded with field names (`rmp_serde::to_vec_named`), so clients built
//! against an older protocol tolerate fields added later.

pub mod client;
pub mod codec;
pub mod error;
pub mod message;

pub use client::{Client, ClientError};
pub use error::{ErrorCode, RpcError};
pub use message::Message;

use rmpv::Value;
use serde::{de::DeserializeOwned, Serialize};
use std::path::PathBuf;

/// Protocol revision, bumped on any incompatible change to messages, methods or error shapes.
pub const PROTOCOL: u32 = 1;

/// A result already encoded as MessagePack (a map with field names, or any value).
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded(pub Vec<u8>);

impl Encoded {
    pub fn value(value: &Value) -> Encoded {
        Encoded(message::encode_value(value))
    }

    /// Encodes a serializable value with field names.
    pub fn named<T: Serialize + ?Sized>(value: &T) -> Result<Encoded, RpcError> {
        rmp_serde::to_vec_named(value)
            .map(Encoded)
            .map_err(|e| RpcError::internal(format!("could not encode result: {e}")))
    }
}

/// Converts a serializable value into a [`Value`] with maps keyed by field name.
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, RpcError> {
    let bytes = Encoded::named(value)?.0;
    rmpv::decode::read_value(&mut &bytes[..]).map_err(|e| RpcError::internal(format!("could not re-read value: {e}")))
}

/// Reads a value into a typed struct (maps by field name; enums as their variant strings).
///
/// Goes through `rmp_serde` rather than `rmpv::ext`, whose deserializer cannot read unit enum
/// variants sent as strings.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    rmp_serde::from_slice(&message::encode_value(&value)).map_err(|e| e.to_string())
}

/// Converts JSON into a MessagePack value (integers stay integers).
pub fn json_to_value(j: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match j {
        J::Null => Value::Nil,
        J::Bool(b) => Value::from(*b),
        J::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Value::from(u),
            (None, Some(i)) => Value::from(i),
            _ => Value::from(n.as_f64().unwrap_or(0.0)),
        },
        J::String(s) => Value::from(s.as_str()),
        J::Array(a) => Value::Array(a.iter().map(json_to_value).collect()),
        J::Object(o) => Value::Map(o.iter().map(|(k, v)| (Value::from(k.as_str()), json_to_value(v))).collect()),
    }
}

/// The reverse of [`json_to_value`]; values JSON cannot hold (binary, NaN) become `null`.
pub fn value_to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(i) => i.as_u64().map(J::from).or_else(|| i.as_i64().map(J::from)).unwrap_or(J::Null),
        Value::F32(f) => serde_json::Number::from_f64(f64::from(*f)).map_or(J::Null, J::Number),
        Value::F64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::String(s) => s.as_str().map_or(J::Null, |s| J::String(s.to_string())),
        Value::Array(a) => J::Array(a.iter().map(value_to_json).collect()),
        Value::Map(m) => {
            J::Object(m.iter().filter_map(|(k, v)| k.as_str().map(|k| (k.to_string(), value_to_json(v)))).collect())
        }
        Value::Binary(_) | Value::Ext(..) => J::Null,
    }
}

/// Parses the conventional params array: `[]`, `[nil]` or `[{...}]`.
///
/// `[]` and `[nil]` are read as an empty map, so a struct whose fields are all optional accepts
/// them and a struct with required fields reports exactly which field is missing.
pub fn parse_params<T: DeserializeOwned>(params: Vec<Value>) -> Result<T, RpcError> {
    if params.len() > 1 {
        return Err(RpcError::invalid_params(format!("expected one map argument, got {} arguments", params.len())));
    }
    let arg = params.into_iter().next().unwrap_or(Value::Nil);
    let arg = match arg {
        Value::Nil => Value::Map(Vec::new()),
        Value::Map(m) => Value::Map(m),
        other => {
            return Err(RpcError::invalid_params(format!("expected a map argument, got {}", message::kind(&other))))
        }
    };
    from_value(arg).map_err(|e| RpcError::invalid_params(format!("invalid params: {e}")))
}

/// Where the daemon listens, resolved as design §6 says: an explicit path, else
/// `$LLM_SIDECAR_SOCK`, else `$XDG_RUNTIME_DIR/llm-sidecar/sock`, else a per-user directory in the
/// temp dir. Daemon and clients use this same function.
pub fn socket_path(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(p) = explicit {
        return p;
    }
    if let Some(p) = std::env::var_os("LLM_SIDECAR_SOCK").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("llm-sidecar").join("sock");
    }
    let uid = rustix::process::getuid().as_raw();
    std::env::temp_dir().join(format!("llm-sidecar-{uid}")).join("sock")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct P {
        app: String,
        version: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    struct AllOptional {
        verbose: Option<bool>,
    }

    #[test]
    fn params_conventions() {
        let map = Value::Map(vec![(Value::from("app"), Value::from("nvim"))]);
        let p: P = parse_params(vec![map]).expect("ok");
        assert_eq!(p, P { app: "nvim".into(), version: None });
        let e = parse_params::<P>(vec![]).expect_err("missing");
        assert_eq!(e.code, ErrorCode::InvalidParams);
        assert!(e.message.contains("app"), "{}", e.message);
        assert_eq!(parse_params::<AllOptional>(vec![]).expect("empty ok"), AllOptional::default());
        assert_eq!(parse_params::<AllOptional>(vec![Value::Nil]).expect("nil ok"), AllOptional::default());
        let wrong = Value::Map(vec![(Value::from("app"), Value::from(3))]);
        assert_eq!(parse_params::<P>(vec![wrong]).expect_err("type").code, ErrorCode::InvalidParams);
        assert_eq!(parse_params::<P>(vec![Value::from(1)]).expect_err("not map").code, ErrorCode::InvalidParams);
        assert!(parse_params::<AllOptional>(vec![Value::Nil, Value::Nil]).is_err());
    }

    #[test]
    fn enums_read_from_strings() {
        #[derive(Debug, Deserialize, PartialEq)]
        #[serde(rename_all = "lowercase")]
        enum Period {
            Day,
            Month,
        }
        #[derive(Debug, Deserialize)]
        struct Q {
            period: Period,
        }
        let q: Q = parse_params(vec![Value::Map(vec![(Value::from("period"), Value::from("month"))])]).expect("ok");
        assert_eq!(q.period, Period::Month);
        let e =
            parse_params::<Q>(vec![Value::Map(vec![(Value::from("period"), Value::from("year"))])]).expect_err("bad");
        assert!(e.message.contains("year"), "{}", e.message);
    }

    #[test]
    fn encoded_maps_use_field_names() {
        #[derive(Serialize)]
        struct R {
            version: &'static str,
        }
        let v = to_value(&R { version: "1" }).expect("value");
        assert_eq!(v, Value::Map(vec![(Value::from("version"), Value::from("1"))]));
    }
}
