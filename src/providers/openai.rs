//! Chat Completions (`POST {base}/chat/completions`), spoken by OpenAI and every OpenAI-compatible
//! service (Groq, Together, OpenRouter, DeepSeek, Mistral, Cloudflare, Ollama `/v1`, vLLM, ...).
//!
//! Usage: `prompt_tokens` already includes `prompt_tokens_details.cached_tokens` (so `input` is
//! `prompt_tokens` and `cached` is the cached part, never added again); DeepSeek's
//! `prompt_cache_hit_tokens` stands in when `cached_tokens` is absent; `reasoning` is
//! `completion_tokens_details.reasoning_tokens` (part of `completion_tokens`); OpenRouter's
//! `cache_write_tokens` is kept. Streams: usage arrives in whichever chunk carries a non-null
//! `usage` (OpenAI: a final `choices: []` chunk; DeepSeek and Groq: the finish chunk; Groq also
//! under `x_groq.usage`); the last one seen wins. An `error` object inside a chunk, or an
//! `event: error`, is an error inside a 200 stream; usage it carries is still recorded.

use super::{
    error::{retryable_error_type, retryable_status, truncate},
    json_post, parse_json, set_secret_header, u64_at, ChatRequest, Completion, Frame, Provider, ProviderError,
    ProviderSpec, StreamDecoder, StreamSummary,
};
use crate::chat::{Delta, FinishReason, Part};
use crate::usage_record::TokenUsage;
use secrecy::SecretString;
use serde_json::{json, Value};

pub struct OpenAi;

impl Provider for OpenAi {
    fn build(
        &self,
        spec: &ProviderSpec,
        model: &str,
        req: &ChatRequest,
        stream: bool,
        key: Option<&SecretString>,
    ) -> Result<reqwest::Request, ProviderError> {
        let base = spec.base();
        if base.contains("{account_id}") {
            return Err(ProviderError::Request(format!("set providers.{}.account_id in the config", spec.name)));
        }
        super::text_only(req)?;
        let mut messages = Vec::new();
        if let Some(system) = &req.system {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.extend(req.messages.iter().map(|m| json!({"role": m.role.as_str(), "content": m.joined_text()})));
        let mut body = json!({"model": model, "messages": messages, "stream": stream});
        if stream && spec.stream_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        if let Some(n) = req.max_tokens {
            body[spec.max_tokens_field.as_str()] = json!(n);
        }
        if let Some(t) = req.temperature {
            body["temperature"] = json!(t);
        }
        if !req.stop.is_empty() {
            body["stop"] = json!(req.stop);
        }
        let mut request = json_post(spec, &format!("{base}/chat/completions"), &body)?;
        if let Some(key) = key {
            set_secret_header(&mut request, "authorization", "Bearer ", key)?;
        }
        Ok(request)
    }

    fn parse_body(&self, body: &[u8]) -> Result<Completion, ProviderError> {
        let v = parse_json(body)?;
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            return Err(stream_error(err));
        }
        let choice = v.get("choices").and_then(|c| c.get(0));
        let message = choice
            .and_then(|c| c.get("message"))
            .filter(|m| m.is_object())
            .ok_or_else(|| ProviderError::Malformed("no choices[0].message in the response".into()))?;
        // `content: null` is a valid answer (a tool call, or a refusal with its text in
        // `refusal`), not a malformed one that would be retried and fall back.
        let content = match message.get("content") {
            Some(Value::String(s)) => s.as_str(),
            None | Some(Value::Null) => message.get("refusal").and_then(Value::as_str).unwrap_or_default(),
            Some(_) => return Err(ProviderError::Malformed("choices[0].message.content is not a string".into())),
        };
        Ok(Completion {
            parts: vec![Part::Text { text: content.to_string() }],
            finish_reason: choice
                .and_then(|c| c.get("finish_reason"))
                .and_then(Value::as_str)
                .map(FinishReason::from_openai),
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
}

/// Usage of a response or chunk: top-level `usage`, else Groq's `x_groq.usage`.
fn usage_of(v: &Value) -> Option<TokenUsage> {
    let u =
        v.get("usage").filter(|u| u.is_object()).or_else(|| v.pointer("/x_groq/usage").filter(|u| u.is_object()))?;
    Some(TokenUsage {
        input: u64_at(u, &["prompt_tokens"]).unwrap_or(0),
        output: u64_at(u, &["completion_tokens"]).unwrap_or(0),
        cached: u64_at(u, &["prompt_tokens_details", "cached_tokens"])
            .or_else(|| u64_at(u, &["prompt_cache_hit_tokens"]))
            .unwrap_or(0),
        cache_write: u64_at(u, &["prompt_tokens_details", "cache_write_tokens"]).unwrap_or(0),
        reasoning: u64_at(u, &["completion_tokens_details", "reasoning_tokens"]).unwrap_or(0),
        estimated: false,
    })
}

/// An `error` object found inside a 2xx body or stream.
fn stream_error(err: &Value) -> ProviderError {
    let status = err
        .get("code")
        .and_then(Value::as_u64)
        .or_else(|| err.get("status_code").and_then(Value::as_u64))
        .and_then(|s| u16::try_from(s).ok());
    let kind = err.get("type").and_then(Value::as_str).or_else(|| err.get("code").and_then(Value::as_str));
    let message = err.get("message").and_then(Value::as_str).unwrap_or("error event without message");
    let retryable = status.is_some_and(retryable_status) || kind.is_some_and(retryable_error_type);
    ProviderError::Stream { status, code: kind.map(str::to_string), message: truncate(message.to_string()), retryable }
}

#[derive(Default)]
struct Decoder {
    summary: StreamSummary,
    done: bool,
}

impl StreamDecoder for Decoder {
    fn on_frame(&mut self, frame: &Frame, out: &mut Vec<Delta>) -> Result<(), ProviderError> {
        if frame.data.trim() == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let v = parse_json(frame.data.as_bytes())?;
        if frame.event.as_deref() == Some("error") {
            return Err(stream_error(v.get("error").unwrap_or(&v)));
        }
        if let Some(model) = v.get("model").and_then(Value::as_str) {
            if self.summary.model.is_none() {
                self.summary.model = Some(model.to_string());
            }
        }
        if let Some(usage) = usage_of(&v) {
            self.summary.usage = Some(usage);
        }
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            return Err(stream_error(err));
        }
        let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else { return Ok(()) };
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.summary.finish_reason = Some(FinishReason::from_openai(reason));
        }
        if let Some(t) = choice.pointer("/delta/content").and_then(Value::as_str).filter(|s| !s.is_empty()) {
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
    use crate::chat::{Message, Role};
    use crate::providers::presets;
    use crate::providers::test_support::{decode, fixture};
    use secrecy::ExposeSecret;

    fn usage(input: u64, output: u64, cached: u64, reasoning: u64) -> TokenUsage {
        TokenUsage { input, output, cached, reasoning, ..TokenUsage::default() }
    }

    #[test]
    fn openai_stream_usage_in_final_empty_choices_chunk() {
        for chunk in [1, 5, 64, 100_000] {
            let (text, s, err, done) = decode(&OpenAi, &fixture("openai_chat_stream_usage.sse"), chunk);
            assert!(err.is_none());
            assert!(done);
            assert_eq!(text, "The capital of the UK is London.");
            assert_eq!(s.usage, Some(usage(78, 9, 0, 0)));
            assert_eq!(s.finish_reason, Some(FinishReason::Stop));
            assert_eq!(s.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
        }
    }

    #[test]
    fn openrouter_comments_and_cache_write_fields() {
        let (text, s, err, done) = decode(&OpenAi, &fixture("openrouter_chat_stream_usage_cost.sse"), 7);
        assert!(err.is_none() && done);
        assert_eq!(text, "Hello!");
        assert_eq!(s.usage, Some(usage(254, 5, 0, 0)));
    }

    #[test]
    fn openrouter_error_inside_200_stream_keeps_usage() {
        let (_, s, err, _) = decode(&OpenAi, &fixture("openrouter_chat_stream_midstream_error.sse"), 13);
        match err {
            Some(ProviderError::Stream { status, message, retryable, .. }) => {
                assert_eq!(status, Some(400));
                assert_eq!(message, "Token limit reached");
                assert!(!retryable);
            }
            other => panic!("expected a stream error, got {other:?}"),
        }
        assert_eq!(s.usage, Some(usage(43, 10, 0, 11)));
    }

    #[test]
    fn deepseek_usage_on_finish_chunk() {
        let (_, s, err, done) = decode(&OpenAi, &fixture("deepseek_chat_stream_usage.sse"), 4096);
        assert!(err.is_none() && done);
        assert_eq!(s.usage, Some(usage(6, 212, 0, 198)));
        assert_eq!(s.finish_reason, Some(FinishReason::Stop));
    }

    #[test]
    fn groq_usage_without_stream_options() {
        let (_, s, err, done) = decode(&OpenAi, &fixture("groq_chat_stream_x_groq.sse"), 333);
        assert!(err.is_none() && done);
        assert_eq!(s.usage, Some(usage(304, 49, 0, 23)));
        assert_eq!(s.finish_reason, Some(FinishReason::ToolCalls));
    }

    #[test]
    fn groq_error_event_in_200_stream() {
        let body = b"data: {\"choices\":[{\"delta\":{\"content\":\"\"}}]}\n\nevent: error\ndata: {\"error\":{\"message\":\"Tool call validation failed\",\"type\":\"invalid_request_error\",\"code\":\"tool_use_failed\",\"status_code\":400}}\n\n";
        let (_, _, err, done) = decode(&OpenAi, body, 9);
        assert!(!done);
        match err {
            Some(ProviderError::Stream { status: Some(400), retryable: false, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn null_content_is_an_answer_not_malformed() {
        let tool = br#"{"model":"gpt-4o","choices":[{"message":{"role":"assistant","content":null,
            "tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},
            "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}"#;
        let c = OpenAi.parse_body(tool).unwrap();
        assert_eq!((c.text().as_str(), c.finish_reason), ("", Some(FinishReason::ToolCalls)));
        assert_eq!(c.usage.map(|u| u.output), Some(3));
        let refusal = br#"{"choices":[{"message":{"role":"assistant","content":null,"refusal":"I can't help with that."},"finish_reason":"stop"}]}"#;
        assert_eq!(OpenAi.parse_body(refusal).unwrap().text(), "I can't help with that.");
        assert!(matches!(OpenAi.parse_body(br#"{"choices":[]}"#), Err(ProviderError::Malformed(_))));
        assert!(matches!(
            OpenAi.parse_body(br#"{"choices":[{"message":{"content":7}}]}"#),
            Err(ProviderError::Malformed(_))
        ));
    }

    #[test]
    fn recorded_image_and_json_schema_answers() {
        let c = OpenAi.parse_body(&fixture("openai_chat_image_url.json")).unwrap();
        assert!(c.text().starts_with("The image shows the Wikipedia logo"), "{}", c.text());
        assert_eq!(c.usage, Some(usage(269, 23, 0, 0)));
        assert_eq!(c.model.as_deref(), Some("gpt-4o-2024-08-06"));
        // `refusal: null` beside a real answer: the answer is the content.
        let c = OpenAi.parse_body(&fixture("openai_chat_json_schema.json")).unwrap();
        assert_eq!(
            c.text(),
            r#"{"title":"THE NAME OF THE WIND","author":{"first_name":"Patrick","last_name":"Rothfuss"},"rating":7}"#
        );
        assert_eq!(c.usage, Some(usage(172, 29, 0, 0)));
    }

    #[test]
    fn cached_tokens_are_part_of_prompt_tokens() {
        let body =
            br#"{"model":"gpt-4o","choices":[{"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,
            "prompt_tokens_details":{"cached_tokens":1920},"completion_tokens_details":{"reasoning_tokens":100}}}"#;
        let c = OpenAi.parse_body(body).unwrap();
        assert_eq!(c.text(), "hi");
        assert_eq!(c.usage, Some(usage(2006, 300, 1920, 100)));
    }

    #[test]
    fn request_shape() {
        let specs = presets::resolve(&presets::ProvidersConfig::new()).unwrap();
        let req = ChatRequest {
            messages: vec![Message::text(Role::User, "hi")],
            system: Some("be brief".into()),
            max_tokens: Some(50),
            temperature: Some(0.5),
            stop: vec!["\n".into()],
            ..ChatRequest::default()
        };
        let key = SecretString::from("sk-test");
        let r = OpenAi.build(&specs["openai"], "gpt-4o-mini", &req, true, Some(&key)).unwrap();
        assert_eq!(r.url().as_str(), "https://api.openai.com/v1/chat/completions");
        let auth = r.headers().get("authorization").unwrap();
        assert!(auth.is_sensitive());
        assert_eq!(auth.to_str().unwrap(), format!("Bearer {}", key.expose_secret()));
        let body: Value = serde_json::from_slice(r.body().unwrap().as_bytes().unwrap()).unwrap();
        assert_eq!(body["messages"][0], json!({"role":"system","content":"be brief"}));
        assert_eq!(body["max_completion_tokens"], 50);
        assert_eq!(body["stream_options"]["include_usage"], true);
        let r = OpenAi.build(&specs["groq"], "m", &req, false, Some(&key)).unwrap();
        let body: Value = serde_json::from_slice(r.body().unwrap().as_bytes().unwrap()).unwrap();
        assert_eq!(body["max_tokens"], 50);
        assert!(body.get("stream_options").is_none());
        let e = OpenAi.build(&specs["cloudflare"], "m", &req, false, Some(&key)).unwrap_err();
        assert!(e.to_string().contains("account_id"), "{e}");
    }
}
