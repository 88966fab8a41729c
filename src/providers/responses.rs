//! OpenAI Responses API (`POST {base}/responses`), chosen per provider with `api = "responses"`
//! on an `openai`-adapter entry.
//!
//! Request translation:
//! - the system text ([`ChatRequest::system_text`]) is `instructions`; the other messages become
//!   `input` items in order: user content as a `message` of `input_text` / `input_image`
//!   (`image_url` is the https URL or a `data:` URL) / `input_file` (`file_data` a
//!   `data:application/pdf;base64,` URL, `filename` the document's name or `document.pdf`);
//!   assistant text as a `message` of `output_text`; each tool call as a `function_call`
//!   (`call_id` = the part's id); each tool result as a `function_call_output` whose `output` is
//!   the result's text (a list of `input_text` / `input_image` when it carries images; `is_error`
//!   has no field here and is not sent);
//! - a thinking part is handed back as a `reasoning` item only when its signature is one this
//!   adapter wrote: `<item id>:<encrypted_content>` (the id may be empty). Other signatures
//!   (Anthropic's, Gemini's) and unsigned thinking cannot be verified by OpenAI and are left out;
//!   the part's text goes back as one `summary_text`;
//! - tools are `function` tools with `strict: false` (the Responses API defaults to strict
//!   schemas, which arbitrary app schemas fail; Chat Completions defaults to non-strict);
//!   `tool_choice`, `parallel_tool_calls`; `response_format` is `text.format`; `reasoning` is
//!   `{effort, summary: "auto"}`; `max_tokens` is `max_output_tokens`; `temperature`;
//! - when the request asks for reasoning or hands reasoning back, it sends `store: false` and
//!   `include: ["reasoning.encrypted_content"]`, so reasoning travels with the conversation
//!   (stateless; nothing is kept at OpenAI);
//! - `stop` does not exist in this API: [`ProviderError::Unsupported`] `stop`.
//!
//! Response translation (whole bodies and streams give the same parts):
//! - `message` items: `output_text` is text, `refusal` is text and finish `refusal`;
//!   `function_call` items are tool calls (id = `call_id`); `reasoning` items are thinking parts
//!   (summary texts joined with a blank line, signature as above when `encrypted_content` is
//!   present); a reasoning item with neither summary nor encrypted content gives no part;
//! - finish: status `completed` is `stop`, or `tool_calls` when the answer has function calls
//!   (a refusal wins over both); `incomplete` is `length` for `max_output_tokens`,
//!   `content_filter` for `content_filter`, else the reason as given;
//! - usage: `input_tokens` (cached included) is `input`, `input_tokens_details.cached_tokens` is
//!   `cached`, `output_tokens` (reasoning included) is `output`,
//!   `output_tokens_details.reasoning_tokens` is `reasoning`;
//! - an `error` object in a 2xx body, a `response.failed` event (after recording its usage) or an
//!   `error` event is [`ProviderError::Stream`], retryable for server errors and rate limits.
//!
//! Stream events (the data's `type`, or the SSE `event:` when the data has none):
//! `response.output_text.delta` / `response.refusal.delta` are text;
//! `response.reasoning_summary_text.delta` is reasoning (a new summary part of the same item is
//! preceded by a blank line); `response.output_item.added` with a `function_call` opens a tool
//! call (index = its ordinal among the answer's function calls), and
//! `response.function_call_arguments.delta` (matched by `item_id`, else `output_index`) appends
//! its arguments; `response.output_item.done` of a reasoning item gives its signature (and its
//! summary, if none was streamed), of a function call any arguments not streamed;
//! `response.completed` / `response.incomplete` carry usage and finish and end the stream.

use super::{
    error::{retryable_error_type, retryable_status, truncate},
    json_post, parse_json, set_secret_header, ChatRequest, Completion, Frame, Provider, ProviderError, ProviderSpec,
    StreamDecoder, StreamSummary,
};
use crate::chat::{Delta, FinishReason, ImageSource, MediaBound, Part, ResponseFormat, Role, ToolChoice};
use crate::usage_record::TokenUsage;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

pub struct Responses;

impl Provider for Responses {
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
        let body = serde_json::to_value(request_body(model, req, stream)?)
            .map_err(|e| ProviderError::Request(format!("cannot encode body: {e}")))?;
        let mut request = json_post(spec, &format!("{base}/responses"), &body)?;
        if let Some(key) = key {
            set_secret_header(&mut request, "authorization", "Bearer ", key)?;
        }
        Ok(request)
    }

    fn parse_body(&self, body: &[u8]) -> Result<Completion, ProviderError> {
        let r: ResponseObj = serde_json::from_slice(body)
            .map_err(|e| ProviderError::Malformed(format!("not a Responses API body: {e}")))?;
        if let Some(err) = &r.error {
            return Err(err.to_error());
        }
        if r.status.as_deref() == Some("failed") {
            return Err(ErrorWire::default().to_error());
        }
        let mut parts = Vec::new();
        let mut refused = false;
        for item in &r.output {
            match item {
                OutputItem::Message { content } => {
                    for c in content {
                        match c {
                            OutputContent::OutputText { text } => push_text(&mut parts, text),
                            OutputContent::Refusal { refusal } => {
                                refused = true;
                                push_text(&mut parts, refusal);
                            }
                            OutputContent::Other => {}
                        }
                    }
                }
                OutputItem::FunctionCall { call_id, name, arguments, .. } => {
                    parts.push(Part::ToolCall { id: call_id.clone(), name: name.clone(), arguments: arguments.clone() })
                }
                OutputItem::Reasoning { id, summary, encrypted_content } => {
                    let text = summary_text(summary);
                    let signature = encrypted_content.as_deref().map(|enc| encode_signature(id.as_deref(), enc));
                    if !text.is_empty() || signature.is_some() {
                        parts.push(Part::Thinking { text, signature });
                    }
                }
                OutputItem::Other => {}
            }
        }
        let has_calls = parts.iter().any(|p| matches!(p, Part::ToolCall { .. }));
        Ok(Completion {
            finish_reason: finish_of(&r, has_calls, refused),
            model: r.model.clone(),
            usage: r.usage.as_ref().map(UsageWire::to_usage),
            provider_cost_microusd: None,
            parts,
        })
    }

    fn body_usage(&self, body: &Value) -> Option<TokenUsage> {
        let usage = body.get("usage").or_else(|| body.get("response").and_then(|r| r.get("usage")))?;
        UsageWire::deserialize(usage).ok().map(|u| u.to_usage())
    }

    fn decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(Decoder::default())
    }

    fn media_bound(&self, model: &str) -> MediaBound {
        super::openai::media_bound(model)
    }
}

/// Appends text to the last part when it is text (one `message` item may hold several pieces).
fn push_text(parts: &mut Vec<Part>, t: &str) {
    match parts.last_mut() {
        Some(Part::Text { text }) => text.push_str(t),
        _ => parts.push(Part::Text { text: t.to_string() }),
    }
}

// ---- request ----------------------------------------------------------------------------------

#[derive(Serialize)]
struct RequestBody<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    instructions: Option<String>,
    input: Vec<InputItem<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<FunctionTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoiceWire<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<TextOptions<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<ReasoningWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    include: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    stream: bool,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum InputItem<'a> {
    Message {
        role: &'static str,
        content: Vec<Content<'a>>,
    },
    FunctionCall {
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
    },
    FunctionCallOutput {
        call_id: &'a str,
        output: ToolOutput<'a>,
    },
    Reasoning {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        encrypted_content: &'a str,
        summary: Vec<SummaryPart<'a>>,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Content<'a> {
    InputText {
        text: &'a str,
    },
    OutputText {
        text: &'a str,
    },
    InputImage {
        image_url: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<&'a str>,
    },
    InputFile {
        filename: &'a str,
        file_data: String,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum ToolOutput<'a> {
    Text(String),
    Parts(Vec<Content<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum SummaryPart<'a> {
    SummaryText { text: &'a str },
}

#[derive(Serialize)]
struct FunctionTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: &'a Value,
    strict: bool,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ToolChoiceWire<'a> {
    Mode(&'static str),
    Named(NamedTool<'a>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum NamedTool<'a> {
    Function { name: &'a str },
}

#[derive(Serialize)]
struct TextOptions<'a> {
    format: Format<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Format<'a> {
    Text,
    JsonObject,
    JsonSchema {
        name: &'a str,
        schema: &'a Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        strict: Option<bool>,
    },
}

#[derive(Serialize)]
struct ReasoningWire {
    effort: &'static str,
    summary: &'static str,
}

/// A reasoning item's signature as carried in [`Part::Thinking`]: `<id>:<encrypted_content>`.
fn encode_signature(id: Option<&str>, encrypted: &str) -> String {
    format!("{}:{encrypted}", id.unwrap_or_default())
}

/// The item id (if any) and encrypted content of a signature [`encode_signature`] wrote; `None`
/// for any other signature (no `:`, or not an item id before it).
fn decode_signature(sig: &str) -> Option<(Option<&str>, &str)> {
    let (id, encrypted) = sig.split_once(':')?;
    let id_like = id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (id_like && !encrypted.is_empty()).then_some(((!id.is_empty()).then_some(id), encrypted))
}

fn data_url(media_type: &str, data: &str) -> String {
    format!("data:{media_type};base64,{data}")
}

fn image_content<'a>(img: &'a crate::chat::Image) -> Content<'a> {
    let image_url = match &img.source {
        ImageSource::Url(u) => u.clone(),
        ImageSource::Base64 { data, media_type } => data_url(media_type, data),
    };
    Content::InputImage { image_url, detail: img.detail.as_deref() }
}

fn misplaced(role: Role, p: &Part) -> ProviderError {
    ProviderError::Request(format!(
        "a {} part in a {} message (the request was not validated)",
        crate::chat::types::part_name(p),
        role.as_str()
    ))
}

fn request_body<'a>(model: &'a str, req: &'a ChatRequest, stream: bool) -> Result<RequestBody<'a>, ProviderError> {
    if !req.stop.is_empty() {
        return Err(ProviderError::Unsupported { feature: "stop" });
    }
    let mut input = Vec::new();
    for m in req.turns() {
        match m.role {
            Role::User => {
                let content = m
                    .content
                    .iter()
                    .map(|p| match p {
                        Part::Text { text } => Ok(Content::InputText { text }),
                        Part::Image(img) => Ok(image_content(img)),
                        Part::Document { data, media_type, name } => Ok(Content::InputFile {
                            filename: name.as_deref().unwrap_or("document.pdf"),
                            file_data: data_url(media_type, data),
                        }),
                        other => Err(misplaced(m.role, other)),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                input.push(InputItem::Message { role: "user", content });
            }
            Role::Assistant => {
                // Consecutive text parts form one message item; calls and reasoning end it.
                let mut text: Vec<Content<'a>> = Vec::new();
                for p in &m.content {
                    match p {
                        Part::Text { text: t } => text.push(Content::OutputText { text: t }),
                        Part::ToolCall { id, name, arguments } => {
                            flush_assistant(&mut input, &mut text);
                            input.push(InputItem::FunctionCall { call_id: id, name, arguments });
                        }
                        Part::Thinking { text: t, signature } => {
                            let Some((id, encrypted_content)) = signature.as_deref().and_then(decode_signature) else {
                                continue;
                            };
                            flush_assistant(&mut input, &mut text);
                            let summary =
                                if t.is_empty() { Vec::new() } else { vec![SummaryPart::SummaryText { text: t }] };
                            input.push(InputItem::Reasoning { id, encrypted_content, summary });
                        }
                        other => return Err(misplaced(m.role, other)),
                    }
                }
                flush_assistant(&mut input, &mut text);
            }
            Role::Tool => {
                for p in &m.content {
                    let Part::ToolResult { tool_call_id, content, .. } = p else {
                        return Err(misplaced(m.role, p));
                    };
                    let output = if content.iter().any(|c| matches!(c, Part::Image(_))) {
                        ToolOutput::Parts(
                            content
                                .iter()
                                .filter_map(|c| match c {
                                    Part::Text { text } => Some(Content::InputText { text }),
                                    Part::Image(img) => Some(image_content(img)),
                                    _ => None,
                                })
                                .collect(),
                        )
                    } else {
                        ToolOutput::Text(crate::chat::joined_text(content))
                    };
                    input.push(InputItem::FunctionCallOutput { call_id: tool_call_id, output });
                }
            }
            Role::System => {}
        }
    }
    let hands_back_reasoning = input.iter().any(|i| matches!(i, InputItem::Reasoning { .. }));
    let stateless = req.reasoning.is_some() || hands_back_reasoning;
    Ok(RequestBody {
        model,
        instructions: req.system_text(),
        input,
        tools: req
            .tools
            .iter()
            .map(|t| FunctionTool {
                kind: "function",
                name: &t.name,
                description: t.description.as_deref(),
                parameters: &t.parameters,
                strict: false,
            })
            .collect(),
        tool_choice: req.tool_choice.as_ref().map(|c| match c {
            ToolChoice::Auto => ToolChoiceWire::Mode("auto"),
            ToolChoice::None => ToolChoiceWire::Mode("none"),
            ToolChoice::Required => ToolChoiceWire::Mode("required"),
            ToolChoice::Tool(name) => ToolChoiceWire::Named(NamedTool::Function { name }),
        }),
        parallel_tool_calls: req.parallel_tool_calls,
        text: req.response_format.as_ref().map(|f| TextOptions {
            format: match f {
                ResponseFormat::Text => Format::Text,
                ResponseFormat::JsonObject => Format::JsonObject,
                ResponseFormat::JsonSchema { name, schema, strict } => {
                    Format::JsonSchema { name, schema, strict: *strict }
                }
            },
        }),
        reasoning: req.reasoning.map(|r| ReasoningWire { effort: r.effort().as_str(), summary: "auto" }),
        store: stateless.then_some(false),
        include: if stateless { vec!["reasoning.encrypted_content"] } else { Vec::new() },
        max_output_tokens: req.max_tokens,
        temperature: req.temperature,
        stream,
    })
}

fn flush_assistant<'a>(input: &mut Vec<InputItem<'a>>, text: &mut Vec<Content<'a>>) {
    if !text.is_empty() {
        input.push(InputItem::Message { role: "assistant", content: std::mem::take(text) });
    }
}

// ---- response ---------------------------------------------------------------------------------

/// `null` or absent reads as the default (empty list).
fn null_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A response object: a whole body, or the `response` of a stream's lifecycle events.
#[derive(Deserialize, Default)]
struct ResponseObj {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    output: Vec<OutputItem>,
    #[serde(default)]
    usage: Option<UsageWire>,
    #[serde(default)]
    error: Option<ErrorWire>,
    #[serde(default)]
    incomplete_details: Option<IncompleteDetails>,
}

#[derive(Deserialize)]
struct IncompleteDetails {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutputItem {
    Message {
        #[serde(default, deserialize_with = "null_default")]
        content: Vec<OutputContent>,
    },
    FunctionCall {
        #[serde(default)]
        id: Option<String>,
        call_id: String,
        name: String,
        #[serde(default, deserialize_with = "null_default")]
        arguments: String,
    },
    Reasoning {
        #[serde(default)]
        id: Option<String>,
        #[serde(default, deserialize_with = "null_default")]
        summary: Vec<SummaryWire>,
        #[serde(default)]
        encrypted_content: Option<String>,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutputContent {
    OutputText {
        #[serde(default, deserialize_with = "null_default")]
        text: String,
    },
    Refusal {
        #[serde(default, deserialize_with = "null_default")]
        refusal: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct SummaryWire {
    #[serde(default, deserialize_with = "null_default")]
    text: String,
}

fn summary_text(summary: &[SummaryWire]) -> String {
    summary.iter().map(|s| s.text.as_str()).filter(|t| !t.is_empty()).collect::<Vec<_>>().join("\n\n")
}

#[derive(Deserialize, Default)]
struct UsageWire {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<InputDetails>,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    output_tokens_details: Option<OutputDetails>,
}

#[derive(Deserialize)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct OutputDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl UsageWire {
    fn to_usage(&self) -> TokenUsage {
        TokenUsage {
            input: self.input_tokens,
            output: self.output_tokens,
            cached: self.input_tokens_details.as_ref().and_then(|d| d.cached_tokens).unwrap_or(0),
            cache_write: 0,
            reasoning: self.output_tokens_details.as_ref().and_then(|d| d.reasoning_tokens).unwrap_or(0),
            estimated: false,
        }
    }
}

/// An `error` object (a body's, a failed response's, an `error` event's).
#[derive(Deserialize, Default)]
struct ErrorWire {
    /// A string (`server_error`, `rate_limit_exceeded`) or, from some servers, an HTTP status.
    #[serde(default)]
    code: Option<Value>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Error codes and types worth trying again.
fn retryable_code(code: &str) -> bool {
    retryable_error_type(code) || code == "vector_store_timeout"
}

impl ErrorWire {
    fn to_error(&self) -> ProviderError {
        let status = self.code.as_ref().and_then(Value::as_u64).and_then(|s| u16::try_from(s).ok());
        let code = self.code.as_ref().and_then(Value::as_str).or(self.kind.as_deref());
        let retryable = status.is_some_and(retryable_status)
            || code.is_some_and(retryable_code)
            || self.kind.as_deref().is_some_and(retryable_code);
        let message =
            self.message.as_deref().filter(|m| !m.is_empty()).unwrap_or("the response failed without a message");
        ProviderError::Stream {
            status,
            code: code.map(str::to_string),
            message: truncate(message.to_string()),
            retryable,
        }
    }
}

fn finish_of(r: &ResponseObj, has_calls: bool, refused: bool) -> Option<FinishReason> {
    let status = r.status.as_deref()?;
    Some(match status {
        "completed" if refused => FinishReason::Refusal,
        "completed" if has_calls => FinishReason::ToolCalls,
        "completed" => FinishReason::Stop,
        "incomplete" => match r.incomplete_details.as_ref().and_then(|d| d.reason.as_deref()) {
            Some("max_output_tokens") => FinishReason::Length,
            Some("content_filter") => FinishReason::ContentFilter,
            Some(other) => FinishReason::Other(other.to_string()),
            None => FinishReason::Other("incomplete".into()),
        },
        other => FinishReason::Other(other.to_string()),
    })
}

// ---- stream -----------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(tag = "type")]
enum Event {
    #[serde(rename = "response.created", alias = "response.in_progress", alias = "response.queued")]
    Started { response: ResponseObj },
    #[serde(rename = "response.output_text.delta")]
    TextDelta { delta: String },
    #[serde(rename = "response.refusal.delta")]
    RefusalDelta { delta: String },
    #[serde(rename = "response.reasoning_summary_text.delta")]
    SummaryDelta {
        #[serde(default)]
        item_id: Option<String>,
        #[serde(default)]
        summary_index: u64,
        delta: String,
    },
    #[serde(rename = "response.output_item.added")]
    ItemAdded {
        #[serde(default)]
        output_index: Option<u64>,
        item: OutputItem,
    },
    #[serde(rename = "response.function_call_arguments.delta")]
    ArgumentsDelta {
        #[serde(default)]
        item_id: Option<String>,
        #[serde(default)]
        output_index: Option<u64>,
        delta: String,
    },
    #[serde(rename = "response.output_item.done")]
    ItemDone {
        #[serde(default)]
        output_index: Option<u64>,
        item: OutputItem,
    },
    #[serde(rename = "response.completed", alias = "response.incomplete")]
    Finished { response: ResponseObj },
    #[serde(rename = "response.failed")]
    Failed { response: ResponseObj },
    #[serde(rename = "error")]
    Error(ErrorEvent),
    #[serde(other)]
    Other,
}

/// `{type: "error", code, message}`, or the same with the fields under `error`.
#[derive(Deserialize)]
struct ErrorEvent {
    #[serde(default)]
    error: Option<ErrorWire>,
    #[serde(default)]
    code: Option<Value>,
    #[serde(default)]
    message: Option<String>,
}

/// A function call of the streamed answer; its position in `calls` is its tool call index.
struct Call {
    item_id: Option<String>,
    output_index: Option<u64>,
    arguments: String,
}

#[derive(Default)]
struct Decoder {
    summary: StreamSummary,
    done: bool,
    calls: Vec<Call>,
    refused: bool,
    /// The reasoning item and summary index of the last summary delta.
    last_summary: Option<(Option<String>, u64)>,
}

impl Decoder {
    fn record(&mut self, r: &ResponseObj) {
        if let Some(model) = &r.model {
            self.summary.model = Some(model.clone());
        }
        if let Some(u) = &r.usage {
            self.summary.usage = Some(u.to_usage());
        }
    }

    fn call_at(&self, item_id: Option<&str>, output_index: Option<u64>) -> Option<usize> {
        self.calls
            .iter()
            .position(|c| item_id.is_some() && c.item_id.as_deref() == item_id)
            .or_else(|| self.calls.iter().position(|c| output_index.is_some() && c.output_index == output_index))
    }
}

impl StreamDecoder for Decoder {
    fn on_frame(&mut self, frame: &Frame, out: &mut Vec<Delta>) -> Result<(), ProviderError> {
        if frame.data.trim() == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let mut v = parse_json(frame.data.as_bytes())?;
        if let (Some(obj), Some(event)) = (v.as_object_mut(), &frame.event) {
            obj.entry("type").or_insert_with(|| Value::String(event.clone()));
        }
        let event =
            Event::deserialize(&v).map_err(|e| ProviderError::Malformed(format!("Responses stream event: {e}")))?;
        match event {
            Event::Started { response } => self.record(&response),
            Event::TextDelta { delta } => {
                if !delta.is_empty() {
                    out.push(Delta::Text(delta));
                }
            }
            Event::RefusalDelta { delta } => {
                self.refused = true;
                if !delta.is_empty() {
                    out.push(Delta::Text(delta));
                }
            }
            Event::SummaryDelta { item_id, summary_index, delta } => {
                if let Some((last_item, last_index)) = &self.last_summary {
                    if *last_item == item_id && *last_index != summary_index {
                        out.push(Delta::Reasoning("\n\n".into()));
                    }
                }
                self.last_summary = Some((item_id, summary_index));
                if !delta.is_empty() {
                    out.push(Delta::Reasoning(delta));
                }
            }
            Event::ItemAdded { output_index, item } => {
                if let OutputItem::FunctionCall { id, call_id, name, arguments } = item {
                    out.push(Delta::ToolCall {
                        index: self.calls.len(),
                        id: Some(call_id),
                        name: Some(name),
                        arguments: arguments.clone(),
                    });
                    self.calls.push(Call { item_id: id, output_index, arguments });
                }
            }
            Event::ArgumentsDelta { item_id, output_index, delta } => {
                let index = self.call_at(item_id.as_deref(), output_index).ok_or_else(|| {
                    ProviderError::Malformed("function call arguments for a call never opened".into())
                })?;
                if let Some(call) = self.calls.get_mut(index) {
                    call.arguments.push_str(&delta);
                }
                out.push(Delta::ToolCall { index, id: None, name: None, arguments: delta });
            }
            Event::ItemDone { output_index, item } => match item {
                OutputItem::Reasoning { id, summary, encrypted_content } => {
                    let streamed = self.last_summary.as_ref().is_some_and(|(item, _)| item.is_some() && *item == id);
                    let text = summary_text(&summary);
                    if !streamed && !text.is_empty() {
                        out.push(Delta::Reasoning(text));
                    }
                    if let Some(enc) = encrypted_content {
                        out.push(Delta::Signature(encode_signature(id.as_deref(), &enc)));
                    }
                }
                OutputItem::FunctionCall { id, arguments, .. } => {
                    if let Some(index) = self.call_at(id.as_deref(), output_index) {
                        let rest = self
                            .calls
                            .get(index)
                            .and_then(|c| arguments.strip_prefix(c.arguments.as_str()))
                            .filter(|rest| !rest.is_empty())
                            .map(str::to_string);
                        if let Some(rest) = rest {
                            if let Some(call) = self.calls.get_mut(index) {
                                call.arguments.push_str(&rest);
                            }
                            out.push(Delta::ToolCall { index, id: None, name: None, arguments: rest });
                        }
                    }
                }
                OutputItem::Message { content } => {
                    self.refused |= content.iter().any(|c| matches!(c, OutputContent::Refusal { .. }));
                }
                OutputItem::Other => {}
            },
            Event::Finished { response } => {
                self.record(&response);
                let has_calls = !self.calls.is_empty()
                    || response.output.iter().any(|i| matches!(i, OutputItem::FunctionCall { .. }));
                self.summary.finish_reason = finish_of(&response, has_calls, self.refused);
                self.done = true;
            }
            Event::Failed { response } => {
                self.record(&response);
                return Err(response.error.unwrap_or_default().to_error());
            }
            Event::Error(e) => {
                let err = e.error.unwrap_or(ErrorWire { code: e.code, kind: None, message: e.message });
                return Err(err.to_error());
            }
            Event::Other => {}
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
    use crate::chat::{Effort, Message, Reasoning, Tool};
    use crate::providers::presets;
    use crate::providers::test_support::{decode_parts, fixture};
    use secrecy::ExposeSecret;
    use serde_json::json;

    fn usage(input: u64, output: u64, cached: u64, reasoning: u64) -> TokenUsage {
        TokenUsage { input, output, cached, reasoning, ..TokenUsage::default() }
    }

    fn spec() -> ProviderSpec {
        let cfg: presets::ProvidersConfig = toml::from_str("[openai]\napi = \"responses\"\n").unwrap();
        presets::resolve(&cfg).unwrap().remove("openai").unwrap()
    }

    fn body_of(req: &ChatRequest, stream: bool) -> Value {
        let key = SecretString::from("sk-test");
        let r = crate::providers::for_spec(&spec()).build(&spec(), "gpt-5", req, stream, Some(&key)).unwrap();
        assert_eq!(r.url().as_str(), "https://api.openai.com/v1/responses");
        let auth = r.headers().get("authorization").unwrap();
        assert!(auth.is_sensitive());
        assert_eq!(auth.to_str().unwrap(), format!("Bearer {}", key.expose_secret()));
        serde_json::from_slice(r.body().unwrap().as_bytes().unwrap()).unwrap()
    }

    fn message(v: Value) -> Message {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn recorded_reasoning_stream_in_any_chunking() {
        let bytes = fixture("openai_responses_stream_reasoning.sse");
        for chunk in [1, 2, 7, 61, 97, 1024, 100_000] {
            let d = decode_parts(&Responses, &bytes, chunk);
            assert!(d.err.is_none(), "chunk {chunk}: {:?}", d.err);
            assert!(d.done, "chunk {chunk}");
            assert_eq!(d.text, "3");
            // The reasoning item has an empty summary and no encrypted content (store: true, no
            // include): nothing to show or hand back.
            assert_eq!(d.parts, vec![Part::Text { text: "3".into() }], "chunk {chunk}");
            assert_eq!(d.deltas, vec![Delta::Text("3".into())]);
            assert_eq!(d.summary.usage, Some(usage(32, 647, 0, 640)));
            assert_eq!(d.summary.finish_reason, Some(FinishReason::Stop));
            assert_eq!(d.summary.model.as_deref(), Some("gpt-5-2025-08-07"));
        }
    }

    #[test]
    fn request_matches_the_recorded_one() {
        let recorded: Value =
            serde_json::from_slice(&fixture("openai_responses_stream_reasoning.request.json")).unwrap();
        let prompt = recorded["input"][0]["content"].as_str().unwrap();
        let req = ChatRequest {
            messages: vec![Message::text(Role::User, prompt)],
            reasoning: Some(Reasoning::Effort { effort: Effort::Medium }),
            ..ChatRequest::default()
        };
        let body = body_of(&req, true);
        assert_eq!(body["model"], recorded["model"]);
        assert_eq!(body["stream"], recorded["stream"]);
        assert_eq!(body["reasoning"]["effort"], recorded["reasoning"]["effort"]);
        assert_eq!(body["input"].as_array().unwrap().len(), 1);
        assert_eq!(body["input"][0]["role"], recorded["input"][0]["role"]);
        assert_eq!(body["input"][0]["content"], json!([{"type": "input_text", "text": prompt}]));
        // Beyond the recording: summaries asked for, reasoning handed back statelessly.
        assert_eq!(body["reasoning"]["summary"], "auto");
        assert_eq!(body["store"], false);
        assert_eq!(body["include"], json!(["reasoning.encrypted_content"]));
        for absent in ["instructions", "tools", "tool_choice", "text", "max_output_tokens", "temperature"] {
            assert!(body.get(absent).is_none(), "{absent}");
        }
        // Without reasoning nothing about storage is sent.
        let plain = ChatRequest { messages: vec![Message::text(Role::User, "hi")], ..ChatRequest::default() };
        let body = body_of(&plain, false);
        assert_eq!(body["stream"], false);
        assert!(body.get("store").is_none() && body.get("include").is_none() && body.get("reasoning").is_none());
    }

    #[test]
    fn request_translates_the_whole_conversation() {
        let req = ChatRequest {
            system: Some("be brief".into()),
            messages: vec![
                message(json!({"role":"system","content":"use metric units"})),
                message(json!({"role":"user","content":[
                    {"type":"text","text":"weather here?"},
                    {"type":"image","url":"https://example.com/a.png","detail":"low"},
                    {"type":"image","data":"iVBORw0KGgo=","media_type":"image/png"},
                    {"type":"document","data":"JVBERi0=","media_type":"application/pdf","name":"map.pdf"}]})),
                message(json!({"role":"assistant","content":[
                    {"type":"thinking","text":"Need the weather.","signature":"rs_1:gAAAAenc"},
                    {"type":"text","text":"Checking."},
                    {"type":"tool_call","id":"call_1","name":"get_weather","arguments":{"city":"Paris"}},
                    {"type":"thinking","text":"foreign","signature":"EqQBCkYIBxgCKkA"},
                    {"type":"thinking","text":"unsigned"}]})),
                message(json!({"role":"tool","tool_call_id":"call_1","content":"22 C"})),
                message(json!({"role":"tool","content":[{"type":"tool_result","tool_call_id":"call_2","content":[
                    {"type":"text","text":"see"},{"type":"image","url":"https://example.com/b.png"}]}]})),
            ],
            max_tokens: Some(300),
            temperature: Some(0.2),
            tools: vec![Tool {
                name: "get_weather".into(),
                description: Some("Weather of a city".into()),
                parameters: json!({"type":"object","properties":{"city":{"type":"string"}}}),
            }],
            tool_choice: Some(ToolChoice::Tool("get_weather".into())),
            parallel_tool_calls: Some(false),
            response_format: Some(ResponseFormat::JsonSchema {
                name: "weather".into(),
                schema: json!({"type":"object"}),
                strict: Some(true),
            }),
            ..ChatRequest::default()
        };
        req.validate().unwrap();
        let body = body_of(&req, false);
        assert_eq!(body["instructions"], "be brief\n\nuse metric units");
        assert_eq!(
            body["input"],
            json!([
                {"type":"message","role":"user","content":[
                    {"type":"input_text","text":"weather here?"},
                    {"type":"input_image","image_url":"https://example.com/a.png","detail":"low"},
                    {"type":"input_image","image_url":"data:image/png;base64,iVBORw0KGgo="},
                    {"type":"input_file","filename":"map.pdf","file_data":"data:application/pdf;base64,JVBERi0="}]},
                {"type":"reasoning","id":"rs_1","encrypted_content":"gAAAAenc",
                 "summary":[{"type":"summary_text","text":"Need the weather."}]},
                {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Checking."}]},
                {"type":"function_call","call_id":"call_1","name":"get_weather","arguments":"{\"city\":\"Paris\"}"},
                {"type":"function_call_output","call_id":"call_1","output":"22 C"},
                {"type":"function_call_output","call_id":"call_2","output":[
                    {"type":"input_text","text":"see"},
                    {"type":"input_image","image_url":"https://example.com/b.png"}]}
            ])
        );
        assert_eq!(
            body["tools"],
            json!([{"type":"function","name":"get_weather","description":"Weather of a city",
                "parameters":{"type":"object","properties":{"city":{"type":"string"}}},"strict":false}])
        );
        assert_eq!(body["tool_choice"], json!({"type":"function","name":"get_weather"}));
        assert_eq!(body["parallel_tool_calls"], false);
        assert_eq!(
            body["text"],
            json!({"format":{"type":"json_schema","name":"weather","schema":{"type":"object"},"strict":true}})
        );
        assert_eq!(body["max_output_tokens"], 300);
        assert_eq!(body["temperature"], 0.2);
        // A handed-back reasoning item makes the call stateless even without `reasoning`.
        assert_eq!(body["store"], false);
        assert_eq!(body["include"], json!(["reasoning.encrypted_content"]));
        assert!(body.get("reasoning").is_none());

        for (choice, wire) in
            [(ToolChoice::Auto, "auto"), (ToolChoice::None, "none"), (ToolChoice::Required, "required")]
        {
            let r = ChatRequest { tool_choice: Some(choice), ..req.clone() };
            assert_eq!(body_of(&r, false)["tool_choice"], wire);
        }
        let r = ChatRequest { response_format: Some(ResponseFormat::JsonObject), ..req.clone() };
        assert_eq!(body_of(&r, false)["text"], json!({"format":{"type":"json_object"}}));
    }

    #[test]
    fn stop_is_refused_by_name() {
        let req = ChatRequest {
            messages: vec![Message::text(Role::User, "hi")],
            stop: vec!["\n".into()],
            ..ChatRequest::default()
        };
        let e = Responses.build(&spec(), "gpt-5", &req, false, None).unwrap_err();
        assert_eq!(e, ProviderError::Unsupported { feature: "stop" });
    }

    #[test]
    fn whole_body_with_reasoning_and_function_calls() {
        let body = json!({
            "id": "resp_1", "object": "response", "status": "completed", "model": "gpt-5-2025-08-07",
            "error": null, "incomplete_details": null,
            "output": [
                {"id": "rs_9", "type": "reasoning", "encrypted_content": "gAAAAxyz",
                 "summary": [{"type": "summary_text", "text": "Two cities."}, {"type": "summary_text", "text": "Call twice."}]},
                {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                 "content": [{"type": "output_text", "text": "Looking up.", "annotations": []}]},
                {"id": "fc_1", "type": "function_call", "call_id": "call_a", "name": "get_weather",
                 "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
                {"id": "fc_2", "type": "function_call", "call_id": "call_b", "name": "get_weather",
                 "arguments": "{\"city\":\"Rome\"}", "status": "completed"},
                {"id": "ws_1", "type": "web_search_call", "status": "completed"}
            ],
            "usage": {"input_tokens": 120, "input_tokens_details": {"cached_tokens": 64},
                      "output_tokens": 90, "output_tokens_details": {"reasoning_tokens": 50}, "total_tokens": 210}
        });
        let bytes = serde_json::to_vec(&body).unwrap();
        let c = Responses.parse_body(&bytes).unwrap();
        assert_eq!(
            c.parts,
            vec![
                Part::Thinking { text: "Two cities.\n\nCall twice.".into(), signature: Some("rs_9:gAAAAxyz".into()) },
                Part::Text { text: "Looking up.".into() },
                Part::ToolCall {
                    id: "call_a".into(),
                    name: "get_weather".into(),
                    arguments: "{\"city\":\"Paris\"}".into()
                },
                Part::ToolCall {
                    id: "call_b".into(),
                    name: "get_weather".into(),
                    arguments: "{\"city\":\"Rome\"}".into()
                },
            ]
        );
        assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(c.usage, Some(usage(120, 90, 64, 50)));
        assert_eq!(Responses.body_usage(&body), Some(usage(120, 90, 64, 50)));
        assert_eq!(c.model.as_deref(), Some("gpt-5-2025-08-07"));

        // Handed back, the answer is the same items again (the signature splits into id and content).
        let req = ChatRequest {
            messages: vec![Message::text(Role::User, "weather?"), Message { role: Role::Assistant, content: c.parts }],
            ..ChatRequest::default()
        };
        let input = body_of(&req, false)["input"].clone();
        assert_eq!(input[1]["type"], "reasoning");
        assert_eq!(input[1]["id"], "rs_9");
        assert_eq!(input[1]["encrypted_content"], "gAAAAxyz");
        assert_eq!(input[1]["summary"][0]["text"], "Two cities.\n\nCall twice.");
        assert_eq!(
            input[3],
            json!({"type":"function_call","call_id":"call_a","name":"get_weather","arguments":"{\"city\":\"Paris\"}"})
        );
    }

    #[test]
    fn whole_body_finishes_refusals_and_errors() {
        let parse = |v: Value| Responses.parse_body(&serde_json::to_vec(&v).unwrap());
        let c = parse(json!({"status":"completed","output":[{"type":"message","content":[
            {"type":"refusal","refusal":"I can't help with that."}]}]}))
        .unwrap();
        assert_eq!((c.text().as_str(), c.finish_reason), ("I can't help with that.", Some(FinishReason::Refusal)));
        assert_eq!(c.usage, None);
        let c = parse(json!({"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},
            "output":[{"type":"message","content":[{"type":"output_text","text":"Once upon"}]}],
            "usage":{"input_tokens":5,"output_tokens":16}}))
        .unwrap();
        assert_eq!((c.text().as_str(), c.finish_reason), ("Once upon", Some(FinishReason::Length)));
        assert_eq!(c.usage, Some(usage(5, 16, 0, 0)));
        let c =
            parse(json!({"status":"incomplete","incomplete_details":{"reason":"content_filter"},"output":[]})).unwrap();
        assert_eq!(c.finish_reason, Some(FinishReason::ContentFilter));
        let c = parse(
            json!({"status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"hi"}]}]}),
        )
        .unwrap();
        assert_eq!(c.finish_reason, Some(FinishReason::Stop));
        match parse(json!({"status":"failed","error":{"code":"server_error","message":"The server had an error"},
            "output":[], "usage":{"input_tokens":5,"output_tokens":0}}))
        {
            Err(ProviderError::Stream { code, message, retryable, .. }) => {
                assert_eq!(code.as_deref(), Some("server_error"));
                assert_eq!(message, "The server had an error");
                assert!(retryable);
            }
            other => panic!("{other:?}"),
        }
        match parse(json!({"error":{"code":"invalid_prompt","message":"bad"}})) {
            Err(ProviderError::Stream { retryable: false, .. }) => {}
            other => panic!("{other:?}"),
        }
        // A refused body may still have been billed.
        let failed = json!({"status":"failed","error":{"code":"server_error","message":"x"},
            "usage":{"input_tokens":5,"output_tokens":2}});
        assert_eq!(Responses.body_usage(&failed), Some(usage(5, 2, 0, 0)));
        assert!(matches!(Responses.parse_body(b"[1]"), Err(ProviderError::Malformed(_))));
        assert!(matches!(
            parse(json!({"status":"completed","output":[{"type":"function_call","name":"f"}]})),
            Err(ProviderError::Malformed(_))
        ));
    }

    /// An SSE body of `(event, data)` pairs.
    fn sse(events: &[Value]) -> Vec<u8> {
        events
            .iter()
            .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
            .collect::<String>()
            .into_bytes()
    }

    fn tool_stream() -> Vec<u8> {
        sse(&[
            json!({"type":"response.created","response":{"id":"resp_1","status":"in_progress","model":"gpt-5-2025-08-07","output":[],"usage":null}}),
            json!({"type":"response.output_item.added","output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[]}}),
            json!({"type":"response.reasoning_summary_part.added","item_id":"rs_1","output_index":0,"summary_index":0,"part":{"type":"summary_text","text":""}}),
            json!({"type":"response.reasoning_summary_text.delta","item_id":"rs_1","output_index":0,"summary_index":0,"delta":"Need "}),
            json!({"type":"response.reasoning_summary_text.delta","item_id":"rs_1","output_index":0,"summary_index":0,"delta":"weather."}),
            json!({"type":"response.reasoning_summary_text.delta","item_id":"rs_1","output_index":0,"summary_index":1,"delta":"Two calls."}),
            json!({"type":"response.output_item.done","output_index":0,"item":{"id":"rs_1","type":"reasoning","encrypted_content":"gAAAAsig",
                "summary":[{"type":"summary_text","text":"Need weather."},{"type":"summary_text","text":"Two calls."}]}}),
            json!({"type":"response.output_item.added","output_index":1,"item":{"id":"fc_1","type":"function_call","call_id":"call_a","name":"get_weather","arguments":"","status":"in_progress"}}),
            json!({"type":"response.function_call_arguments.delta","item_id":"fc_1","output_index":1,"delta":"{\"city\":"}),
            json!({"type":"response.output_item.added","output_index":2,"item":{"id":"fc_2","type":"function_call","call_id":"call_b","name":"get_time","arguments":""}}),
            json!({"type":"response.function_call_arguments.delta","item_id":"fc_1","output_index":1,"delta":"\"Paris\"}"}),
            json!({"type":"response.function_call_arguments.delta","output_index":2,"delta":"{\"tz\":"}),
            json!({"type":"response.function_call_arguments.done","item_id":"fc_1","output_index":1,"arguments":"{\"city\":\"Paris\"}"}),
            json!({"type":"response.output_item.done","output_index":1,"item":{"id":"fc_1","type":"function_call","call_id":"call_a","name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}),
            // The last piece of call_b's arguments only in its done item.
            json!({"type":"response.output_item.done","output_index":2,"item":{"id":"fc_2","type":"function_call","call_id":"call_b","name":"get_time","arguments":"{\"tz\":\"CET\"}"}}),
            json!({"type":"response.completed","response":{"id":"resp_1","status":"completed","model":"gpt-5-2025-08-07","output":[],
                "usage":{"input_tokens":80,"input_tokens_details":{"cached_tokens":0},"output_tokens":60,"output_tokens_details":{"reasoning_tokens":40},"total_tokens":140}}}),
        ])
    }

    #[test]
    fn streamed_reasoning_and_parallel_function_calls() {
        let bytes = tool_stream();
        for chunk in [1, 9, 64, 100_000] {
            let d = decode_parts(&Responses, &bytes, chunk);
            assert!(d.err.is_none() && d.done, "{:?}", d.err);
            assert_eq!(
                d.parts,
                vec![
                    Part::Thinking {
                        text: "Need weather.\n\nTwo calls.".into(),
                        signature: Some("rs_1:gAAAAsig".into())
                    },
                    Part::ToolCall {
                        id: "call_a".into(),
                        name: "get_weather".into(),
                        arguments: "{\"city\":\"Paris\"}".into()
                    },
                    Part::ToolCall {
                        id: "call_b".into(),
                        name: "get_time".into(),
                        arguments: "{\"tz\":\"CET\"}".into()
                    },
                ]
            );
            assert_eq!(
                d.deltas.iter().filter(|x| matches!(x, Delta::ToolCall { id: Some(_), .. })).count(),
                2,
                "each call opened once"
            );
            assert_eq!(d.summary.finish_reason, Some(FinishReason::ToolCalls));
            assert_eq!(d.summary.usage, Some(usage(80, 60, 0, 40)));
            assert_eq!(d.summary.model.as_deref(), Some("gpt-5-2025-08-07"));
        }
    }

    #[test]
    fn streamed_incomplete_refusal_and_errors() {
        let d = decode_parts(
            &Responses,
            &sse(&[
                json!({"type":"response.output_text.delta","item_id":"m","output_index":0,"content_index":0,"delta":"Once"}),
                json!({"type":"response.incomplete","response":{"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},
                    "usage":{"input_tokens":3,"output_tokens":1}}}),
            ]),
            5,
        );
        assert!(d.err.is_none() && d.done);
        assert_eq!((d.text.as_str(), d.summary.finish_reason), ("Once", Some(FinishReason::Length)));
        assert_eq!(d.summary.usage, Some(usage(3, 1, 0, 0)));

        let d = decode_parts(
            &Responses,
            &sse(&[
                json!({"type":"response.refusal.delta","item_id":"m","output_index":0,"content_index":0,"delta":"No."}),
                json!({"type":"response.completed","response":{"status":"completed","usage":{"input_tokens":3,"output_tokens":1}}}),
            ]),
            3,
        );
        assert_eq!((d.text.as_str(), d.summary.finish_reason), ("No.", Some(FinishReason::Refusal)));

        // response.failed: usage recorded, retryable by code.
        let d = decode_parts(
            &Responses,
            &sse(&[
                json!({"type":"response.output_text.delta","delta":"Hel"}),
                json!({"type":"response.failed","response":{"status":"failed","error":{"code":"rate_limit_exceeded","message":"Slow down"},
                    "usage":{"input_tokens":9,"output_tokens":2}}}),
            ]),
            11,
        );
        assert!(!d.done);
        assert_eq!(d.text, "Hel");
        assert_eq!(d.summary.usage, Some(usage(9, 2, 0, 0)));
        match d.err {
            Some(ProviderError::Stream { code, message, retryable: true, .. }) => {
                assert_eq!(code.as_deref(), Some("rate_limit_exceeded"));
                assert_eq!(message, "Slow down");
            }
            other => panic!("{other:?}"),
        }
        // `error` events, flat or nested, and with the type only in the `event:` line.
        let flat = b"event: error\ndata: {\"type\":\"error\",\"code\":\"invalid_prompt\",\"message\":\"Bad prompt\",\"param\":null,\"sequence_number\":2}\n\n";
        match decode_parts(&Responses, flat, 4).err {
            Some(ProviderError::Stream { code, message, retryable: false, .. }) => {
                assert_eq!((code.as_deref(), message.as_str()), (Some("invalid_prompt"), "Bad prompt"));
            }
            other => panic!("{other:?}"),
        }
        let nested =
            b"event: error\ndata: {\"error\":{\"type\":\"server_error\",\"code\":null,\"message\":\"Oops\"}}\n\n";
        match decode_parts(&Responses, nested, 4).err {
            Some(ProviderError::Stream { code, retryable: true, .. }) => {
                assert_eq!(code.as_deref(), Some("server_error"))
            }
            other => panic!("{other:?}"),
        }
        // Arguments for a call never opened are not silently dropped.
        let stray = sse(&[json!({"type":"response.function_call_arguments.delta","item_id":"fc_x","delta":"{}"})]);
        assert!(matches!(decode_parts(&Responses, &stray, 8).err, Some(ProviderError::Malformed(_))));
        // A stream that ends without response.completed is not finished.
        let cut = sse(&[json!({"type":"response.output_text.delta","delta":"Hi"})]);
        let d = decode_parts(&Responses, &cut, 8);
        assert!(d.err.is_none() && !d.done && d.summary.finish_reason.is_none());
    }

    #[test]
    fn signatures_round_trip_and_foreign_ones_are_not_reasoning_items() {
        assert_eq!(decode_signature(&encode_signature(Some("rs_1"), "gAAAA+/=")), Some((Some("rs_1"), "gAAAA+/=")));
        assert_eq!(decode_signature(&encode_signature(None, "gAAAA")), Some((None, "gAAAA")));
        for foreign in ["EqQBCkYIBxgCKkA+/==", "", "rs_1:", "a b:c"] {
            assert_eq!(decode_signature(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn media_bounds_follow_openai_vision_pricing() {
        assert_eq!(Responses.media_bound("gpt-4o").image, 1445);
        assert_eq!(Responses.media_bound("gpt-4o-2024-08-06").image, 1445);
        assert_eq!(Responses.media_bound("gpt-4o-mini").image, 48169);
        assert_eq!(Responses.media_bound("gpt-4.1-mini").image, 2489);
        assert_eq!(Responses.media_bound("gpt-5-nano").image, 3779);
        assert_eq!(Responses.media_bound("o4-mini").image, 2642);
        assert_eq!(Responses.media_bound("gpt-5").image, 1445);
        assert_eq!(Responses.media_bound("openai/o3").image, 1275);
        let b = Responses.media_bound("gpt-4.1");
        assert_eq!(b.pdf_page, b.image + 3000);
        assert_eq!(Responses.media_bound("some-future-model"), MediaBound::default());
    }

    #[test]
    fn for_spec_chooses_by_api() {
        let specs = presets::resolve(&presets::ProvidersConfig::new()).unwrap();
        let req = ChatRequest { messages: vec![Message::text(Role::User, "hi")], ..ChatRequest::default() };
        let chat =
            crate::providers::for_spec(&specs["openai"]).build(&specs["openai"], "m", &req, false, None).unwrap();
        assert!(chat.url().as_str().ends_with("/chat/completions"));
        let r = crate::providers::for_spec(&spec()).build(&spec(), "m", &req, false, None).unwrap();
        assert!(r.url().as_str().ends_with("/responses"));
    }
}
