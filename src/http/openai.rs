//! `POST /v1/chat/completions`: OpenAI's Chat Completions dialect, mapped onto the chat service.
//!
//! Requests: `messages` (system/developer, user with text, `image_url` and `file` (PDF) parts,
//! assistant with `tool_calls`, tool), `tools` (functions), `tool_choice`, `parallel_tool_calls`,
//! `response_format` (text, json_object, json_schema), `max_tokens` / `max_completion_tokens`,
//! `stop`, `temperature`, `reasoning_effort`, `stream` with `stream_options.include_usage`.
//! Other OpenAI fields (`top_p`, `seed`, `user`, ...) are accepted and not used; `n` > 1 and
//! audio parts are refused. Answers are `chat.completion` objects and `chat.completion.chunk`
//! SSE events ending in `data: [DONE]`, in OpenAI's exact shapes; reasoning streams as
//! `delta.reasoning_content` (the DeepSeek/OpenRouter convention).
//!
//! Usage: `prompt_tokens` is every billed input token (cached included, as OpenAI counts),
//! `completion_tokens` includes reasoning; the numbers are the ledger record's.

use super::call::{self, Encoder};
use super::error::{Dialect, HttpError};
use super::{parse_body, Face};
use crate::chat::service::{Answer, Request};
use crate::chat::{
    joined_text, reasoning_text, ChatRequest, Delta, Effort, FinishReason, Image, ImageSource, Message, Part,
    Reasoning, ResponseFormat, Role, Tool, ToolChoice,
};
use crate::usage_record::TokenUsage;
use axum::body::Body;
use axum::extract::State as AxState;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Deserialize)]
struct CompletionRequest {
    model: String,
    messages: Vec<OaMessage>,
    #[serde(default)]
    tools: Vec<OaTool>,
    tool_choice: Option<OaToolChoice>,
    parallel_tool_calls: Option<bool>,
    response_format: Option<OaResponseFormat>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    stop: Option<Stop>,
    temperature: Option<f64>,
    reasoning_effort: Option<String>,
    n: Option<u32>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct OaMessage {
    role: String,
    #[serde(default)]
    content: Option<OaContent>,
    #[serde(default)]
    tool_calls: Vec<OaToolCall>,
    tool_call_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OaContent {
    Text(String),
    Parts(Vec<OaPart>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OaPart {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
    File { file: OaFile },
    Refusal { refusal: String },
    InputAudio {},
}

#[derive(Deserialize)]
struct ImageUrl {
    url: String,
    detail: Option<String>,
}

#[derive(Deserialize)]
struct OaFile {
    file_data: Option<String>,
    filename: Option<String>,
}

#[derive(Deserialize)]
struct OaToolCall {
    id: String,
    function: OaFunctionCall,
}

#[derive(Deserialize)]
struct OaFunctionCall {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize)]
struct OaTool {
    function: OaFunction,
}

#[derive(Deserialize)]
struct OaFunction {
    name: String,
    description: Option<String>,
    parameters: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OaToolChoice {
    Word(String),
    Named { function: OaNamed },
}

#[derive(Deserialize)]
struct OaNamed {
    name: String,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OaResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: OaJsonSchema },
}

#[derive(Deserialize)]
struct OaJsonSchema {
    name: String,
    schema: Option<Value>,
    strict: Option<bool>,
}

fn parts(content: Option<OaContent>, at: &str) -> Result<Vec<Part>, HttpError> {
    let Some(content) = content else { return Ok(Vec::new()) };
    let list = match content {
        OaContent::Text(text) => return Ok(vec![Part::Text { text }]),
        OaContent::Parts(list) => list,
    };
    let mut out = Vec::with_capacity(list.len());
    for (j, p) in list.into_iter().enumerate() {
        let param = || format!("{at}.content[{j}]");
        out.push(match p {
            OaPart::Text { text } | OaPart::Refusal { refusal: text } => Part::Text { text },
            OaPart::ImageUrl { image_url } => ImageSource::from_url(image_url.url)
                .and_then(|source| Image::new(source, image_url.detail))
                .map(Part::Image)
                .map_err(|m| HttpError::bad_request(m).with_param(param()))?,
            OaPart::File { file } => {
                let data = file.file_data.as_deref().and_then(|d| d.strip_prefix("data:application/pdf;base64,"));
                match data {
                    Some(d) => Part::Document { data: d.to_string(), media_type: "application/pdf".into(), name: file.filename },
                    None => {
                        return Err(HttpError::bad_request(
                            "a `file` part needs `file_data` as a data:application/pdf;base64, URL (uploaded file ids are not supported)",
                        )
                        .with_param(param()))
                    }
                }
            }
            OaPart::InputAudio {} => {
                return Err(HttpError::bad_request("audio input is not supported").with_param(param()))
            }
        });
    }
    Ok(out)
}

fn request(r: CompletionRequest) -> Result<Request, HttpError> {
    if r.n.is_some_and(|n| n != 1) {
        return Err(HttpError::bad_request("only `n: 1` is supported").with_param("n"));
    }
    let mut messages = Vec::with_capacity(r.messages.len());
    for (i, m) in r.messages.into_iter().enumerate() {
        let at = format!("messages[{i}]");
        let mut content = parts(m.content, &at)?;
        let role = match m.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => {
                content.extend(m.tool_calls.into_iter().map(|c| Part::ToolCall {
                    id: c.id,
                    name: c.function.name,
                    arguments: c.function.arguments,
                }));
                Role::Assistant
            }
            "tool" => {
                let Some(id) = m.tool_call_id else {
                    return Err(HttpError::bad_request("a `tool` message needs `tool_call_id`").with_param(at));
                };
                content = vec![Part::ToolResult { tool_call_id: id, content, is_error: false }];
                Role::Tool
            }
            other => {
                let shown: String = other.chars().take(32).collect();
                return Err(HttpError::bad_request(format!(
                    "unknown role `{shown}`: expected system, developer, user, assistant or tool"
                ))
                .with_param(format!("{at}.role")));
            }
        };
        messages.push(Message { role, content });
    }
    let tools = r
        .tools
        .into_iter()
        .map(|t| Tool {
            name: t.function.name,
            description: t.function.description,
            parameters: t.function.parameters.unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        })
        .collect();
    let tool_choice = match r.tool_choice {
        None => None,
        Some(OaToolChoice::Named { function }) => Some(ToolChoice::Tool(function.name)),
        Some(OaToolChoice::Word(w)) => Some(match w.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => {
                return Err(HttpError::bad_request(
                    "`tool_choice` must be auto, none, required or {type: function, function: {name}}",
                )
                .with_param("tool_choice"))
            }
        }),
    };
    let response_format = r.response_format.map(|f| match f {
        OaResponseFormat::Text => ResponseFormat::Text,
        OaResponseFormat::JsonObject => ResponseFormat::JsonObject,
        OaResponseFormat::JsonSchema { json_schema } => ResponseFormat::JsonSchema {
            name: json_schema.name,
            schema: json_schema.schema.unwrap_or_else(|| json!({"type": "object"})),
            strict: json_schema.strict,
        },
    });
    let reasoning = match r.reasoning_effort.as_deref() {
        None => None,
        Some("minimal" | "low") => Some(Reasoning::Effort { effort: Effort::Low }),
        Some("medium") => Some(Reasoning::Effort { effort: Effort::Medium }),
        Some("high") => Some(Reasoning::Effort { effort: Effort::High }),
        Some(_) => {
            return Err(HttpError::bad_request("`reasoning_effort` must be minimal, low, medium or high")
                .with_param("reasoning_effort"))
        }
    };
    let stop = match r.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    let chat = ChatRequest {
        messages,
        system: None,
        max_tokens: r.max_completion_tokens.or(r.max_tokens),
        temperature: r.temperature,
        stop,
        tools,
        tool_choice,
        parallel_tool_calls: r.parallel_tool_calls,
        response_format,
        reasoning,
    };
    Ok(Request { route: r.model, chat, stream: r.stream })
}

fn finish_reason(f: Option<&FinishReason>) -> &'static str {
    match f {
        Some(FinishReason::Length) => "length",
        Some(FinishReason::ToolCalls) => "tool_calls",
        Some(FinishReason::ContentFilter | FinishReason::Refusal) => "content_filter",
        _ => "stop",
    }
}

fn usage(u: &TokenUsage) -> Value {
    json!({
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.input + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cached},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning},
    })
}

fn tool_calls_out(a: &Answer) -> Vec<Value> {
    a.parts
        .iter()
        .filter_map(|p| match p {
            Part::ToolCall { id, name, arguments } => Some(json!({
                "id": id, "type": "function", "function": {"name": name, "arguments": arguments},
            })),
            _ => None,
        })
        .collect()
}

fn completion(id: &str, created: u64, a: &Answer) -> Value {
    let text = joined_text(&a.parts);
    let calls = tool_calls_out(a);
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) },
        "refusal": null,
        "annotations": [],
    });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    if let Some(r) = reasoning_text(&a.parts) {
        message["reasoning_content"] = Value::String(r);
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": a.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(a.finish_reason.as_ref())}],
        "usage": usage(&a.usage),
        "system_fingerprint": null,
        "service_tier": null,
    })
}

/// Chat completion chunks.
struct Chunks {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    started: bool,
}

/// One `chat.completion.chunk`, serialized as it is (no JSON tree built per delta).
#[derive(Serialize)]
struct ChunkOut<'a, D: Serialize> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: Option<()>,
    choices: &'a [ChoiceOut<'a, D>],
    /// `null` on every chunk but the last when usage is asked for; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Value>>,
}

#[derive(Serialize)]
struct ChoiceOut<'a, D: Serialize> {
    index: u32,
    delta: D,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

/// A chunk's `delta`.
#[derive(Serialize)]
#[serde(untagged)]
enum DeltaOut<'a> {
    Role { role: &'static str, content: &'static str, refusal: Option<()> },
    Content { content: &'a str },
    Reasoning { reasoning_content: &'a str },
    ToolCalls { tool_calls: [ToolCallOut<'a>; 1] },
    Empty {},
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

impl Chunks {
    /// Appends the chunk of `delta` (with `finish`) as an SSE event.
    fn chunk(&self, out: &mut Vec<u8>, delta: DeltaOut<'_>, finish: Option<&str>) {
        let choices = [ChoiceOut { index: 0, delta, logprobs: None, finish_reason: finish }];
        call::sse(out, None, &self.out(&choices, self.include_usage.then_some(None)));
    }

    fn out<'a, D: Serialize>(
        &'a self,
        choices: &'a [ChoiceOut<'a, D>],
        usage: Option<Option<Value>>,
    ) -> ChunkOut<'a, D> {
        ChunkOut {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            system_fingerprint: None,
            choices,
            usage,
        }
    }

    fn open(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            self.chunk(out, DeltaOut::Role { role: "assistant", content: "", refusal: None }, None);
        }
    }
}

impl Encoder for Chunks {
    fn delta(&mut self, d: Delta, out: &mut Vec<u8>) {
        self.open(out);
        let delta = match &d {
            Delta::Text(t) if t.is_empty() => return,
            Delta::Text(t) => DeltaOut::Content { content: t },
            Delta::Reasoning(t) if t.is_empty() => return,
            Delta::Reasoning(t) => DeltaOut::Reasoning { reasoning_content: t },
            Delta::Signature(_) => return,
            Delta::ToolCall { index, id, name, arguments } => DeltaOut::ToolCalls {
                tool_calls: [ToolCallOut {
                    index: *index,
                    id: id.as_deref(),
                    kind: id.as_ref().map(|_| "function"),
                    function: FunctionOut { name: name.as_deref(), arguments },
                }],
            },
        };
        self.chunk(out, delta, None);
    }

    fn end(&mut self, end: Result<Answer, HttpError>, out: &mut Vec<u8>) {
        match end {
            Ok(a) => {
                self.open(out);
                self.model.clone_from(&a.model);
                self.chunk(out, DeltaOut::Empty {}, Some(finish_reason(a.finish_reason.as_ref())));
                if self.include_usage {
                    let none: [ChoiceOut<'_, DeltaOut<'_>>; 0] = [];
                    call::sse(out, None, &self.out(&none, Some(Some(usage(&a.usage)))));
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            Err(e) => call::sse(out, None, &e.body(Dialect::OpenAi)),
        }
    }
}

/// The handler.
pub async fn completions(AxState(face): AxState<Arc<Face>>, headers: HeaderMap, body: Body) -> Response {
    match run(&face, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.response(Dialect::OpenAi),
    }
}

async fn run(face: &Face, headers: &HeaderMap, body: Body) -> Result<Response, HttpError> {
    let app = face.authenticate(headers)?;
    let body = super::read_body(face, body).await?;
    let r: CompletionRequest = parse_body(body).await?;
    let include_usage = r.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let req = request(r)?;
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = super::unix_now();
    let enc = Chunks { id: id.clone(), created, model: req.route.clone(), include_usage, started: false };
    call::respond(&face.state, app, req, |a| completion(&id, created, a), enc).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn req(v: Value) -> Result<Request, HttpError> {
        request(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn maps_messages_tools_and_formats() {
        let r = req(json!({
            "model": "fast", "max_completion_tokens": 50, "max_tokens": 10, "stop": "END", "reasoning_effort": "high",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K", "detail": "low"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "look", "arguments": "{\"q\":1}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "a cat"},
            ],
            "tools": [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "look"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": true}},
        }))
        .unwrap();
        let c = &r.chat;
        assert_eq!(c.max_tokens, Some(50));
        assert_eq!(c.stop, vec!["END".to_string()]);
        assert_eq!(c.system_text().as_deref(), Some("be brief"));
        assert!(
            matches!(&c.messages[1].content[1], Part::Image(Image { source: ImageSource::Base64 { media_type, .. }, .. }) if media_type == "image/png")
        );
        assert!(matches!(&c.messages[2].content[0], Part::ToolCall { name, .. } if name == "look"));
        assert!(matches!(&c.messages[3].content[0], Part::ToolResult { tool_call_id, .. } if tool_call_id == "c1"));
        assert_eq!(c.tool_choice, Some(ToolChoice::Tool("look".into())));
        assert!(matches!(c.response_format, Some(ResponseFormat::JsonSchema { strict: Some(true), .. })));
        assert_eq!(c.reasoning, Some(Reasoning::Effort { effort: Effort::High }));
    }

    #[test]
    fn refuses_what_it_cannot_do_with_the_param() {
        let e = req(json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]})).err().unwrap();
        assert_eq!(e.param.as_deref(), Some("n"));
        let e = req(json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}))
            .err()
            .unwrap();
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0]"));
        let tiff = json!([{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}]);
        let e = req(json!({"model": "m", "messages": [{"role": "user", "content": tiff}]})).err().unwrap();
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0]"));
        assert!(e.message.contains("image/tiff"), "{}", e.message);
        let e = req(json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]})).err().unwrap();
        assert!(e.message.contains("unknown role"));
    }

    #[test]
    fn stream_chunks_have_openai_shapes() {
        let mut c =
            Chunks { id: "chatcmpl-1".into(), created: 1, model: "m".into(), include_usage: true, started: false };
        let mut out = Vec::new();
        c.delta(Delta::Text("Hi".into()), &mut out);
        c.delta(
            Delta::ToolCall { index: 0, id: Some("c1".into()), name: Some("f".into()), arguments: String::new() },
            &mut out,
        );
        c.delta(Delta::ToolCall { index: 0, id: None, name: None, arguments: "{}".into() }, &mut out);
        let a = Answer {
            model: "m-1".into(),
            finish_reason: Some(FinishReason::ToolCalls),
            usage: TokenUsage { input: 3, output: 2, ..TokenUsage::default() },
            ..Answer::default()
        };
        c.end(Ok(a), &mut out);
        let out = String::from_utf8(out).unwrap();
        let events: Vec<&str> = out.split("\n\n").filter(|s| !s.is_empty()).collect();
        assert_eq!(events.len(), 7, "{out}");
        let v: Vec<Value> =
            events[..6].iter().map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap()).collect();
        assert_eq!(v[0]["choices"][0]["delta"], json!({"role": "assistant", "content": "", "refusal": null}));
        assert_eq!(
            v[1],
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "system_fingerprint": null, "usage": null,
                "choices": [{"index": 0, "delta": {"content": "Hi"}, "logprobs": null, "finish_reason": null}]})
        );
        assert_eq!(
            v[2]["choices"][0]["delta"],
            json!({"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]})
        );
        assert_eq!(v[3]["choices"][0]["delta"], json!({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}));
        assert_eq!(v[4]["choices"][0]["delta"], json!({}));
        assert_eq!(v[4]["model"], "m-1");
        assert_eq!(v[2]["choices"][0]["delta"]["tool_calls"][0]["id"], "c1");
        assert_eq!(v[3]["choices"][0]["delta"]["tool_calls"][0].get("id"), None);
        assert_eq!(v[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v[5]["choices"], json!([]));
        assert_eq!(v[5]["usage"]["total_tokens"], 5);
        assert_eq!(events[6], "data: [DONE]");
    }
}
