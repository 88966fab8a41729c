//! Ollama's native chat API (`POST {base}/api/chat`), streamed as newline-delimited JSON.
//!
//! One JSON object per line with `message.content`, `done: false` until the final object
//! (`done: true`, `done_reason`) which carries `prompt_eval_count` (input) and `eval_count`
//! (output). No key. The `ollama` preset uses the OpenAI-compatible `/v1` path instead; this
//! adapter serves `adapter = "ollama"` entries.

use super::{
    json_post, parse_json, set_secret_header, u64_at, ChatRequest, Completion, Frame, Framing, Provider, ProviderError,
    ProviderSpec, StreamDecoder, StreamSummary,
};
use crate::chat::{Delta, FinishReason, Part};
use crate::usage_record::TokenUsage;
use secrecy::SecretString;
use serde_json::{json, Value};

pub struct Ollama;

impl Provider for Ollama {
    fn build(
        &self,
        spec: &ProviderSpec,
        model: &str,
        req: &ChatRequest,
        stream: bool,
        key: Option<&SecretString>,
    ) -> Result<reqwest::Request, ProviderError> {
        super::text_only(req)?;
        let mut messages = Vec::new();
        if let Some(system) = &req.system {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.extend(req.messages.iter().map(|m| json!({"role": m.role.as_str(), "content": m.joined_text()})));
        let mut options = serde_json::Map::new();
        if let Some(n) = req.max_tokens {
            options.insert("num_predict".into(), json!(n));
        }
        if let Some(t) = req.temperature {
            options.insert("temperature".into(), json!(t));
        }
        if !req.stop.is_empty() {
            options.insert("stop".into(), json!(req.stop));
        }
        let mut body = json!({"model": model, "messages": messages, "stream": stream});
        if !options.is_empty() {
            body["options"] = Value::Object(options);
        }
        let mut request = json_post(spec, &format!("{}/api/chat", spec.base()), &body)?;
        if let Some(key) = key {
            // A proxy in front of Ollama may want a bearer token.
            set_secret_header(&mut request, "authorization", "Bearer ", key)?;
        }
        Ok(request)
    }

    fn parse_body(&self, body: &[u8]) -> Result<Completion, ProviderError> {
        let v = parse_json(body)?;
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            return Err(ProviderError::Stream { status: None, code: None, message: e.to_string(), retryable: false });
        }
        let content = v
            .pointer("/message/content")
            .and_then(Value::as_str)
            .ok_or_else(|| ProviderError::Malformed("no message.content in the response".into()))?;
        Ok(Completion {
            parts: vec![Part::Text { text: content.to_string() }],
            finish_reason: v.get("done_reason").and_then(Value::as_str).map(FinishReason::from_openai),
            model: v.get("model").and_then(Value::as_str).map(str::to_string),
            usage: self.body_usage(&v),
            provider_cost_microusd: None,
        })
    }

    fn body_usage(&self, body: &Value) -> Option<TokenUsage> {
        usage_of(body)
    }

    fn decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(Decoder::default())
    }

    fn framing(&self) -> Framing {
        Framing::Ndjson
    }
}

fn usage_of(v: &Value) -> Option<TokenUsage> {
    let input = u64_at(v, &["prompt_eval_count"]);
    let output = u64_at(v, &["eval_count"]);
    (input.is_some() || output.is_some()).then(|| TokenUsage {
        input: input.unwrap_or(0),
        output: output.unwrap_or(0),
        ..TokenUsage::default()
    })
}

#[derive(Default)]
struct Decoder {
    summary: StreamSummary,
    done: bool,
}

impl StreamDecoder for Decoder {
    fn on_frame(&mut self, frame: &Frame, out: &mut Vec<Delta>) -> Result<(), ProviderError> {
        let v = parse_json(frame.data.as_bytes())?;
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            return Err(ProviderError::Stream { status: None, code: None, message: e.to_string(), retryable: false });
        }
        if self.summary.model.is_none() {
            self.summary.model = v.get("model").and_then(Value::as_str).map(str::to_string);
        }
        if v.get("done").and_then(Value::as_bool) == Some(true) {
            self.done = true;
            self.summary.finish_reason = v.get("done_reason").and_then(Value::as_str).map(FinishReason::from_openai);
            self.summary.usage = usage_of(&v);
        }
        if let Some(t) = v.pointer("/message/content").and_then(Value::as_str).filter(|s| !s.is_empty()) {
            out.push(Delta::Text(t.to_string()));
        }
        Ok(())
    }

    fn finished(&self) -> bool {
        self.done
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
    fn ndjson_stream_final_line_without_newline() {
        for chunk in [1, 9, 4096] {
            let (text, s, err, done) = decode(&Ollama, &fixture("ollama_chat_stream.ndjson"), chunk);
            assert!(err.is_none() && done);
            assert_eq!(text, " these times of day.");
            let u = s.usage.unwrap();
            assert_eq!((u.input, u.output), (10, 239));
            assert_eq!(s.finish_reason, Some(FinishReason::Stop));
            assert_eq!(s.model.as_deref(), Some("phi3"));
        }
    }
}
