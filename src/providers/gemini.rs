//! Google Gemini API: `POST {base}/models/{model}:generateContent`, or
//! `:streamGenerateContent?alt=sse` (SSE with CRLF line endings, no terminal marker), key in
//! `x-goog-api-key`.
//!
//! Every chunk carries a cumulative `usageMetadata`; the last one wins (never summed).
//! `input` = `promptTokenCount` (which includes `cachedContentTokenCount`) +
//! `toolUsePromptTokenCount`; `cached` = `cachedContentTokenCount`; `reasoning` =
//! `thoughtsTokenCount`; `output` = `candidatesTokenCount` + `thoughtsTokenCount` (thinking is
//! billed as output). Thought parts (`thought: true`) are not part of the answer text.

use super::{
    error::truncate, json_post, parse_json, set_secret_header, u64_at, ChatRequest, Completion, Frame, Provider,
    ProviderError, ProviderSpec, StreamDecoder, StreamSummary,
};
use crate::chat::{Delta, FinishReason, Part, Role};
use crate::providers::error::retryable_status;
use crate::usage_record::TokenUsage;
use secrecy::SecretString;
use serde_json::{json, Value};

pub struct Gemini;

impl Provider for Gemini {
    fn build(
        &self,
        spec: &ProviderSpec,
        model: &str,
        req: &ChatRequest,
        stream: bool,
        key: Option<&SecretString>,
    ) -> Result<reqwest::Request, ProviderError> {
        super::text_only(req)?;
        let contents: Vec<Value> = req
            .turns()
            .map(|m| {
                let role = if m.role == Role::Assistant { "model" } else { "user" };
                json!({"role": role, "parts": [{"text": m.joined_text()}]})
            })
            .collect();
        let mut body = json!({"contents": contents});
        if let Some(system) = req.system_text() {
            body["systemInstruction"] = json!({"parts": [{"text": system}]});
        }
        let mut generation = serde_json::Map::new();
        if let Some(n) = req.max_tokens {
            generation.insert("maxOutputTokens".into(), json!(n));
        }
        if let Some(t) = req.temperature {
            generation.insert("temperature".into(), json!(t));
        }
        if !req.stop.is_empty() {
            generation.insert("stopSequences".into(), json!(req.stop));
        }
        if !generation.is_empty() {
            body["generationConfig"] = Value::Object(generation);
        }
        if model.is_empty() || model.contains(['/', '?', '#', ':']) {
            return Err(ProviderError::Request(format!("`{model}` is not a valid Gemini model name")));
        }
        let url = if stream {
            format!("{}/models/{model}:streamGenerateContent?alt=sse", spec.base())
        } else {
            format!("{}/models/{model}:generateContent", spec.base())
        };
        let mut request = json_post(spec, &url, &body)?;
        if let Some(key) = key {
            set_secret_header(&mut request, "x-goog-api-key", "", key)?;
        }
        Ok(request)
    }

    fn parse_body(&self, body: &[u8]) -> Result<Completion, ProviderError> {
        let v = parse_json(body)?;
        if let Some(err) = v.get("error") {
            return Err(error_object(err));
        }
        let chunk = read_chunk(&v);
        if v.get("candidates").is_none() && chunk.usage.is_none() {
            return Err(ProviderError::Malformed("no `candidates` in the response".into()));
        }
        Ok(Completion {
            parts: vec![Part::Text { text: chunk.text }],
            finish_reason: chunk.finish_reason,
            model: chunk.model,
            usage: chunk.usage,
            provider_cost_microusd: None,
        })
    }

    fn body_usage(&self, body: &Value) -> Option<TokenUsage> {
        read_chunk(body).usage
    }

    fn decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(Decoder::default())
    }
}

struct Chunk {
    text: String,
    finish_reason: Option<FinishReason>,
    model: Option<String>,
    usage: Option<TokenUsage>,
}

fn read_chunk(v: &Value) -> Chunk {
    let candidate = v.get("candidates").and_then(|c| c.get(0));
    let text = candidate
        .and_then(|c| c.pointer("/content/parts"))
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter(|p| p.get("thought").and_then(Value::as_bool) != Some(true))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let usage = v.get("usageMetadata").filter(|u| u.is_object()).map(|u| {
        let thoughts = u64_at(u, &["thoughtsTokenCount"]).unwrap_or(0);
        TokenUsage {
            input: u64_at(u, &["promptTokenCount"])
                .unwrap_or(0)
                .saturating_add(u64_at(u, &["toolUsePromptTokenCount"]).unwrap_or(0)),
            output: u64_at(u, &["candidatesTokenCount"]).unwrap_or(0).saturating_add(thoughts),
            cached: u64_at(u, &["cachedContentTokenCount"]).unwrap_or(0),
            cache_write: 0,
            reasoning: thoughts,
            estimated: false,
        }
    });
    Chunk {
        text,
        finish_reason: candidate.and_then(|c| c.get("finishReason")).and_then(Value::as_str).map(finish_reason),
        model: v.get("modelVersion").and_then(Value::as_str).map(str::to_string),
        usage,
    }
}

/// `finishReason` normalised.
fn finish_reason(s: &str) -> FinishReason {
    match s {
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        other => FinishReason::Other(other.to_ascii_lowercase()),
    }
}

fn error_object(err: &Value) -> ProviderError {
    let status = err.get("code").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok());
    ProviderError::Stream {
        status,
        code: err.get("status").and_then(Value::as_str).map(str::to_string),
        message: truncate(err.get("message").and_then(Value::as_str).unwrap_or("error").to_string()),
        retryable: status.is_some_and(retryable_status),
    }
}

#[derive(Default)]
struct Decoder {
    summary: StreamSummary,
}

impl StreamDecoder for Decoder {
    fn on_frame(&mut self, frame: &Frame, out: &mut Vec<Delta>) -> Result<(), ProviderError> {
        let v = parse_json(frame.data.as_bytes())?;
        if let Some(err) = v.get("error") {
            return Err(error_object(err));
        }
        let chunk = read_chunk(&v);
        if chunk.usage.is_some() {
            self.summary.usage = chunk.usage; // cumulative: the latest replaces the earlier
        }
        if chunk.finish_reason.is_some() {
            self.summary.finish_reason = chunk.finish_reason;
        }
        if self.summary.model.is_none() {
            self.summary.model = chunk.model;
        }
        if !chunk.text.is_empty() {
            out.push(Delta::Text(chunk.text));
        }
        Ok(())
    }

    fn finished(&self) -> bool {
        self.summary.finish_reason.is_some()
    }

    fn summary(&self) -> StreamSummary {
        self.summary.clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::providers::test_support::{decode, fixture};

    #[test]
    fn crlf_stream_with_cumulative_usage() {
        for chunk in [1, 2, 50, 10_000] {
            let (text, s, err, done) = decode(&Gemini, &fixture("gemini_stream.sse"), chunk);
            assert!(err.is_none() && done);
            let want: String = (1..=30).map(|n| format!("{n}\n")).collect();
            assert_eq!(text, want.trim_end());
            let u = s.usage.unwrap();
            assert_eq!((u.input, u.output, u.reasoning, u.cached), (18, 115, 35, 0));
            assert_eq!(s.finish_reason, Some(FinishReason::Stop));
            assert_eq!(s.model.as_deref(), Some("gemini-2.5-flash"));
        }
    }

    #[test]
    fn whole_body_and_thought_parts() {
        let body = br#"{"candidates":[{"content":{"parts":[{"text":"thinking...","thought":true},{"text":"Answer"}],"role":"model"},"finishReason":"STOP"}],
            "usageMetadata":{"promptTokenCount":100,"cachedContentTokenCount":60,"candidatesTokenCount":5,"thoughtsTokenCount":7,"totalTokenCount":112},"modelVersion":"gemini-2.5-pro"}"#;
        let c = Gemini.parse_body(body).unwrap();
        assert_eq!(c.text(), "Answer");
        let u = c.usage.unwrap();
        assert_eq!((u.input, u.cached, u.output, u.reasoning), (100, 60, 12, 7));
    }
}
