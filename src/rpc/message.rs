//! MessagePack-RPC message shapes (the spec Neovim speaks).
//!
//! - request `[0, msgid, method, params]`
//! - response `[1, msgid, error | nil, result | nil]`
//! - notification `[2, method, params]`
//!
//! Decoding turns any well-formed MessagePack value into a [`Message`] or a [`MessageError`] that
//! says, where it can, which msgid the bad request carried so the daemon can answer it.

use crate::rpc::RpcError;
use rmpv::Value;

pub const REQUEST: u64 = 0;
pub const RESPONSE: u64 = 1;
pub const NOTIFICATION: u64 = 2;

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request { id: u32, method: String, params: Vec<Value> },
    Response { id: u32, result: Result<Value, RpcError> },
    Notification { method: String, params: Vec<Value> },
}

/// A value that is not a valid message. `id` is set when the value was recognisably a request,
/// so the error can be answered instead of closing the connection.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}")]
pub struct MessageError {
    pub id: Option<u32>,
    pub reason: String,
}

fn bad(id: Option<u32>, reason: impl Into<String>) -> MessageError {
    MessageError { id, reason: reason.into() }
}

fn params_of(v: Value, id: Option<u32>) -> Result<Vec<Value>, MessageError> {
    match v {
        Value::Array(items) => Ok(items),
        other => Err(bad(id, format!("params must be an array, got {}", kind(&other)))),
    }
}

/// Short name of a value's type for error messages (never the value itself: it may be a secret).
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "boolean",
        Value::Integer(_) => "integer",
        Value::F32(_) | Value::F64(_) => "float",
        Value::String(_) => "string",
        Value::Binary(_) => "binary",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        Value::Ext(..) => "ext",
    }
}

impl Message {
    pub fn from_value(v: Value) -> Result<Message, MessageError> {
        let Value::Array(items) = v else {
            return Err(bad(None, format!("a message must be an array, got {}", kind(&v))));
        };
        let mut it = items.into_iter();
        let ty = it.next().and_then(|t| t.as_u64());
        match ty {
            Some(REQUEST) => {
                let id = it.next().and_then(|i| i.as_u64()).and_then(|i| u32::try_from(i).ok());
                let Some(id) = id else { return Err(bad(None, "request msgid must be an unsigned 32-bit integer")) };
                let method = match it.next() {
                    Some(Value::String(s)) => {
                        s.into_str().ok_or_else(|| bad(Some(id), "method name is not valid UTF-8"))?
                    }
                    Some(other) => return Err(bad(Some(id), format!("method must be a string, got {}", kind(&other)))),
                    None => return Err(bad(Some(id), "request needs 4 elements: [0, msgid, method, params]")),
                };
                let params =
                    it.next().ok_or_else(|| bad(Some(id), "request needs 4 elements: [0, msgid, method, params]"))?;
                if it.next().is_some() {
                    return Err(bad(Some(id), "request has more than 4 elements"));
                }
                Ok(Message::Request { id, method, params: params_of(params, Some(id))? })
            }
            Some(RESPONSE) => {
                let id = it.next().and_then(|i| i.as_u64()).and_then(|i| u32::try_from(i).ok());
                let (Some(id), Some(error), Some(result), None) = (id, it.next(), it.next(), it.next()) else {
                    return Err(bad(None, "response must be [1, msgid, error, result]"));
                };
                let result = if error.is_nil() { Ok(result) } else { Err(RpcError::from_value(&error)) };
                Ok(Message::Response { id, result })
            }
            Some(NOTIFICATION) => {
                let method = it.next().and_then(|m| m.as_str().map(str::to_string));
                let (Some(method), Some(params), None) = (method, it.next(), it.next()) else {
                    return Err(bad(None, "notification must be [2, method, params]"));
                };
                Ok(Message::Notification { method, params: params_of(params, None)? })
            }
            _ => Err(bad(None, "message type must be 0 (request), 1 (response) or 2 (notification)")),
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            Message::Request { id, method, params } => Value::Array(vec![
                Value::from(REQUEST),
                Value::from(*id),
                Value::from(method.as_str()),
                Value::Array(params.clone()),
            ]),
            Message::Response { id, result } => {
                let (err, res) = match result {
                    Ok(v) => (Value::Nil, v.clone()),
                    Err(e) => (e.to_value(), Value::Nil),
                };
                Value::Array(vec![Value::from(RESPONSE), Value::from(*id), err, res])
            }
            Message::Notification { method, params } => Value::Array(vec![
                Value::from(NOTIFICATION),
                Value::from(method.as_str()),
                Value::Array(params.clone()),
            ]),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        encode_value(&self.to_value())
    }

    /// Decodes one frame as produced by [`crate::rpc::codec::FrameReader`].
    pub fn decode(frame: &[u8]) -> Result<Message, MessageError> {
        let mut rd = frame;
        // rmpv spends two units of its depth budget per container level and up to three on a
        // leaf, so this budget never refuses a frame the scanner let through (at most MAX_DEPTH
        // levels); it only bounds the recursion should a frame reach here unscanned.
        let v = rmpv::decode::read_value_with_max_depth(&mut rd, 2 * crate::rpc::codec::MAX_DEPTH + 4)
            .map_err(|e| bad(None, format!("undecodable MessagePack: {e}")))?;
        Message::from_value(v)
    }
}

/// Encodes a value; writing to a `Vec` cannot fail.
pub fn encode_value(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let _ = rmpv::encode::write_value(&mut out, v);
    out
}

/// Encodes a successful response whose result is already MessagePack bytes (no re-encoding).
pub fn encode_response_raw(id: u32, result: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(result.len() + 8);
    let _ = rmp::encode::write_array_len(&mut out, 4);
    let _ = rmp::encode::write_uint(&mut out, RESPONSE);
    let _ = rmp::encode::write_uint(&mut out, u64::from(id));
    let _ = rmp::encode::write_nil(&mut out);
    out.extend_from_slice(result);
    out
}

/// Encodes an error response.
pub fn encode_error_response(id: u32, err: &RpcError) -> Vec<u8> {
    Message::Response { id, result: Err(err.clone()) }.encode()
}

/// Encodes an error response whose error is a plain string (the style Neovim's `rpcrequest`
/// can show; see `daemon.hello {errors: "string"}`).
pub fn encode_error_string_response(id: u32, text: &str) -> Vec<u8> {
    encode_value(&Value::Array(vec![Value::from(RESPONSE), Value::from(id), Value::from(text), Value::Nil]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_all_kinds() {
        let msgs = [
            Message::Request { id: 7, method: "daemon.info".into(), params: vec![] },
            Message::Response { id: 7, result: Ok(Value::from("ok")) },
            Message::Response { id: 8, result: Err(RpcError::invalid_params("nope")) },
            Message::Notification { method: "$/cancel".into(), params: vec![Value::from(7)] },
        ];
        for m in msgs {
            assert_eq!(Message::decode(&m.encode()).expect("decode"), m);
        }
    }

    #[test]
    fn raw_response_matches_value_encoding() {
        let result = encode_value(&Value::from("hi"));
        let raw = encode_response_raw(9, &result);
        assert_eq!(raw, Message::Response { id: 9, result: Ok(Value::from("hi")) }.encode());
    }

    #[test]
    fn reports_msgid_of_bad_requests() {
        let v = Value::Array(vec![Value::from(0), Value::from(5), Value::from(3), Value::Array(vec![])]);
        assert_eq!(Message::from_value(v).expect_err("bad").id, Some(5));
        let v = Value::Array(vec![Value::from(0), Value::from(6), Value::from("m"), Value::from(1)]);
        let e = Message::from_value(v).expect_err("bad");
        assert_eq!(e.id, Some(6));
        assert!(e.reason.contains("params must be an array"));
        assert_eq!(Message::from_value(Value::from(1)).expect_err("bad").id, None);
        let v = Value::Array(vec![Value::from(0), Value::from(-1), Value::from("m"), Value::Array(vec![])]);
        assert_eq!(Message::from_value(v).expect_err("bad").id, None);
    }
}
