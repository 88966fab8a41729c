//! Anthropic Messages API (`POST {base}/messages`, `x-api-key`, `anthropic-version`).
//!
//! Stream events: `message_start` (model, input and cache tokens, and an `output_tokens`
//! placeholder that must not be counted), `content_block_delta` (`text_delta`), `ping`,
//! `message_delta` (cumulative usage: output tokens, and on newer servers input and cache
//! tokens too), `message_stop`, `error`. When `usage.iterations` is present (server-side
//! compaction), the billable usage is the sum over the iterations, not the top-level numbers.
//! `input` = uncached input + cache reads + cache writes; `cached` = cache reads.

use super::{
    error::{retryable_error_type, truncate},
    json_post, parse_json, set_secret_header, u64_at, ChatRequest, Completion, Frame, Provider, ProviderError,
    ProviderSpec, StreamDecoder, StreamSummary,
};
use crate::chat::{Delta, FinishReason, Part};
use crate::usage_record::TokenUsage;
use reqwest::header::{HeaderName, HeaderValue};
use secrecy::SecretString;
use serde_json::{json, Value};

/// `max_tokens` is required by the API; used when the app gives none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

pub struct Anthropic;

impl Provider for Anthropic {
    fn build(
        &self,
        spec: &ProviderSpec,
        model: &str,
        req: &ChatRequest,
        stream: bool,
        key: Option<&SecretString>,
    ) -> Result<reqwest::Request, ProviderError> {
        super::text_only(req)?;
        let messages: Vec<Value> =
            req.turns().map(|m| json!({"role": m.role.as_str(), "content": m.joined_text()})).collect();
        let mut body = json!({
            "model": model,
            "max_tokens": req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            "messages": messages,
        });
        if let Some(system) = req.system_text() {
            body["system"] = json!(system);
        }
        if let Some(t) = req.temperature {
            body["temperature"] = json!(t);
        }
        if !req.stop.is_empty() {
            body["stop_sequences"] = json!(req.stop);
        }
        if stream {
            body["stream"] = json!(true);
        }
        let mut request = json_post(spec, &format!("{}/messages", spec.base()), &body)?;
        let version = HeaderValue::from_str(&spec.api_version).map_err(|_| {
            ProviderError::Request(format!("providers.{}.api_version is not a valid header", spec.name))
        })?;
        request.headers_mut().insert(HeaderName::from_static("anthropic-version"), version);
        if let Some(key) = key {
            set_secret_header(&mut request, "x-api-key", "", key)?;
        }
        Ok(request)
    }

    fn parse_body(&self, body: &[u8]) -> Result<Completion, ProviderError> {
        let v = parse_json(body)?;
        if v.get("type").and_then(Value::as_str) == Some("error") {
            return Err(error_event(&v));
        }
        let blocks = v
            .get("content")
            .and_then(Value::as_array)
            .ok_or_else(|| ProviderError::Malformed("no `content` array in the response".into()))?;
        let content: String = blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect();
        Ok(Completion {
            parts: vec![Part::Text { text: content }],
            finish_reason: v.get("stop_reason").and_then(Value::as_str).map(finish_reason),
            model: v.get("model").and_then(Value::as_str).map(str::to_string),
            usage: self.body_usage(&v),
            provider_cost_microusd: None,
        })
    }

    fn body_usage(&self, body: &Value) -> Option<TokenUsage> {
        body.get("usage").filter(|u| u.is_object()).map(|u| final_usage(&Parts::default(), u))
    }

    fn decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(Decoder::default())
    }
}

/// Uncached input, cache reads, cache writes, output.
#[derive(Debug, Clone, Copy, Default)]
struct Parts {
    input: u64,
    cache_read: u64,
    cache_write: u64,
    output: u64,
}

fn parts(u: &Value) -> Parts {
    Parts {
        input: u64_at(u, &["input_tokens"]).unwrap_or(0),
        cache_read: u64_at(u, &["cache_read_input_tokens"]).unwrap_or(0),
        cache_write: u64_at(u, &["cache_creation_input_tokens"]).unwrap_or(0),
        output: u64_at(u, &["output_tokens"]).unwrap_or(0),
    }
}

fn to_usage(p: Parts) -> TokenUsage {
    TokenUsage {
        input: p.input.saturating_add(p.cache_read).saturating_add(p.cache_write),
        output: p.output,
        cached: p.cache_read,
        cache_write: p.cache_write,
        reasoning: 0,
        estimated: false,
    }
}

/// The billable usage from a final `usage` object (`message_delta` or a whole message), with
/// fields it lacks taken from `message_start`.
fn final_usage(start: &Parts, u: &Value) -> TokenUsage {
    if let Some(iterations) = u.get("iterations").and_then(Value::as_array).filter(|a| !a.is_empty()) {
        let sum = iterations.iter().map(parts).fold(Parts::default(), |a, p| Parts {
            input: a.input.saturating_add(p.input),
            cache_read: a.cache_read.saturating_add(p.cache_read),
            cache_write: a.cache_write.saturating_add(p.cache_write),
            output: a.output.saturating_add(p.output),
        });
        return to_usage(sum);
    }
    to_usage(Parts {
        input: u64_at(u, &["input_tokens"]).unwrap_or(start.input),
        cache_read: u64_at(u, &["cache_read_input_tokens"]).unwrap_or(start.cache_read),
        cache_write: u64_at(u, &["cache_creation_input_tokens"]).unwrap_or(start.cache_write),
        output: u64_at(u, &["output_tokens"]).unwrap_or(0),
    })
}

/// `stop_reason` normalised.
fn finish_reason(s: &str) -> FinishReason {
    match s {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::Refusal,
        other => FinishReason::Other(other.to_string()),
    }
}

fn error_event(v: &Value) -> ProviderError {
    let err = v.get("error").unwrap_or(v);
    let kind = err.get("type").and_then(Value::as_str).unwrap_or("error");
    let status = match kind {
        "invalid_request_error" => Some(400),
        "authentication_error" => Some(401),
        "permission_error" => Some(403),
        "not_found_error" => Some(404),
        "request_too_large" => Some(413),
        "rate_limit_error" => Some(429),
        "api_error" => Some(500),
        "overloaded_error" => Some(529),
        _ => None,
    };
    ProviderError::Stream {
        status,
        code: Some(kind.to_string()),
        message: truncate(err.get("message").and_then(Value::as_str).unwrap_or(kind).to_string()),
        retryable: retryable_error_type(kind),
    }
}

#[derive(Default)]
struct Decoder {
    start: Option<Parts>,
    usage: Option<TokenUsage>,
    finish_reason: Option<FinishReason>,
    model: Option<String>,
    done: bool,
}

impl StreamDecoder for Decoder {
    fn on_frame(&mut self, frame: &Frame, out: &mut Vec<Delta>) -> Result<(), ProviderError> {
        let v = parse_json(frame.data.as_bytes())?;
        let kind = v.get("type").and_then(Value::as_str).or(frame.event.as_deref()).unwrap_or("");
        match kind {
            "message_start" => {
                let message = v.get("message").unwrap_or(&Value::Null);
                self.model = message.get("model").and_then(Value::as_str).map(str::to_string);
                // output_tokens here is a placeholder; message_delta carries the real count.
                self.start = Some(message.get("usage").map(parts).unwrap_or_default());
            }
            "content_block_delta" => {
                let delta = v.get("delta").unwrap_or(&Value::Null);
                if delta.get("type").and_then(Value::as_str) == Some("text_delta") {
                    if let Some(t) = delta.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                        out.push(Delta::Text(t.to_string()));
                    }
                }
            }
            "message_delta" => {
                if let Some(reason) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.finish_reason = Some(finish_reason(reason));
                }
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    self.usage = Some(final_usage(&self.start.unwrap_or_default(), u));
                }
            }
            "message_stop" => self.done = true,
            "error" => return Err(error_event(&v)),
            _ => {} // ping, content_block_start/stop, future events
        }
        Ok(())
    }

    fn finished(&self) -> bool {
        self.done
    }

    fn summary(&self) -> StreamSummary {
        // Before message_delta only the input side is known: report it, flagged as estimated so
        // the caller fills in the output from the text received.
        let usage = self.usage.or_else(|| self.start.map(|p| TokenUsage { output: 0, estimated: true, ..to_usage(p) }));
        StreamSummary {
            finish_reason: self.finish_reason.clone(),
            model: self.model.clone(),
            usage,
            provider_cost_microusd: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::providers::test_support::{decode, fixture};

    #[test]
    fn placeholder_output_in_message_start_is_not_counted() {
        for chunk in [1, 17, 4096] {
            let (text, s, err, done) = decode(&Anthropic, &fixture("anthropic_messages_stream.sse"), chunk);
            assert!(err.is_none() && done);
            assert_eq!(text, "2");
            let u = s.usage.unwrap();
            assert_eq!((u.input, u.output, u.cached, u.cache_write, u.estimated), (20, 5, 0, 0, false));
            assert_eq!(s.finish_reason, Some(FinishReason::Stop));
            assert_eq!(s.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
        }
    }

    #[test]
    fn legacy_usage_and_last_event_without_blank_line() {
        let (text, s, err, done) = decode(&Anthropic, &fixture("anthropic_messages_stream_legacy_usage.sse"), 10);
        assert!(err.is_none());
        assert!(done, "message_stop at EOF without a blank line must be dispatched");
        assert_eq!(text, "Hello there!");
        let u = s.usage.unwrap();
        assert_eq!((u.input, u.output, u.cached), (11, 6, 0));
    }

    #[test]
    fn usage_is_summed_over_iterations() {
        let (text, s, err, done) = decode(&Anthropic, &fixture("anthropic_messages_stream_cache_compaction.sse"), 3);
        assert!(err.is_none() && done);
        assert_eq!(text, "Hello! \u{1F44B}");
        let u = s.usage.unwrap();
        // uncached 281 + cache_read 55096 = 55377 prompt tokens; out 83 + 8.
        assert_eq!((u.input, u.cached, u.cache_write, u.output), (55_377, 55_096, 0, 91));
    }

    #[test]
    fn overloaded_error_event_is_retryable() {
        let body = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let (_, s, err, done) = decode(&Anthropic, body, 5);
        assert!(!done);
        let err = err.unwrap();
        assert!(err.is_retryable());
        assert_eq!(err.status(), Some(529));
        let u = s.usage.unwrap();
        assert_eq!((u.input, u.output, u.estimated), (7, 0, true));
    }

    #[test]
    fn whole_message_body() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"Hi"},{"type":"text","text":"!"}],"stop_reason":"end_turn","usage":{"input_tokens":10,"cache_creation_input_tokens":5,"cache_read_input_tokens":100,"output_tokens":3}}"#;
        let c = Anthropic.parse_body(body).unwrap();
        assert_eq!(c.text(), "Hi!");
        let u = c.usage.unwrap();
        assert_eq!((u.input, u.cached, u.cache_write, u.output), (115, 100, 5, 3));
    }
}
