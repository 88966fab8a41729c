//! `POST /v1/messages` and `POST /v1/messages/count_tokens`: Anthropic's Messages dialect,
//! mapped onto the chat service.
//!
//! Requests: `system` (string or text blocks), `messages` whose content is a string or blocks
//! (`text`, `image` and `document` with a base64 or url source, `tool_use`, `tool_result`,
//! `thinking`), `tools` (custom tools with `input_schema`), `tool_choice` (auto, any, tool,
//! none, `disable_parallel_tool_use`), `thinking` (`enabled` with `budget_tokens`, `disabled`),
//! `max_tokens`, `stop_sequences`, `temperature`, `stream`. Other fields (`top_p`, `top_k`,
//! `metadata`, `cache_control` on blocks) are accepted and not used; server tools (a `type`
//! other than `custom`) and `redacted_thinking` blocks are refused. A user turn's
//! `tool_result` blocks become the domain's tool messages, in order.
//!
//! Answers are `message` objects and the SSE sequence `message_start`, per block
//! `content_block_start` / `content_block_delta` (`text_delta`, `thinking_delta`,
//! `signature_delta`, `input_json_delta`) / `content_block_stop`, `message_delta` (stop
//! reason and usage) and `message_stop`; an error after the stream began is an `error` event.
//!
//! Usage: `input_tokens` excludes cache reads and writes (Anthropic's convention), given apart
//! as `cache_read_input_tokens` / `cache_creation_input_tokens`; the numbers are the ledger
//! record's. `count_tokens` answers the provider's own count where the route reaches one that
//! has a count endpoint (Anthropic), else the daemon's upper bound of the prompt (the number a
//! quota reserves), flagged `"estimated": true`.

use super::call::{self, Encoder};
use super::error::{Dialect, HttpError};
use super::{parse_body, Face};
use crate::chat::service::{Answer, Request};
use crate::chat::{
    ChatRequest, Delta, FinishReason, Image, ImageSource, Message, Part, Reasoning, Role, Tool, ToolChoice,
};
use crate::usage_record::TokenUsage;
use axum::body::Body;
use axum::extract::State as AxState;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Deserialize)]
struct MessagesRequest {
    model: String,
    max_tokens: Option<u32>,
    messages: Vec<AnMessage>,
    system: Option<AnSystem>,
    #[serde(default)]
    tools: Vec<AnTool>,
    tool_choice: Option<AnToolChoice>,
    thinking: Option<AnThinking>,
    stop_sequences: Option<Vec<String>>,
    temperature: Option<f64>,
    #[serde(default)]
    stream: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AnSystem {
    Text(String),
    Blocks(Vec<AnTextBlock>),
}

#[derive(Deserialize)]
struct AnTextBlock {
    text: String,
}

#[derive(Deserialize)]
struct AnMessage {
    role: String,
    content: AnContent,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AnContent {
    Text(String),
    Blocks(Vec<AnBlock>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnBlock {
    Text {
        text: String,
    },
    Image {
        source: AnSource,
    },
    Document {
        source: AnSource,
        title: Option<String>,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default)]
        content: Option<AnContent>,
        #[serde(default)]
        is_error: bool,
    },
    Thinking {
        thinking: String,
        signature: Option<String>,
    },
    RedactedThinking {},
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

#[derive(Deserialize)]
struct AnTool {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: String,
    description: Option<String>,
    input_schema: Option<Value>,
}

#[derive(Deserialize)]
struct AnToolChoice {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
    disable_parallel_tool_use: Option<bool>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnThinking {
    Enabled { budget_tokens: u32 },
    Disabled {},
}

/// The parts of `content` (text, images, documents, tool calls, thinking), and the tool results
/// among them apart, in order.
fn blocks(content: AnContent, at: &str) -> Result<(Vec<Part>, Vec<Part>), HttpError> {
    let list = match content {
        AnContent::Text(text) => return Ok((vec![Part::Text { text }], Vec::new())),
        AnContent::Blocks(b) => b,
    };
    let (mut parts, mut results) = (Vec::new(), Vec::new());
    for (j, b) in list.into_iter().enumerate() {
        let param = || format!("{at}.content[{j}]");
        match b {
            AnBlock::Text { text } => parts.push(Part::Text { text }),
            AnBlock::Image { source } => {
                let source = match source {
                    AnSource::Base64 { media_type, data } => ImageSource::Base64 { data, media_type },
                    AnSource::Url { url } => ImageSource::Url(url),
                };
                let image = Image::new(source, None).map_err(|m| HttpError::bad_request(m).with_param(param()))?;
                parts.push(Part::Image(image));
            }
            AnBlock::Document { source, title } => match source {
                AnSource::Base64 { media_type, data } => parts.push(Part::Document { data, media_type, name: title }),
                AnSource::Url { .. } => {
                    return Err(HttpError::bad_request(
                        "a document needs a base64 source (url documents are not supported)",
                    )
                    .with_param(param()))
                }
            },
            AnBlock::ToolUse { id, name, input } => {
                let arguments = if input.is_null() { "{}".to_string() } else { input.to_string() };
                parts.push(Part::ToolCall { id, name, arguments });
            }
            AnBlock::ToolResult { tool_use_id, content, is_error } => {
                let content = match content {
                    None => Vec::new(),
                    Some(c) => blocks(c, &param())?.0,
                };
                results.push(Part::ToolResult { tool_call_id: tool_use_id, content, is_error });
            }
            AnBlock::Thinking { thinking, signature } => parts.push(Part::Thinking { text: thinking, signature }),
            AnBlock::RedactedThinking {} => {
                return Err(HttpError::bad_request("`redacted_thinking` blocks are not supported").with_param(param()))
            }
        }
    }
    Ok((parts, results))
}

fn chat_request(r: MessagesRequest) -> Result<(String, bool, ChatRequest), HttpError> {
    let mut messages = Vec::with_capacity(r.messages.len());
    for (i, m) in r.messages.into_iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = match m.role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                let shown: String = other.chars().take(32).collect();
                return Err(HttpError::bad_request(format!("unknown role `{shown}`: expected user or assistant"))
                    .with_param(format!("{at}.role")));
            }
        };
        let (content, results) = blocks(m.content, &at)?;
        messages.extend(results.into_iter().map(|r| Message { role: Role::Tool, content: vec![r] }));
        if !content.is_empty() {
            messages.push(Message { role, content });
        }
    }
    let system = r.system.map(|s| match s {
        AnSystem::Text(t) => t,
        AnSystem::Blocks(b) => b.into_iter().map(|b| b.text).collect::<Vec<_>>().join("\n\n"),
    });
    let mut tools = Vec::with_capacity(r.tools.len());
    for (i, t) in r.tools.into_iter().enumerate() {
        if let Some(kind) = t.kind.as_deref().filter(|k| *k != "custom") {
            let shown: String = kind.chars().take(40).collect();
            return Err(HttpError::bad_request(format!(
                "server tool `{shown}` is not supported; only custom tools are"
            ))
            .with_param(format!("tools[{i}]")));
        }
        tools.push(Tool {
            name: t.name,
            description: t.description,
            parameters: t.input_schema.unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        });
    }
    let mut parallel_tool_calls = None;
    let tool_choice = match r.tool_choice {
        None => None,
        Some(c) => {
            parallel_tool_calls = c.disable_parallel_tool_use.map(|d| !d);
            Some(match (c.kind.as_str(), c.name) {
                ("auto", _) => ToolChoice::Auto,
                ("any", _) => ToolChoice::Required,
                ("none", _) => ToolChoice::None,
                ("tool", Some(name)) => ToolChoice::Tool(name),
                _ => {
                    return Err(HttpError::bad_request(
                        "`tool_choice.type` must be auto, any, none, or tool with a `name`",
                    )
                    .with_param("tool_choice"))
                }
            })
        }
    };
    let reasoning = match r.thinking {
        Some(AnThinking::Enabled { budget_tokens }) => Some(Reasoning::Budget { budget_tokens }),
        Some(AnThinking::Disabled {}) | None => None,
    };
    let chat = ChatRequest {
        messages,
        system,
        max_tokens: r.max_tokens,
        temperature: r.temperature,
        stop: r.stop_sequences.unwrap_or_default(),
        tools,
        tool_choice,
        parallel_tool_calls,
        response_format: None,
        reasoning,
    };
    Ok((r.model, r.stream, chat))
}

fn request(r: MessagesRequest) -> Result<Request, HttpError> {
    if r.max_tokens.is_none() {
        return Err(HttpError::bad_request("`max_tokens` is required").with_param("max_tokens"));
    }
    let (route, stream, chat) = chat_request(r)?;
    Ok(Request { route, chat, stream })
}

fn stop_reason(f: Option<&FinishReason>) -> &str {
    match f {
        Some(FinishReason::Length) => "max_tokens",
        Some(FinishReason::ToolCalls) => "tool_use",
        Some(FinishReason::ContentFilter | FinishReason::Refusal) => "refusal",
        Some(FinishReason::Other(o)) if o == "stop_sequence" || o == "pause_turn" => o,
        _ => "end_turn",
    }
}

fn usage(u: &TokenUsage) -> Value {
    json!({
        "input_tokens": u.input.saturating_sub(u.cached).saturating_sub(u.cache_write),
        "output_tokens": u.output,
        "cache_creation_input_tokens": u.cache_write,
        "cache_read_input_tokens": u.cached,
    })
}

fn block(p: &Part) -> Option<Value> {
    Some(match p {
        Part::Text { text } => json!({"type": "text", "text": text}),
        Part::Thinking { text, signature } => {
            json!({"type": "thinking", "thinking": text, "signature": signature.as_deref().unwrap_or("")})
        }
        Part::ToolCall { id, name, arguments } => {
            let input =
                serde_json::from_str::<Value>(arguments).ok().filter(Value::is_object).unwrap_or_else(|| json!({}));
            json!({"type": "tool_use", "id": id, "name": name, "input": input})
        }
        _ => return None,
    })
}

fn message(id: &str, a: &Answer) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": a.model,
        "content": a.parts.iter().filter_map(block).collect::<Vec<_>>(),
        "stop_reason": stop_reason(a.finish_reason.as_ref()),
        "stop_sequence": null,
        "usage": usage(&a.usage),
    })
}

/// What the open content block is.
#[derive(PartialEq, Eq, Clone, Copy)]
enum Open {
    Text,
    Thinking,
    Tool(usize),
}

/// Messages SSE events.
struct Events {
    id: String,
    model: String,
    started: bool,
    /// Blocks begun and not stopped, by index; the last is the one deltas go to.
    open: Vec<(usize, Open)>,
    next_index: usize,
}

impl Events {
    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            let m = json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }});
            call::sse(out, Some("message_start"), &m);
        }
    }

    fn stop(&mut self, out: &mut Vec<u8>, keep: impl Fn(Open) -> bool) {
        let (kept, stopped): (Vec<_>, Vec<_>) = self.open.drain(..).partition(|(_, k)| keep(*k));
        for (index, _) in stopped {
            call::sse(out, Some("content_block_stop"), &json!({"type": "content_block_stop", "index": index}));
        }
        self.open = kept;
    }

    /// The index of the block of kind `k`, begun with `block` if it is not the current one.
    fn block(&mut self, out: &mut Vec<u8>, k: Open, block: Value) -> usize {
        if let Some((index, _)) = self.open.iter().find(|(_, o)| *o == k) {
            if matches!(k, Open::Tool(_)) || self.open.last().is_some_and(|(_, o)| *o == k) {
                return *index;
            }
        }
        // Text and thinking end every open block; a tool call ends open text and thinking.
        self.stop(out, |o| matches!(k, Open::Tool(_)) && matches!(o, Open::Tool(_)));
        let index = self.next_index;
        self.next_index += 1;
        call::sse(
            out,
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        self.open.push((index, k));
        index
    }

    fn block_delta(&self, out: &mut Vec<u8>, index: usize, delta: Value) {
        call::sse(
            out,
            Some("content_block_delta"),
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
    }
}

impl Encoder for Events {
    fn delta(&mut self, d: Delta, out: &mut Vec<u8>) {
        self.start(out);
        match d {
            Delta::Text(t) if t.is_empty() => {}
            Delta::Text(t) => {
                let i = self.block(out, Open::Text, json!({"type": "text", "text": ""}));
                self.block_delta(out, i, json!({"type": "text_delta", "text": t}));
            }
            Delta::Reasoning(t) => {
                let i = self.block(out, Open::Thinking, json!({"type": "thinking", "thinking": "", "signature": ""}));
                if !t.is_empty() {
                    self.block_delta(out, i, json!({"type": "thinking_delta", "thinking": t}));
                }
            }
            Delta::Signature(s) => {
                let i = self.block(out, Open::Thinking, json!({"type": "thinking", "thinking": "", "signature": ""}));
                self.block_delta(out, i, json!({"type": "signature_delta", "signature": s}));
                self.stop(out, |o| o != Open::Thinking);
            }
            Delta::ToolCall { index, id, name, arguments } => {
                let b = json!({"type": "tool_use", "id": id.unwrap_or_default(), "name": name.unwrap_or_default(), "input": {}});
                let i = self.block(out, Open::Tool(index), b);
                if !arguments.is_empty() {
                    self.block_delta(out, i, json!({"type": "input_json_delta", "partial_json": arguments}));
                }
            }
        }
    }

    fn end(&mut self, end: Result<Answer, HttpError>, out: &mut Vec<u8>) {
        match end {
            Ok(a) => {
                self.start(out);
                self.stop(out, |_| false);
                let d = json!({"type": "message_delta",
                    "delta": {"stop_reason": stop_reason(a.finish_reason.as_ref()), "stop_sequence": null},
                    "usage": usage(&a.usage)});
                call::sse(out, Some("message_delta"), &d);
                call::sse(out, Some("message_stop"), &json!({"type": "message_stop"}));
            }
            Err(e) => call::sse(out, Some("error"), &e.body(Dialect::Anthropic)),
        }
    }
}

/// `POST /v1/messages`.
pub async fn messages(AxState(face): AxState<Arc<Face>>, headers: HeaderMap, body: Body) -> Response {
    match run(&face, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.response(Dialect::Anthropic),
    }
}

async fn run(face: &Face, headers: &HeaderMap, body: Body) -> Result<Response, HttpError> {
    let app = face.authenticate(headers)?;
    let body = super::read_body(face, body).await?;
    let req = request(parse_body(body).await?)?;
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let enc = Events { id: id.clone(), model: req.route.clone(), started: false, open: Vec::new(), next_index: 0 };
    call::respond(&face.state, app, req, |a| message(&id, a), enc).await
}

/// `POST /v1/messages/count_tokens`.
pub async fn count_tokens(AxState(face): AxState<Arc<Face>>, headers: HeaderMap, body: Body) -> Response {
    let counted = async {
        let app = face.authenticate(&headers)?;
        let body = super::read_body(&face, body).await?;
        let (route, _, chat) = chat_request(parse_body(body).await?)?;
        let caller = crate::chat::service::Caller { app };
        let c = match crate::chat::service::count_tokens(&face.state, &caller, &route, &chat).await {
            Ok(c) => c,
            Err(e) => return Err(HttpError::from(crate::api::chat_error(e, &face.state).await)),
        };
        let mut out = json!({"input_tokens": c.input_tokens});
        if c.estimated {
            out["estimated"] = Value::Bool(true);
        }
        Ok::<_, HttpError>(out)
    };
    match counted.await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.response(Dialect::Anthropic),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn req(v: Value) -> Result<Request, HttpError> {
        request(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn tool_results_become_tool_messages_in_order() {
        let r = req(json!({
            "model": "claude", "max_tokens": 100, "system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "tools": [{"name": "look", "input_schema": {"type": "object"}}],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "tool_use", "id": "t1", "name": "look", "input": {"q": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a cat"},
                    {"type": "text", "text": "and?"}]},
            ],
        }))
        .unwrap();
        let c = &r.chat;
        assert_eq!(c.system.as_deref(), Some("a\n\nb"));
        assert_eq!(c.reasoning, Some(Reasoning::Budget { budget_tokens: 2048 }));
        assert_eq!(c.tool_choice, Some(ToolChoice::Required));
        assert_eq!(c.parallel_tool_calls, Some(false));
        let roles: Vec<Role> = c.messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, vec![Role::User, Role::Assistant, Role::Tool, Role::User]);
        assert!(matches!(&c.messages[1].content[1], Part::ToolCall { arguments, .. } if arguments == r#"{"q":1}"#));
    }

    #[test]
    fn refuses_server_tools_and_missing_max_tokens() {
        let m = json!([{"role": "user", "content": "x"}]);
        assert_eq!(req(json!({"model": "c", "messages": m})).err().unwrap().param.as_deref(), Some("max_tokens"));
        let e = req(json!({"model": "c", "max_tokens": 5, "messages": m,
            "tools": [{"type": "web_search_20250305", "name": "web_search"}]}))
        .err()
        .unwrap();
        assert!(e.message.contains("server tool"), "{}", e.message);
        let bmp = json!([{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "Qk0="}}]}]);
        let e = req(json!({"model": "c", "max_tokens": 5, "messages": bmp})).err().unwrap();
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0]"));
        assert!(e.message.contains("image/bmp"), "{}", e.message);
    }

    #[test]
    fn stream_events_follow_anthropics_sequence() {
        let mut e = Events { id: "msg_1".into(), model: "c".into(), started: false, open: Vec::new(), next_index: 0 };
        let mut out = Vec::new();
        e.delta(Delta::Reasoning("hm".into()), &mut out);
        e.delta(Delta::Signature("sig".into()), &mut out);
        e.delta(Delta::Text("Hi".into()), &mut out);
        e.delta(
            Delta::ToolCall { index: 0, id: Some("t1".into()), name: Some("look".into()), arguments: String::new() },
            &mut out,
        );
        e.delta(Delta::ToolCall { index: 0, id: None, name: None, arguments: "{\"q\":".into() }, &mut out);
        e.delta(Delta::ToolCall { index: 0, id: None, name: None, arguments: "1}".into() }, &mut out);
        let a = Answer {
            finish_reason: Some(FinishReason::ToolCalls),
            usage: TokenUsage { input: 10, cached: 4, output: 3, ..TokenUsage::default() },
            ..Answer::default()
        };
        e.end(Ok(a), &mut out);
        let out = String::from_utf8(out).unwrap();
        let names: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(
            names,
            vec![
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        let last_delta: Value = out
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str::<Value>(d).unwrap())
            .find(|v| v["type"] == "message_delta")
            .unwrap();
        assert_eq!(last_delta["delta"]["stop_reason"], "tool_use");
        assert_eq!(last_delta["usage"]["input_tokens"], 6);
        assert_eq!(last_delta["usage"]["cache_read_input_tokens"], 4);
    }
}
