//! Ollama's native chat API (`POST {base}/api/chat`), streamed as newline-delimited JSON.
//!
//! One JSON object per line with `message.content`, `done: false` until the final object
//! (`done: true`, `done_reason`) which carries `prompt_eval_count` (input) and `eval_count`
//! (output). No key. The `ollama` preset uses the OpenAI-compatible `/v1` path instead; this
//! adapter serves `adapter = "ollama"` entries.
//!
//! Request translation:
//! - `system` text and system messages → `system` messages; every other message keeps its role,
//!   its text parts joined into `content`;
//! - base64 images → the message's `images: [base64]`; URL images are refused
//!   (`Unsupported { feature: "image URLs" }`: Ollama reads no URLs), and so are documents;
//! - an assistant message's tool calls → `tool_calls: [{function: {name, arguments}}]` with the
//!   arguments as a JSON object (arguments that do not parse as one are a
//!   [`ProviderError::Request`]); its thinking text → `thinking` (signatures are dropped: no
//!   Ollama model signs its thinking);
//! - each tool result → `{role: "tool", content, tool_name}` (images in `images`), the name being
//!   the one of the call with that id in the nearest earlier assistant message (an unknown id is
//!   a [`ProviderError::Request`]); `is_error` has no field and the text says it;
//! - `tools` → `[{type: "function", function: {name, description, parameters}}]`; Ollama has no
//!   tool choice, so any `tool_choice` but `auto` is `Unsupported { feature: "tool_choice" }`;
//!   `parallel_tool_calls` has no equivalent;
//! - `response_format` → `format: "json"` or `format: <schema>`; `reasoning` → `think: true`.
//!
//! Answer translation, per line: `message.thinking` → reasoning, `message.content` → text,
//! `message.tool_calls` → tool calls (whole, one delta each; id: the call's `id` when a newer
//! Ollama gives one, else `call_<ordinal>` among the answer's calls), arguments = the compact
//! JSON of the object. An answer with tool calls finishes with `tool_calls` whatever
//! `done_reason` says (Ollama says `stop`).

use super::{
    json_post, parse_json, set_secret_header, u64_at, ChatRequest, Completion, Frame, Framing, Provider, ProviderError,
    ProviderSpec, StreamDecoder, StreamSummary,
};
use crate::chat::ToolChoice;
use crate::chat::{joined_text, Assembler, Delta, FinishReason, ImageSource, Message, Part, ResponseFormat, Role};
use crate::usage_record::TokenUsage;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
        let body = request_body(model, req, stream)?;
        let body = serde_json::to_value(&body)
            .map_err(|e| ProviderError::Request(format!("cannot encode the Ollama request: {e}")))?;
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
        let line = read_line(&v)?;
        let message = line
            .message
            .as_ref()
            .filter(|m| m.content.is_some() || !m.tool_calls.is_empty() || m.thinking.is_some())
            .ok_or_else(|| ProviderError::Malformed("no message.content in the response".into()))?;
        let mut deltas = Vec::new();
        let mut calls = 0;
        message.deltas(&mut calls, &mut deltas);
        let mut a = Assembler::default();
        for d in &deltas {
            a.push(d);
        }
        Ok(Completion {
            parts: a.into_parts(),
            finish_reason: line.done_reason.as_deref().map(|r| finish_reason(r, calls > 0)),
            model: line.model,
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

// ---- request wire ----

#[derive(Serialize)]
struct RequestWire<'a> {
    model: &'a str,
    messages: Vec<MessageOut<'a>>,
    stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<super::openai::WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<FormatOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    think: Option<bool>,
    #[serde(skip_serializing_if = "Options::is_empty")]
    options: Options<'a>,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    images: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_name: Option<&'a str>,
}

impl<'a> MessageOut<'a> {
    fn new(role: &'static str, content: String) -> Self {
        MessageOut { role, content, images: Vec::new(), thinking: None, tool_calls: Vec::new(), tool_name: None }
    }
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    function: FunctionCallOut<'a>,
}

#[derive(Serialize)]
struct FunctionCallOut<'a> {
    name: &'a str,
    arguments: Value,
}

#[derive(Serialize)]
#[serde(untagged)]
enum FormatOut<'a> {
    Json(&'static str),
    Schema(&'a Value),
}

#[derive(Serialize)]
struct Options<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    num_predict: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
}

impl Options<'_> {
    fn is_empty(&self) -> bool {
        self.num_predict.is_none() && self.temperature.is_none() && self.stop.is_empty()
    }
}

fn request_body<'a>(model: &'a str, req: &'a ChatRequest, stream: bool) -> Result<RequestWire<'a>, ProviderError> {
    if !matches!(req.tool_choice, None | Some(ToolChoice::Auto)) {
        return Err(ProviderError::Unsupported { feature: "tool_choice" });
    }
    let mut messages = Vec::new();
    if let Some(system) = &req.system {
        messages.push(MessageOut::new("system", system.clone()));
    }
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::Tool => messages.extend(tool_results(&req.messages[..i], m)?),
            _ => messages.push(message(m)?),
        }
    }
    Ok(RequestWire {
        model,
        messages,
        stream,
        tools: req.tools.iter().map(super::openai::WireTool::new).collect(),
        format: match &req.response_format {
            None | Some(ResponseFormat::Text) => None,
            Some(ResponseFormat::JsonObject) => Some(FormatOut::Json("json")),
            Some(ResponseFormat::JsonSchema { schema, .. }) => Some(FormatOut::Schema(schema)),
        },
        think: req.reasoning.map(|_| true),
        options: Options { num_predict: req.max_tokens, temperature: req.temperature, stop: &req.stop },
    })
}

/// The base64 images among `parts`; URL images and documents are refused.
fn images(parts: &[Part]) -> Result<Vec<&str>, ProviderError> {
    let mut out = Vec::new();
    for p in parts {
        match p {
            Part::Image(img) => match &img.source {
                ImageSource::Base64 { data, .. } => out.push(data.as_str()),
                ImageSource::Url(_) => return Err(ProviderError::Unsupported { feature: "image URLs" }),
            },
            Part::Document { .. } => return Err(ProviderError::Unsupported { feature: "documents" }),
            _ => {}
        }
    }
    Ok(out)
}

/// A system, user or assistant message.
fn message(m: &Message) -> Result<MessageOut<'_>, ProviderError> {
    let mut out = MessageOut::new(m.role.as_str(), m.joined_text());
    out.images = images(&m.content)?;
    let thinking: Vec<&str> = m
        .content
        .iter()
        .filter_map(|p| match p {
            Part::Thinking { text, .. } if !text.is_empty() => Some(text.as_str()),
            _ => None,
        })
        .collect();
    if !thinking.is_empty() {
        out.thinking = Some(thinking.join("\n\n"));
    }
    for p in &m.content {
        if let Part::ToolCall { name, arguments, .. } = p {
            out.tool_calls.push(ToolCallOut {
                function: FunctionCallOut {
                    name,
                    arguments: super::arguments_object(name, arguments, "which Ollama's tool_calls need")?,
                },
            });
        }
    }
    Ok(out)
}

/// A tool message's results, one `tool` message each; `earlier` are the messages before it.
fn tool_results<'a>(earlier: &'a [Message], m: &'a Message) -> Result<Vec<MessageOut<'a>>, ProviderError> {
    let mut out = Vec::new();
    for p in &m.content {
        let Part::ToolResult { tool_call_id, content, is_error } = p else {
            return Err(ProviderError::Request("a tool message holds tool results only".into()));
        };
        let name = crate::chat::tool_call_name(earlier, tool_call_id).ok_or_else(|| {
            ProviderError::Request(format!(
                "tool result `{tool_call_id}` answers no tool call of an earlier assistant message (Ollama needs the tool name)"
            ))
        })?;
        let text = joined_text(content);
        let mut msg = MessageOut::new("tool", if *is_error { format!("Error: {text}") } else { text });
        msg.images = images(content)?;
        msg.tool_name = Some(name);
        out.push(msg);
    }
    Ok(out)
}

// ---- response wire ----

#[derive(Deserialize, Default)]
#[serde(default)]
struct LineWire {
    model: Option<String>,
    message: Option<MessageWire>,
    done: bool,
    done_reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MessageWire {
    content: Option<String>,
    thinking: Option<String>,
    tool_calls: Vec<ToolCallWire>,
}

#[derive(Deserialize)]
struct ToolCallWire {
    #[serde(default)]
    id: Option<String>,
    function: FunctionWire,
}

#[derive(Deserialize)]
struct FunctionWire {
    name: String,
    #[serde(default)]
    arguments: Option<Value>,
}

fn read_line(v: &Value) -> Result<LineWire, ProviderError> {
    LineWire::deserialize(v).map_err(|e| ProviderError::Malformed(format!("unexpected Ollama response shape: {e}")))
}

impl MessageWire {
    /// This message's deltas: thinking, text, then tool calls; `calls` counts the answer's calls.
    fn deltas(&self, calls: &mut usize, out: &mut Vec<Delta>) {
        if let Some(t) = self.thinking.as_ref().filter(|t| !t.is_empty()) {
            out.push(Delta::Reasoning(t.clone()));
        }
        if let Some(t) = self.content.as_ref().filter(|t| !t.is_empty()) {
            out.push(Delta::Text(t.clone()));
        }
        for c in &self.tool_calls {
            let arguments = match &c.function.arguments {
                None | Some(Value::Null) => "{}".to_string(),
                Some(Value::String(s)) => s.clone(),
                Some(a) => a.to_string(),
            };
            out.push(Delta::ToolCall {
                index: *calls,
                id: Some(c.id.clone().filter(|id| !id.is_empty()).unwrap_or_else(|| format!("call_{calls}"))),
                name: Some(c.function.name.clone()),
                arguments,
            });
            *calls += 1;
        }
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

/// `done_reason` normalised; an answer with tool calls stopped for them.
fn finish_reason(reason: &str, has_calls: bool) -> FinishReason {
    match FinishReason::from_openai(reason) {
        FinishReason::Stop if has_calls => FinishReason::ToolCalls,
        other => other,
    }
}

#[derive(Default)]
struct Decoder {
    summary: StreamSummary,
    done: bool,
    /// Tool calls seen so far (the next one's index).
    calls: usize,
}

impl StreamDecoder for Decoder {
    fn on_frame(&mut self, frame: &Frame, out: &mut Vec<Delta>) -> Result<(), ProviderError> {
        let v = parse_json(frame.data.as_bytes())?;
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            return Err(ProviderError::Stream { status: None, code: None, message: e.to_string(), retryable: false });
        }
        let line = read_line(&v)?;
        if self.summary.model.is_none() {
            self.summary.model = line.model;
        }
        if let Some(m) = &line.message {
            m.deltas(&mut self.calls, out);
        }
        if line.done {
            self.done = true;
            self.summary.finish_reason = line.done_reason.as_deref().map(FinishReason::from_openai);
            self.summary.usage = usage_of(&v);
        }
        Ok(())
    }

    fn finished(&self) -> bool {
        self.done
    }

    fn summary(&self) -> StreamSummary {
        let mut s = self.summary.clone();
        s.finish_reason = s.finish_reason.map(|f| match f {
            FinishReason::Stop if self.calls > 0 => FinishReason::ToolCalls,
            other => other,
        });
        s
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::chat::{Reasoning, Tool};
    use crate::providers::test_support::{decode, decode_parts, fixture};
    use serde_json::json;

    fn spec() -> ProviderSpec {
        let mut s = super::super::presets::resolve(&Default::default()).unwrap()["ollama"].clone();
        s.base_url = "http://localhost:11434".into();
        s
    }

    fn message(v: Value) -> Message {
        serde_json::from_value(v).unwrap()
    }

    fn build(req: &ChatRequest) -> Result<Value, ProviderError> {
        req.validate().unwrap();
        let r = Ollama.build(&spec(), "llama3.2", req, false, None)?;
        assert_eq!(r.url().as_str(), "http://localhost:11434/api/chat");
        Ok(serde_json::from_slice(r.body().unwrap().as_bytes().unwrap()).unwrap())
    }

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

    #[test]
    fn request_with_tool_loop_images_thinking_and_options() {
        let req = ChatRequest {
            system: Some("be brief".into()),
            messages: vec![
                message(json!({"role":"user","content":[
                    {"type":"text","text":"weather where this is?"},
                    {"type":"image","data":"iVBORw0KGgo=","media_type":"image/png"}]})),
                message(json!({"role":"assistant","content":[
                    {"type":"thinking","text":"It is Paris.","signature":"ignored"},
                    {"type":"tool_call","id":"call_0","name":"get_weather","arguments":{"city":"Paris"}},
                    {"type":"tool_call","id":"call_1","name":"get_time","arguments":""}]})),
                message(json!({"role":"tool","tool_call_id":"call_0","content":"22 C"})),
                message(json!({"role":"tool","tool_call_id":"call_1","content":"no clock","is_error":true})),
            ],
            tools: vec![
                Tool {
                    name: "get_weather".into(),
                    description: Some("Weather of a city".into()),
                    parameters: json!({"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}),
                },
                Tool { name: "get_time".into(), description: None, parameters: json!({"type":"object"}) },
            ],
            tool_choice: Some(ToolChoice::Auto),
            max_tokens: Some(50),
            stop: vec!["END".into()],
            response_format: Some(ResponseFormat::JsonObject),
            reasoning: Some(Reasoning::Budget { budget_tokens: 100 }),
            ..ChatRequest::default()
        };
        let body = build(&req).unwrap();
        assert_eq!(
            body["messages"],
            json!([
                {"role":"system","content":"be brief"},
                {"role":"user","content":"weather where this is?","images":["iVBORw0KGgo="]},
                {"role":"assistant","content":"","thinking":"It is Paris.","tool_calls":[
                    {"function":{"name":"get_weather","arguments":{"city":"Paris"}}},
                    {"function":{"name":"get_time","arguments":{}}}]},
                {"role":"tool","content":"22 C","tool_name":"get_weather"},
                {"role":"tool","content":"Error: no clock","tool_name":"get_time"}
            ])
        );
        assert_eq!(
            body["tools"],
            json!([
                {"type":"function","function":{"name":"get_weather","description":"Weather of a city",
                    "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}},
                {"type":"function","function":{"name":"get_time","parameters":{"type":"object"}}}
            ])
        );
        assert_eq!(body["format"], "json");
        assert_eq!(body["think"], true);
        assert_eq!(body["stream"], false);
        assert_eq!(body["options"], json!({"num_predict":50,"stop":["END"]}));

        let schema = json!({"type":"object","properties":{"a":{"type":"integer"}}});
        let req2 = ChatRequest {
            messages: vec![message(json!({"role":"user","content":"hi"}))],
            response_format: Some(ResponseFormat::JsonSchema {
                name: "x".into(),
                schema: schema.clone(),
                strict: None,
            }),
            ..ChatRequest::default()
        };
        let body = build(&req2).unwrap();
        assert_eq!(body["format"], schema);
        assert!(body.get("think").is_none() && body.get("tools").is_none() && body.get("options").is_none());
    }

    #[test]
    fn request_refuses_what_ollama_cannot_take() {
        let user = |content: Value| ChatRequest {
            messages: vec![message(json!({"role":"user","content":content}))],
            ..ChatRequest::default()
        };
        let e = build(&user(json!([{"type":"image","url":"https://x/a.png"}]))).unwrap_err();
        assert!(matches!(e, ProviderError::Unsupported { feature: "image URLs" }), "{e:?}");
        let e =
            build(&user(json!([{"type":"document","data":"JVBERi0=","media_type":"application/pdf"}]))).unwrap_err();
        assert!(matches!(e, ProviderError::Unsupported { feature: "documents" }), "{e:?}");
        let mut req = user(json!("hi"));
        req.tools = vec![Tool { name: "f".into(), description: None, parameters: json!({"type":"object"}) }];
        for choice in [ToolChoice::None, ToolChoice::Required, ToolChoice::Tool("f".into())] {
            req.tool_choice = Some(choice);
            let e = build(&req).unwrap_err();
            assert!(matches!(e, ProviderError::Unsupported { feature: "tool_choice" }), "{e:?}");
        }
        let req = ChatRequest {
            messages: vec![
                message(json!({"role":"user","content":"hi"})),
                message(json!({"role":"tool","tool_call_id":"ghost","content":"x"})),
            ],
            ..ChatRequest::default()
        };
        let e = build(&req).unwrap_err();
        assert!(matches!(&e, ProviderError::Request(m) if m.contains("ghost")), "{e:?}");
    }

    #[test]
    fn whole_body_with_thinking_and_tool_calls() {
        let body = json!({"model":"llama3.2","created_at":"2025-01-01T00:00:00Z",
            "message":{"role":"assistant","content":"","thinking":"Need both.","tool_calls":[
                {"function":{"name":"get_weather","arguments":{"city":"Paris"}}},
                {"id":"call_xyz","function":{"index":1,"name":"get_time","arguments":{}}}]},
            "done":true,"done_reason":"stop","prompt_eval_count":30,"eval_count":12});
        let c = Ollama.parse_body(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            c.parts,
            vec![
                Part::Thinking { text: "Need both.".into(), signature: None },
                Part::ToolCall {
                    id: "call_0".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Paris"}"#.into()
                },
                Part::ToolCall { id: "call_xyz".into(), name: "get_time".into(), arguments: "{}".into() },
            ]
        );
        assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(c.model.as_deref(), Some("llama3.2"));
        let u = c.usage.unwrap();
        assert_eq!((u.input, u.output), (30, 12));
        let plain =
            br#"{"model":"m","message":{"role":"assistant","content":"Hi"},"done":true,"done_reason":"length"}"#;
        let c = Ollama.parse_body(plain).unwrap();
        assert_eq!((c.text(), c.finish_reason), ("Hi".to_string(), Some(FinishReason::Length)));
        assert!(Ollama.parse_body(br#"{"model":"m","done":true}"#).is_err());
    }

    #[test]
    fn stream_with_thinking_then_a_tool_call() {
        let lines = [
            json!({"model":"qwen3","message":{"role":"assistant","content":"","thinking":"Let me "},"done":false}),
            json!({"model":"qwen3","message":{"role":"assistant","content":"","thinking":"check."},"done":false}),
            json!({"model":"qwen3","message":{"role":"assistant","content":"","tool_calls":[
                {"function":{"name":"get_weather","arguments":{"city":"Paris","unit":"C"}}}]},"done":false}),
            json!({"model":"qwen3","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop",
                "prompt_eval_count":40,"eval_count":20}),
        ];
        let ndjson: String = lines.iter().map(|l| format!("{l}\n")).collect();
        for chunk in [1, 13, 10_000] {
            let d = decode_parts(&Ollama, ndjson.as_bytes(), chunk);
            assert!(d.err.is_none() && d.done);
            assert_eq!(
                d.parts,
                vec![
                    Part::Thinking { text: "Let me check.".into(), signature: None },
                    Part::ToolCall {
                        id: "call_0".into(),
                        name: "get_weather".into(),
                        arguments: r#"{"city":"Paris","unit":"C"}"#.into()
                    },
                ]
            );
            assert_eq!(d.summary.finish_reason, Some(FinishReason::ToolCalls));
            let u = d.summary.usage.unwrap();
            assert_eq!((u.input, u.output), (40, 20));
        }
    }
}
