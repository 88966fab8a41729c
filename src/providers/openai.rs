//! Chat Completions (`POST {base}/chat/completions`), spoken by OpenAI and every OpenAI-compatible
//! service (Groq, Together, OpenRouter, DeepSeek, Mistral, Cloudflare, Ollama `/v1`, vLLM, ...).
//!
//! Request translation (the domain model of [`crate::chat`] to the wire):
//! - `system` becomes the first `{role: "system"}` message; `system` role messages stay where
//!   they are, as their joined text;
//! - a user message whose parts are all text is sent as one string (their joined text: several
//!   compatible services take nothing else); otherwise as an array of `{type: "text", text}`,
//!   `{type: "image_url", image_url: {url, detail?}}` (a base64 image becomes a `data:` URL) and
//!   `{type: "file", file: {filename, file_data: "data:application/pdf;base64,..."}}` (a document
//!   without a name is called `document.pdf`);
//! - an assistant message: its joined text as `content` (`null` when it has none but tool calls,
//!   `""` when it has neither), and its tool calls as `tool_calls: [{id, type: "function",
//!   function: {name, arguments}}]`; thinking parts are dropped (Chat Completions takes no
//!   reasoning back);
//! - each `tool_result` part becomes its own `{role: "tool", tool_call_id, content}` message with
//!   the result's joined text; Chat Completions takes only text there, so an image in a tool result
//!   is refused ([`ProviderError::Unsupported`] `images in tool results`); `is_error` has no wire
//!   field and is not sent;
//! - `tools` → `[{type: "function", function: {name, description?, parameters}}]`; `tool_choice`
//!   → `auto` / `none` / `required` / `{type: "function", function: {name}}`; `tool_choice` and
//!   `parallel_tool_calls` are sent only with tools (OpenAI refuses them without);
//!   `response_format` → `{type: "text"}`, `{type: "json_object"}` or `{type: "json_schema",
//!   json_schema: {name, schema, strict?}}`; `reasoning` → `reasoning_effort`
//!   ([`crate::chat::Reasoning::effort`]); the output limit goes in the spec's `max_tokens_field`;
//!   `stream_options.include_usage` when streaming and the spec asks for stream usage.
//!
//! Response translation: `message.reasoning_content` (DeepSeek, vLLM) or else `message.reasoning`
//! (OpenRouter, Groq) becomes a thinking part, first; then `message.content` a text part; a
//! non-null `message.refusal` a text part with the refusal, and the finish reason is then
//! `refusal`; then each of `message.tool_calls` a tool-call part (arguments kept as the JSON text
//! the model produced); a `content` list of parts (Mistral) is read for its `text` parts; an
//! empty `refusal` is no refusal. `content: null` is a valid answer (tool calls, a refusal), not a malformed
//! one. Other finish reasons map through [`FinishReason::from_openai`]. Streams carry the same in
//! `choices[0].delta`: `reasoning_content` / `reasoning` → [`Delta::Reasoning`], `content` →
//! [`Delta::Text`], `refusal` → [`Delta::Text`] (and the finish reason becomes `refusal`),
//! `tool_calls[{index, id?, function: {name?, arguments?}}]` → [`Delta::ToolCall`], whose `index`
//! is the call's ordinal in the answer (the wire index, mapped in order of first appearance; a
//! piece without an index continues the last call unless it brings a new id).
//!
//! Usage: `prompt_tokens` already includes `prompt_tokens_details.cached_tokens` (so `input` is
//! `prompt_tokens` and `cached` is the cached part, never added again); DeepSeek's
//! `prompt_cache_hit_tokens` stands in when `cached_tokens` is absent; `reasoning` is
//! `completion_tokens_details.reasoning_tokens` (part of `completion_tokens`); OpenRouter's
//! `cache_write_tokens` is kept, and its `usage.cost` (USD) becomes `provider_cost_microusd`
//! (rounded to the micro-dollar). Streams: usage arrives in whichever chunk carries a non-null
//! `usage` (OpenAI: a final `choices: []` chunk; DeepSeek and Groq: the finish chunk; Groq also
//! under `x_groq.usage`); the last one seen wins. An `error` object inside a chunk, or an
//! `event: error`, is an error inside a 200 stream; usage it carries is still recorded.
//!
//! Media bound ([`Provider::media_bound`], the most prompt tokens one image can cost; any
//! `vendor/` prefix of the model name is ignored), from OpenAI's published image costs at the
//! largest `high` detail image (fit in 2048×2048, short side 768: 2×4 = 8 tiles of 512 px):
//! - tile models `base + tile × 8`: gpt-4o, gpt-4.1, gpt-4.5, gpt-5 (and later gpt-5.x) `85 + 170
//!   × 8 = 1445` (gpt-5's published 70/140 gives 1190, below it); o1 / o3 `75 + 150 × 8 = 1275`;
//!   gpt-4o-mini `2833 + 5667 × 8 = 48169`;
//! - patch models: at most 1536 patches of 32 px, times the model's multiplier, rounded up:
//!   gpt-4.1-mini and gpt-5-mini `1536 × 1.62 = 2489`, gpt-4.1-nano and gpt-5-nano `1536 × 2.46 =
//!   3779`, o4-mini `1536 × 1.72 = 2642`;
//! - a PDF page is sent as its text plus an image of the page: the image bound + 3,000 tokens of
//!   text per page (a dense page is about 1,100); the Responses adapter uses the same table;
//! - any other model (compatible services' models): [`MediaBound::default`].

use super::{
    error::{retryable_error_type, retryable_status, truncate},
    json_post, parse_json, set_secret_header, u64_at, ChatRequest, Completion, Frame, Provider, ProviderError,
    ProviderSpec, StreamDecoder, StreamSummary,
};
use crate::chat::{
    joined_text, Delta, FinishReason, ImageSource, MediaBound, Message, Part, ResponseFormat, Role, ToolChoice,
};
use crate::usage_record::TokenUsage;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;

pub struct OpenAi;

// ---- request wire ----

#[derive(Serialize)]
struct RequestBody<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    /// The output limit, under the spec's `max_tokens_field`.
    #[serde(flatten)]
    limit: BTreeMap<&'a str, u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<WireToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<WireResponseFormat<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'static str>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum WireMessage<'a> {
    System {
        content: Cow<'a, str>,
    },
    User {
        content: UserContent<'a>,
    },
    Assistant {
        /// `null` for a message of tool calls only.
        content: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<WireToolCall<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: String,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum UserContent<'a> {
    Text(String),
    Parts(Vec<ContentPart<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentPart<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: ImageUrl<'a> },
    File { file: FileData<'a> },
}

#[derive(Serialize)]
struct ImageUrl<'a> {
    url: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

#[derive(Serialize)]
struct FileData<'a> {
    filename: &'a str,
    file_data: String,
}

#[derive(Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionCall<'a>,
}

#[derive(Serialize)]
struct WireFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// `{type: "function", function: {name, description?, parameters}}`: the tool shape of Chat
/// Completions, which Ollama's native API takes too.
#[derive(Serialize)]
pub(super) struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: &'a Value,
}

impl<'a> WireTool<'a> {
    pub(super) fn new(t: &'a crate::chat::Tool) -> WireTool<'a> {
        WireTool {
            kind: "function",
            function: WireFunction { name: &t.name, description: t.description.as_deref(), parameters: &t.parameters },
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum WireToolChoice<'a> {
    Word(&'static str),
    Named {
        #[serde(rename = "type")]
        kind: &'static str,
        function: NamedFunction<'a>,
    },
}

#[derive(Serialize)]
struct NamedFunction<'a> {
    name: &'a str,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireResponseFormat<'a> {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchema<'a> },
}

#[derive(Serialize)]
struct JsonSchema<'a> {
    name: &'a str,
    schema: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

/// The messages of `req` in Chat Completions form (see the module docs).
fn wire_messages(req: &ChatRequest) -> Result<Vec<WireMessage<'_>>, ProviderError> {
    let mut out = Vec::with_capacity(req.messages.len() + 1);
    if let Some(system) = &req.system {
        out.push(WireMessage::System { content: Cow::Borrowed(system) });
    }
    for m in &req.messages {
        match m.role {
            Role::System => out.push(WireMessage::System { content: Cow::Owned(m.joined_text()) }),
            Role::User => out.push(WireMessage::User { content: user_content(m) }),
            Role::Assistant => out.push(assistant(m)),
            Role::Tool => {
                for p in &m.content {
                    // `validate` keeps tool messages to tool results.
                    let Part::ToolResult { tool_call_id, content, .. } = p else { continue };
                    if content.iter().any(|p| matches!(p, Part::Image(_))) {
                        return Err(ProviderError::Unsupported { feature: "images in tool results" });
                    }
                    out.push(WireMessage::Tool { tool_call_id, content: joined_text(content) });
                }
            }
        }
    }
    Ok(out)
}

fn user_content(m: &Message) -> UserContent<'_> {
    if m.content.iter().all(|p| matches!(p, Part::Text { .. })) {
        return UserContent::Text(m.joined_text());
    }
    let parts = m
        .content
        .iter()
        .filter_map(|p| match p {
            Part::Text { text } => Some(ContentPart::Text { text }),
            Part::Image(img) => Some(ContentPart::ImageUrl {
                image_url: ImageUrl {
                    url: match &img.source {
                        ImageSource::Url(u) => Cow::Borrowed(u.as_str()),
                        ImageSource::Base64 { data, media_type } => {
                            Cow::Owned(format!("data:{media_type};base64,{data}"))
                        }
                    },
                    detail: img.detail.as_deref(),
                },
            }),
            Part::Document { data, media_type, name } => Some(ContentPart::File {
                file: FileData {
                    filename: name.as_deref().unwrap_or("document.pdf"),
                    file_data: format!("data:{media_type};base64,{data}"),
                },
            }),
            // `validate` keeps tool calls, results and thinking out of user messages.
            Part::ToolCall { .. } | Part::ToolResult { .. } | Part::Thinking { .. } => None,
        })
        .collect();
    UserContent::Parts(parts)
}

fn assistant(m: &Message) -> WireMessage<'_> {
    let tool_calls: Vec<WireToolCall<'_>> = m
        .content
        .iter()
        .filter_map(|p| match p {
            Part::ToolCall { id, name, arguments } => {
                Some(WireToolCall { id, kind: "function", function: WireFunctionCall { name, arguments } })
            }
            _ => None,
        })
        .collect();
    let text = m.joined_text();
    let content = if text.is_empty() && !tool_calls.is_empty() { None } else { Some(text) };
    WireMessage::Assistant { content, tool_calls }
}

fn wire_tool_choice(c: &ToolChoice) -> WireToolChoice<'_> {
    match c {
        ToolChoice::Auto => WireToolChoice::Word("auto"),
        ToolChoice::None => WireToolChoice::Word("none"),
        ToolChoice::Required => WireToolChoice::Word("required"),
        ToolChoice::Tool(name) => WireToolChoice::Named { kind: "function", function: NamedFunction { name } },
    }
}

fn wire_response_format(f: &ResponseFormat) -> WireResponseFormat<'_> {
    match f {
        ResponseFormat::Text => WireResponseFormat::Text,
        ResponseFormat::JsonObject => WireResponseFormat::JsonObject,
        ResponseFormat::JsonSchema { name, schema, strict } => {
            WireResponseFormat::JsonSchema { json_schema: JsonSchema { name, schema, strict: *strict } }
        }
    }
}

// ---- response wire ----

#[derive(Deserialize)]
struct ResponseBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    choices: Vec<ResponseChoice>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ResponseChoice {
    #[serde(default)]
    message: Option<MessageWire<ResponseToolCall>>,
    #[serde(default)]
    finish_reason: Option<String>,
}

/// A whole answer's `message`, or a chunk's `delta` (`T` is its tool-call shape): the same fields.
#[derive(Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
struct MessageWire<T> {
    #[serde(default, deserialize_with = "content_text")]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default = "Vec::new", deserialize_with = "null_as_empty")]
    tool_calls: Vec<T>,
}

impl<T> MessageWire<T> {
    /// DeepSeek's and vLLM's `reasoning_content`, else OpenRouter's `reasoning`; never empty.
    fn reasoning(&self) -> Option<&str> {
        let content = self.reasoning_content.as_deref().filter(|s| !s.is_empty());
        content.or_else(|| self.reasoning.as_deref().filter(|s| !s.is_empty()))
    }
}

#[derive(Deserialize)]
struct ResponseToolCall {
    id: String,
    function: ResponseFunction,
}

#[derive(Deserialize)]
struct ResponseFunction {
    name: String,
    #[serde(default, deserialize_with = "arguments_text")]
    arguments: String,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    error: Option<Value>,
    /// `null` in every chunk but the last when `include_usage` is set.
    #[serde(default)]
    usage: Option<Value>,
    /// Groq's place for usage.
    #[serde(default)]
    x_groq: Option<XGroq>,
}

#[derive(Deserialize)]
struct XGroq {
    #[serde(default)]
    usage: Option<Value>,
}

impl Chunk {
    /// The chunk's usage object, as [`usage_object`] finds it in the chunk's JSON value.
    fn usage_object(&self) -> Option<&Value> {
        let groq = self.x_groq.as_ref().and_then(|x| x.usage.as_ref());
        self.usage.as_ref().filter(|u| u.is_object()).or(groq.filter(|u| u.is_object()))
    }
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<MessageWire<ChunkToolCall>>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChunkToolCall {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<ChunkFunction>,
}

#[derive(Deserialize)]
struct ChunkFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "arguments_text")]
    arguments: String,
}

/// A list that may be `null`.
fn null_as_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// `content`: a string, `null`, or (Mistral) a list of parts whose `text` parts are read.
fn content_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    struct ContentPart {
        #[serde(rename = "type")]
        kind: Option<String>,
        text: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Content {
        Text(String),
        Parts(Vec<ContentPart>),
    }
    Ok(
        match Option::<Content>::deserialize(d)
            .map_err(|_| serde::de::Error::custom("`content` is not a string, null or a list of parts"))?
        {
            None => None,
            Some(Content::Text(s)) => Some(s),
            Some(Content::Parts(parts)) => {
                Some(parts.into_iter().filter(|p| p.kind.as_deref() == Some("text")).filter_map(|p| p.text).collect())
            }
        },
    )
}

/// Tool-call arguments: JSON text (some compatible servers send the object itself, or `null`).
fn arguments_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

fn malformed(what: &str, e: &serde_json::Error) -> ProviderError {
    ProviderError::Malformed(format!("{what} is not a Chat Completions {what}: {e}"))
}

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
        let with_tools = !req.tools.is_empty();
        let body = RequestBody {
            model,
            messages: wire_messages(req)?,
            stream,
            stream_options: (stream && spec.stream_usage).then_some(StreamOptions { include_usage: true }),
            limit: req.max_tokens.map(|n| (spec.max_tokens_field.as_str(), n)).into_iter().collect(),
            temperature: req.temperature,
            stop: &req.stop,
            tools: req.tools.iter().map(WireTool::new).collect(),
            tool_choice: req.tool_choice.as_ref().filter(|_| with_tools).map(wire_tool_choice),
            parallel_tool_calls: req.parallel_tool_calls.filter(|_| with_tools),
            response_format: req.response_format.as_ref().map(wire_response_format),
            reasoning_effort: req.reasoning.map(|r| r.effort().as_str()),
        };
        let mut request = json_post(spec, &format!("{base}/chat/completions"), &body)?;
        if let Some(key) = key {
            set_secret_header(&mut request, "authorization", "Bearer ", key)?;
        }
        Ok(request)
    }

    fn parse_body(&self, body: &[u8]) -> Result<Completion, ProviderError> {
        let v = parse_json(body)?;
        let r: ResponseBody = ResponseBody::deserialize(&v).map_err(|e| malformed("response", &e))?;
        if let Some(err) = r.error.as_ref().filter(|e| !e.is_null()) {
            return Err(stream_error(err));
        }
        let choice = r.choices.into_iter().next();
        let finish = choice.as_ref().and_then(|c| c.finish_reason.as_deref()).map(FinishReason::from_openai);
        let message = choice
            .and_then(|c| c.message)
            .ok_or_else(|| ProviderError::Malformed("no choices[0].message in the response".into()))?;
        // `content: null` is a valid answer (a tool call, or a refusal with its text in
        // `refusal`), not a malformed one that would be retried and fall back.
        let mut parts = Vec::new();
        if let Some(text) = message.reasoning() {
            parts.push(Part::Thinking { text: text.to_string(), signature: None });
        }
        if let Some(text) = message.content.filter(|s| !s.is_empty()) {
            parts.push(Part::Text { text });
        }
        let refusal = message.refusal.filter(|s| !s.is_empty());
        let refused = refusal.is_some();
        if let Some(text) = refusal {
            parts.push(Part::Text { text });
        }
        for call in message.tool_calls {
            parts.push(Part::ToolCall { id: call.id, name: call.function.name, arguments: call.function.arguments });
        }
        Ok(Completion {
            parts,
            finish_reason: if refused { Some(FinishReason::Refusal) } else { finish },
            model: r.model,
            usage: usage_of(&v),
            provider_cost_microusd: cost_of(&v),
        })
    }

    fn body_usage(&self, body: &Value) -> Option<TokenUsage> {
        usage_of(body)
    }

    fn decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(Decoder::default())
    }

    fn media_bound(&self, model: &str) -> MediaBound {
        media_bound(model)
    }
}

/// The most tokens one image and one PDF page can cost at an OpenAI model (Chat Completions and
/// Responses alike); see the module docs for the formulas.
pub(crate) fn media_bound(model: &str) -> MediaBound {
    /// `ceil(1536 × multiplier)`, the multiplier in hundredths.
    fn patches(hundredths: u64) -> u64 {
        (1536 * hundredths).div_ceil(100)
    }
    let name = model.rsplit('/').next().unwrap_or(model).to_ascii_lowercase();
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| name.starts_with(p));
    let image = if starts(&["gpt-4o-mini"]) {
        2833 + 5667 * 8
    } else if starts(&["gpt-4.1-mini", "gpt-5-mini"]) {
        patches(162)
    } else if starts(&["gpt-4.1-nano", "gpt-5-nano"]) {
        patches(246)
    } else if starts(&["o4-mini"]) {
        patches(172)
    } else if starts(&["gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5"]) {
        85 + 170 * 8
    } else if starts(&["o1", "o3"]) {
        75 + 150 * 8
    } else {
        return MediaBound::default();
    };
    MediaBound { image, pdf_page: image + PDF_PAGE_TEXT_TOKENS }
}

/// Tokens of extracted text a PDF page may add to its image (a dense page is about 1,100).
const PDF_PAGE_TEXT_TOKENS: u64 = 3000;

/// The usage object of a response or chunk: top-level `usage`, else Groq's `x_groq.usage`.
fn usage_object(v: &Value) -> Option<&Value> {
    v.get("usage").filter(|u| u.is_object()).or_else(|| v.pointer("/x_groq/usage").filter(|u| u.is_object()))
}

/// Usage of a response or chunk (see the module docs).
fn usage_of(v: &Value) -> Option<TokenUsage> {
    usage_object(v).map(usage_in)
}

/// The usage a `usage` object states.
fn usage_in(u: &Value) -> TokenUsage {
    TokenUsage {
        input: u64_at(u, &["prompt_tokens"]).unwrap_or(0),
        output: u64_at(u, &["completion_tokens"]).unwrap_or(0),
        cached: u64_at(u, &["prompt_tokens_details", "cached_tokens"])
            .or_else(|| u64_at(u, &["prompt_cache_hit_tokens"]))
            .unwrap_or(0),
        cache_write: u64_at(u, &["prompt_tokens_details", "cache_write_tokens"]).unwrap_or(0),
        reasoning: u64_at(u, &["completion_tokens_details", "reasoning_tokens"]).unwrap_or(0),
        estimated: false,
    }
}

/// OpenRouter's `usage.cost` (USD) in micro-dollars, rounded.
fn cost_of(v: &Value) -> Option<i64> {
    usage_object(v).and_then(cost_in)
}

/// The cost a `usage` object states (OpenRouter's `cost`).
fn cost_in(u: &Value) -> Option<i64> {
    let usd = u.get("cost")?.as_f64().filter(|c| c.is_finite() && *c >= 0.0)?;
    let micro = (usd * 1_000_000.0).round();
    // In range by the check: a cost above i64::MAX micro-dollars is no real cost.
    (micro < 9.0e18).then_some(micro as i64)
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
    /// A refusal was streamed: the finish reason is `refusal` whatever the wire says.
    refused: bool,
    /// The wire index (or id, for pieces without one) of each tool call, by ordinal.
    calls: Vec<(Option<usize>, Option<String>)>,
}

impl Decoder {
    /// The ordinal of the tool call a piece belongs to, opening a new one when it starts one.
    fn ordinal(&mut self, index: Option<usize>, id: Option<&str>) -> usize {
        let found = match index {
            Some(i) => self.calls.iter().position(|(w, _)| *w == Some(i)),
            None => match id {
                Some(id) => self.calls.iter().position(|(_, have)| have.as_deref() == Some(id)),
                None => self.calls.len().checked_sub(1),
            },
        };
        found.unwrap_or_else(|| {
            self.calls.push((index, id.map(str::to_string)));
            self.calls.len() - 1
        })
    }
}

impl StreamDecoder for Decoder {
    fn on_frame(&mut self, frame: &Frame, out: &mut Vec<Delta>) -> Result<(), ProviderError> {
        if frame.data.trim() == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        // A data-only frame is read straight into a `Chunk` (its usage and error kept as JSON
        // values). A named event, or a frame that does not read so (a duplicate key, say), goes
        // through a JSON value first, which also makes the errors for bad JSON.
        let direct = frame.event.is_none().then(|| serde_json::from_str::<Chunk>(&frame.data).ok()).flatten();
        let chunk = match direct {
            Some(chunk) => chunk,
            None => {
                let v = parse_json(frame.data.as_bytes())?;
                if frame.event.as_deref() == Some("error") {
                    return Err(stream_error(v.get("error").unwrap_or(&v)));
                }
                Chunk::deserialize(&v).map_err(|e| malformed("chunk", &e))?
            }
        };
        if let Some(u) = chunk.usage_object() {
            self.summary.usage = Some(usage_in(u));
            self.summary.provider_cost_microusd = cost_in(u).or(self.summary.provider_cost_microusd);
        }
        if let Some(model) = chunk.model {
            if self.summary.model.is_none() {
                self.summary.model = Some(model);
            }
        }
        if let Some(err) = chunk.error.as_ref().filter(|e| !e.is_null()) {
            return Err(stream_error(err));
        }
        let Some(choice) = chunk.choices.into_iter().next() else { return Ok(()) };
        if let Some(delta) = choice.delta {
            if let Some(t) = delta.reasoning() {
                out.push(Delta::Reasoning(t.to_string()));
            }
            if let Some(t) = delta.content.filter(|s| !s.is_empty()) {
                out.push(Delta::Text(t));
            }
            if let Some(t) = delta.refusal.filter(|s| !s.is_empty()) {
                self.refused = true;
                out.push(Delta::Text(t));
            }
            for call in delta.tool_calls {
                let (name, arguments) = call.function.map_or((None, String::new()), |f| (f.name, f.arguments));
                let index = self.ordinal(call.index, call.id.as_deref());
                if call.id.is_none() && name.is_none() && arguments.is_empty() {
                    continue;
                }
                out.push(Delta::ToolCall { index, id: call.id, name, arguments });
            }
        }
        if let Some(reason) = choice.finish_reason {
            self.summary.finish_reason = Some(FinishReason::from_openai(&reason));
        }
        if self.refused {
            self.summary.finish_reason = Some(FinishReason::Refusal);
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
    use crate::chat::{Effort, Image, Reasoning, Tool};
    use crate::providers::presets;
    use crate::providers::test_support::{decode, decode_parts, fixture};
    use secrecy::ExposeSecret;
    use serde_json::json;

    fn usage(input: u64, output: u64, cached: u64, reasoning: u64) -> TokenUsage {
        TokenUsage { input, output, cached, reasoning, ..TokenUsage::default() }
    }

    fn call(id: &str, name: &str, arguments: &str) -> Part {
        Part::ToolCall { id: id.into(), name: name.into(), arguments: arguments.into() }
    }

    fn specs() -> BTreeMap<String, ProviderSpec> {
        presets::resolve(&presets::ProvidersConfig::new()).unwrap()
    }

    /// The JSON body `build` makes for `req` at the openai preset.
    fn body_of(req: &ChatRequest, stream: bool) -> Value {
        let r = OpenAi.build(&specs()["openai"], "gpt-4o", req, stream, None).unwrap();
        serde_json::from_slice(r.body().unwrap().as_bytes().unwrap()).unwrap()
    }

    fn recorded_request(name: &str) -> Value {
        serde_json::from_slice(&fixture(name)).unwrap()
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
            assert_eq!(s.provider_cost_microusd, None);
        }
    }

    #[test]
    fn direct_and_fallback_frames_decode_alike() {
        // Every frame but the fourth takes the direct path: the third's text names `usage` and
        // `error`, the fifth carries real usage, the sixth Groq's (`x_groq.usage`, later, so it
        // wins); the fourth has a duplicate key, which the direct path refuses, and falls back
        // (the value keeps the last).
        let sse = concat!(
            "data: {\"model\":\"m-1\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"a \"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"usage error \"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"x\",\"content\":\"b\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":3}}\n\n",
            "data: {\"choices\":[],\"usage\":null,\"x_groq\":{\"id\":\"r\",\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}}\n\n",
            "data: [DONE]\n\n",
        );
        let (text, s, err, done) = decode(&OpenAi, sse.as_bytes(), 7);
        assert!(err.is_none() && done);
        assert_eq!(text, "a usage error b");
        assert_eq!(s.model.as_deref(), Some("m-1"));
        assert_eq!(s.usage, Some(usage(5, 2, 0, 0)));
        assert_eq!(s.finish_reason, Some(FinishReason::Stop));
    }

    #[test]
    fn parallel_tool_calls_stream_reassembles_each_call() {
        for chunk in [1, 2, 7, 61, 97, 1000, 100_000] {
            let d = decode_parts(&OpenAi, &fixture("openai_chat_stream_parallel_tool_calls.sse"), chunk);
            assert!(d.err.is_none() && d.done, "chunk {chunk}: {:?}", d.err);
            assert_eq!(
                d.parts,
                vec![
                    call("call_M26z19sncd7b4LBgzKRRbaUE", "secret_retrieval_tool", r#"{"password": "mellon"}"#),
                    call("call_KPXe5NX7IcKkaBUhc6dto2QV", "secret_retrieval_tool", r#"{"password": "radiance"}"#),
                ],
                "chunk {chunk}"
            );
            assert_eq!(d.summary.finish_reason, Some(FinishReason::ToolCalls));
            assert_eq!(d.summary.usage, Some(usage(75, 53, 0, 0)));
            assert_eq!(d.summary.model.as_deref(), Some("gpt-4o-2024-08-06"));
            // The first piece of each call carries its id and name; the argument pieces only
            // their text, under the call's ordinal.
            let pieces: Vec<_> = d
                .deltas
                .iter()
                .map(|x| match x {
                    Delta::ToolCall { index, id, name, arguments } => {
                        (*index, id.is_some(), name.is_some(), arguments.as_str())
                    }
                    other => panic!("unexpected delta {other:?}"),
                })
                .collect();
            assert_eq!(pieces.len(), 12);
            assert_eq!(pieces[0], (0, true, true, ""));
            assert_eq!(pieces[1], (0, false, false, "{\"pa"));
            assert_eq!(pieces[6], (1, true, true, ""));
            assert_eq!(pieces[11], (1, false, false, "nce\"}"));
        }
    }

    #[test]
    fn openrouter_comments_cache_write_fields_and_cost() {
        for chunk in [1, 7, 100_000] {
            let (text, s, err, done) = decode(&OpenAi, &fixture("openrouter_chat_stream_usage_cost.sse"), chunk);
            assert!(err.is_none() && done);
            assert_eq!(text, "Hello!");
            assert_eq!(s.usage, Some(usage(254, 5, 0, 0)));
            // usage.cost 0.000837 USD.
            assert_eq!(s.provider_cost_microusd, Some(837));
            assert_eq!(s.finish_reason, Some(FinishReason::Stop));
        }
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
        assert_eq!(s.provider_cost_microusd, Some(0));
    }

    #[test]
    fn deepseek_reasoning_content_is_a_thinking_part_and_usage_on_finish_chunk() {
        for chunk in [3, 4096] {
            let d = decode_parts(&OpenAi, &fixture("deepseek_chat_stream_usage.sse"), chunk);
            assert!(d.err.is_none() && d.done);
            assert_eq!(d.summary.usage, Some(usage(6, 212, 0, 198)));
            assert_eq!(d.summary.finish_reason, Some(FinishReason::Stop));
            assert_eq!(d.parts.len(), 2, "{:?}", d.parts);
            match &d.parts[0] {
                Part::Thinking { text, signature: None } => {
                    assert!(text.starts_with("Hmm, the user just said \"Hello\"."), "{text}");
                    assert_eq!(text.chars().count(), 882);
                }
                other => panic!("expected thinking first, got {other:?}"),
            }
            assert_eq!(d.parts[1], Part::Text { text: "Hello there! 😊 How can I help you today?".into() });
        }
    }

    #[test]
    fn groq_reasoning_tool_call_and_usage_without_stream_options() {
        for chunk in [5, 333, 100_000] {
            let d = decode_parts(&OpenAi, &fixture("groq_chat_stream_x_groq.sse"), chunk);
            assert!(d.err.is_none() && d.done);
            assert_eq!(d.summary.usage, Some(usage(304, 49, 0, 23)));
            assert_eq!(d.summary.finish_reason, Some(FinishReason::ToolCalls));
            assert_eq!(
                d.parts,
                vec![
                    Part::Thinking {
                        text: "We need to call the function with correct parameter \"name\". Provide a name, e.g., \"example\"."
                            .into(),
                        signature: None
                    },
                    call("fc_bfb39741-3748-4def-9886-a93fc9c64a90", "get_something_by_name", r#"{"name":"example"}"#),
                ]
            );
        }
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
    fn streamed_refusal_and_tool_calls_without_index() {
        let body = concat!(
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":null,\"refusal\":\"\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"refusal\":\"I can't \"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"refusal\":\"help.\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n"
        );
        let d = decode_parts(&OpenAi, body.as_bytes(), 11);
        assert_eq!(d.text, "I can't help.");
        assert_eq!(d.summary.finish_reason, Some(FinishReason::Refusal));
        // A server that sends whole calls without `index`: each new id is a new call.
        let body = concat!(
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":{\"x\":1}}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"b\",\"function\":{\"name\":\"g\",\"arguments\":\"{\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\"}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n"
        );
        let d = decode_parts(&OpenAi, body.as_bytes(), 100_000);
        assert_eq!(d.parts, vec![call("a", "f", r#"{"x":1}"#), call("b", "g", "{}")]);
        assert_eq!(d.summary.finish_reason, Some(FinishReason::ToolCalls));
        let (_, _, err, _) = decode(&OpenAi, b"data: {\"choices\":[{\"delta\":{\"content\":7}}]}\n\n", 100);
        assert!(matches!(err, Some(ProviderError::Malformed(_))), "{err:?}");
    }

    #[test]
    fn null_content_is_an_answer_not_malformed() {
        let tool = br#"{"model":"gpt-4o","choices":[{"message":{"role":"assistant","content":null,
            "tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\": 1}"}},
                          {"id":"call_2","type":"function","function":{"name":"g","arguments":"{}"}}]},
            "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}"#;
        let c = OpenAi.parse_body(tool).unwrap();
        assert_eq!(c.parts, vec![call("call_1", "f", r#"{"a": 1}"#), call("call_2", "g", "{}")]);
        assert_eq!((c.text().as_str(), c.finish_reason), ("", Some(FinishReason::ToolCalls)));
        assert_eq!(c.usage.map(|u| u.output), Some(3));
        let refusal = br#"{"choices":[{"message":{"role":"assistant","content":null,"refusal":"I can't help with that."},"finish_reason":"stop"}]}"#;
        let c = OpenAi.parse_body(refusal).unwrap();
        assert_eq!(c.text(), "I can't help with that.");
        assert_eq!(c.finish_reason, Some(FinishReason::Refusal));
        assert!(matches!(OpenAi.parse_body(br#"{"choices":[]}"#), Err(ProviderError::Malformed(_))));
        assert!(matches!(
            OpenAi.parse_body(br#"{"choices":[{"message":{"content":7}}]}"#),
            Err(ProviderError::Malformed(_))
        ));
        assert!(matches!(
            OpenAi.parse_body(br#"{"choices":[{"message":{"tool_calls":[{"function":{"name":"f"}}]}}]}"#),
            Err(ProviderError::Malformed(_))
        ));
        let e = OpenAi.parse_body(br#"{"error":{"message":"overloaded","type":"server_error"}}"#).unwrap_err();
        assert!(e.is_retryable(), "{e:?}");
    }

    #[test]
    fn reasoning_fields_and_cost_in_a_whole_answer() {
        let deepseek = br#"{"model":"deepseek-reasoner","choices":[{"message":{"role":"assistant",
            "reasoning_content":"Think.","content":"Answer."},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":10,"completion_tokens":5,"prompt_cache_hit_tokens":4,
                     "completion_tokens_details":{"reasoning_tokens":2}}}"#;
        let c = OpenAi.parse_body(deepseek).unwrap();
        assert_eq!(
            c.parts,
            vec![Part::Thinking { text: "Think.".into(), signature: None }, Part::Text { text: "Answer.".into() }]
        );
        assert_eq!(c.usage, Some(usage(10, 5, 4, 2)));
        let openrouter = br#"{"choices":[{"message":{"role":"assistant","reasoning":"Hmm.","content":"Ok."},
            "finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"cost":0.0012345}}"#;
        let c = OpenAi.parse_body(openrouter).unwrap();
        assert_eq!(c.parts[0], Part::Thinking { text: "Hmm.".into(), signature: None });
        assert_eq!(c.text(), "Ok.");
        assert_eq!(c.provider_cost_microusd, Some(1235));
        let mistral = br#"{"choices":[{"message":{"role":"assistant","content":[
            {"type":"thinking","thinking":[{"type":"text","text":"hm"}]},{"type":"text","text":"Yes."}]},
            "finish_reason":"stop"}]}"#;
        assert_eq!(OpenAi.parse_body(mistral).unwrap().parts, vec![Part::Text { text: "Yes.".into() }]);
        let empty_refusal = br#"{"choices":[{"message":{"content":"Hi","refusal":""},"finish_reason":"stop"}]}"#;
        assert_eq!(OpenAi.parse_body(empty_refusal).unwrap().finish_reason, Some(FinishReason::Stop));
    }

    #[test]
    fn recorded_image_and_json_schema_answers() {
        let c = OpenAi.parse_body(&fixture("openai_chat_image_url.json")).unwrap();
        assert_eq!(
            c.parts,
            vec![Part::Text {
                text: "The image shows the Wikipedia logo, which is a globe constructed from puzzle pieces featuring various characters from different writing systems.".into()
            }]
        );
        assert_eq!(c.usage, Some(usage(269, 23, 0, 0)));
        assert_eq!(c.model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(c.finish_reason, Some(FinishReason::Stop));
        // `refusal: null` beside a real answer: the answer is the content, not a refusal.
        let c = OpenAi.parse_body(&fixture("openai_chat_json_schema.json")).unwrap();
        assert_eq!(
            c.parts,
            vec![Part::Text {
                text: r#"{"title":"THE NAME OF THE WIND","author":{"first_name":"Patrick","last_name":"Rothfuss"},"rating":7}"#
                    .into()
            }]
        );
        assert_eq!(c.finish_reason, Some(FinishReason::Stop));
        assert_eq!(c.usage, Some(usage(172, 29, 0, 0)));
        assert_eq!(c.provider_cost_microusd, None);
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
        let specs = specs();
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
        assert_eq!(
            body,
            json!({"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},
                   "messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],
                   "max_completion_tokens":50,"temperature":0.5,"stop":["\n"]})
        );
        let r = OpenAi.build(&specs["groq"], "m", &req, false, Some(&key)).unwrap();
        let body: Value = serde_json::from_slice(r.body().unwrap().as_bytes().unwrap()).unwrap();
        assert_eq!(body["max_tokens"], 50);
        assert!(body.get("stream_options").is_none());
        assert!(body.get("max_completion_tokens").is_none());
        let e = OpenAi.build(&specs["cloudflare"], "m", &req, false, Some(&key)).unwrap_err();
        assert!(e.to_string().contains("account_id"), "{e}");
    }

    #[test]
    fn request_like_recorded_parallel_tool_calls() {
        let recorded = recorded_request("openai_chat_stream_parallel_tool_calls.request.json");
        let f = &recorded["tools"][0]["function"];
        let req = ChatRequest {
            system: Some("Use parallel tool calling.".into()),
            messages: vec![Message::text(
                Role::User,
                "Please retrieve the secrets associated with each of these passwords: mellon,radiance",
            )],
            tools: vec![Tool {
                name: "secret_retrieval_tool".into(),
                description: Some("A tool that requires a password to retrieve a secret.".into()),
                parameters: f["parameters"].clone(),
            }],
            ..ChatRequest::default()
        };
        let body = body_of(&req, true);
        for field in ["model", "messages", "stream", "stream_options"] {
            assert_eq!(body[field], recorded[field], "{field}");
        }
        let mine = &body["tools"][0];
        assert_eq!(mine["type"], "function");
        for field in ["name", "description", "parameters"] {
            assert_eq!(mine["function"][field], f[field], "{field}");
        }
        assert_eq!(body["tools"].as_array().map(Vec::len), Some(1));
        // No tool_choice or parallel_tool_calls unless asked.
        assert!(body.get("tool_choice").is_none() && body.get("parallel_tool_calls").is_none());
    }

    #[test]
    fn request_like_recorded_image_url() {
        let recorded = recorded_request("openai_chat_image_url.request.json");
        let req = ChatRequest {
            messages: vec![Message {
                role: Role::User,
                content: vec![
                    Part::Text { text: "Describe the following image in one sentence".into() },
                    Part::Image(Image {
                        source: ImageSource::Url("https://en.wikipedia.org/static/images/icons/wikipedia.png".into()),
                        detail: Some("auto".into()),
                    }),
                ],
            }],
            ..ChatRequest::default()
        };
        let body = body_of(&req, false);
        assert_eq!(body["messages"], recorded["messages"]);
        assert_eq!(body["model"], recorded["model"]);
    }

    #[test]
    fn request_like_recorded_json_schema() {
        let recorded = recorded_request("openai_chat_json_schema.request.json");
        let js = &recorded["response_format"]["json_schema"];
        let req = ChatRequest {
            messages: vec![Message::text(Role::User, "Please recommend the most popular book by Patrick Rothfuss")],
            response_format: Some(ResponseFormat::JsonSchema {
                name: "Book".into(),
                schema: js["schema"].clone(),
                strict: Some(true),
            }),
            ..ChatRequest::default()
        };
        let body = body_of(&req, false);
        assert_eq!(body["messages"], recorded["messages"]);
        assert_eq!(body["response_format"]["type"], "json_schema");
        for field in ["name", "schema", "strict"] {
            assert_eq!(body["response_format"]["json_schema"][field], js[field], "{field}");
        }
        let req = ChatRequest { response_format: Some(ResponseFormat::JsonObject), ..req };
        assert_eq!(body_of(&req, false)["response_format"], json!({"type":"json_object"}));
    }

    #[test]
    fn request_translates_media_tool_turns_and_options() {
        let tool_result = |id: &str, text: &str| Part::ToolResult {
            tool_call_id: id.into(),
            content: vec![Part::Text { text: text.into() }],
            is_error: false,
        };
        let req = ChatRequest {
            messages: vec![
                Message {
                    role: Role::User,
                    content: vec![
                        Part::Text { text: "Look:".into() },
                        Part::Image(Image {
                            source: ImageSource::Base64 { data: "iVBORw0KGgo=".into(), media_type: "image/png".into() },
                            detail: None,
                        }),
                        Part::Document { data: "JVBERi0=".into(), media_type: "application/pdf".into(), name: None },
                        Part::Document {
                            data: "JVBERi0=".into(),
                            media_type: "application/pdf".into(),
                            name: Some("report.pdf".into()),
                        },
                    ],
                },
                Message {
                    role: Role::Assistant,
                    content: vec![
                        Part::Thinking { text: "private".into(), signature: Some("sig".into()) },
                        call("c1", "get_weather", r#"{"city":"Paris"}"#),
                        call("c2", "get_weather", r#"{"city":"Rome"}"#),
                    ],
                },
                Message { role: Role::Tool, content: vec![tool_result("c1", "22 C"), tool_result("c2", "25 C")] },
                Message {
                    role: Role::Assistant,
                    content: vec![Part::Text { text: "Paris 22, ".into() }, Part::Text { text: "Rome 25.".into() }],
                },
                Message::text(Role::User, "thanks"),
            ],
            tools: vec![Tool { name: "get_weather".into(), description: None, parameters: json!({"type":"object"}) }],
            tool_choice: Some(ToolChoice::Tool("get_weather".into())),
            parallel_tool_calls: Some(false),
            reasoning: Some(Reasoning::Budget { budget_tokens: 20_000 }),
            ..ChatRequest::default()
        };
        req.validate().unwrap();
        let body = body_of(&req, false);
        assert_eq!(
            body["messages"],
            json!([
                {"role":"user","content":[
                    {"type":"text","text":"Look:"},
                    {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}},
                    {"type":"file","file":{"filename":"document.pdf","file_data":"data:application/pdf;base64,JVBERi0="}},
                    {"type":"file","file":{"filename":"report.pdf","file_data":"data:application/pdf;base64,JVBERi0="}}]},
                {"role":"assistant","content":null,"tool_calls":[
                    {"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
                    {"id":"c2","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Rome\"}"}}]},
                {"role":"tool","tool_call_id":"c1","content":"22 C"},
                {"role":"tool","tool_call_id":"c2","content":"25 C"},
                {"role":"assistant","content":"Paris 22, Rome 25."},
                {"role":"user","content":"thanks"}
            ])
        );
        assert_eq!(
            body["tools"],
            json!([{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}])
        );
        assert_eq!(body["tool_choice"], json!({"type":"function","function":{"name":"get_weather"}}));
        assert_eq!(body["parallel_tool_calls"], false);
        assert_eq!(body["reasoning_effort"], "high");
        for (choice, wire) in
            [(ToolChoice::Auto, "auto"), (ToolChoice::None, "none"), (ToolChoice::Required, "required")]
        {
            let r = ChatRequest { tool_choice: Some(choice), ..req.clone() };
            assert_eq!(body_of(&r, false)["tool_choice"], wire);
        }
        let r = ChatRequest { reasoning: Some(Reasoning::Effort { effort: Effort::Low }), ..req.clone() };
        assert_eq!(body_of(&r, false)["reasoning_effort"], "low");
        // Without tools, no tool_choice or parallel_tool_calls (OpenAI refuses them).
        let r = ChatRequest { tools: vec![], tool_choice: Some(ToolChoice::Auto), ..req.clone() };
        let b = body_of(&r, false);
        assert!(b.get("tools").is_none() && b.get("tool_choice").is_none() && b.get("parallel_tool_calls").is_none());
        // An image inside a tool result has no Chat Completions form.
        let mut r = req.clone();
        r.messages[2].content[0] = Part::ToolResult {
            tool_call_id: "c1".into(),
            content: vec![Part::Image(Image { source: ImageSource::Url("https://x/a.png".into()), detail: None })],
            is_error: false,
        };
        r.validate().unwrap();
        let e = OpenAi.build(&specs()["openai"], "gpt-4o", &r, false, None).unwrap_err();
        assert_eq!(e, ProviderError::Unsupported { feature: "images in tool results" });
    }

    #[test]
    fn media_bound_per_model_family() {
        let image = |m: &str| OpenAi.media_bound(m).image;
        assert_eq!(image("gpt-4o"), 1445);
        assert_eq!(image("gpt-4o-2024-08-06"), 1445);
        assert_eq!(image("openai/gpt-4o"), 1445);
        assert_eq!(image("gpt-4.1"), 1445);
        assert_eq!(image("gpt-5"), 1445);
        assert_eq!(image("o1"), 1275);
        assert_eq!(image("o3-2025-04-16"), 1275);
        assert_eq!(image("gpt-4o-mini"), 48_169);
        assert_eq!(image("gpt-4o-mini-2024-07-18"), 48_169);
        assert_eq!(image("gpt-4.1-mini"), 2489);
        assert_eq!(image("gpt-5-mini"), 2489);
        assert_eq!(image("gpt-4.1-nano"), 3779);
        assert_eq!(image("gpt-5-nano"), 3779);
        assert_eq!(image("o4-mini"), 2642);
        assert_eq!(OpenAi.media_bound("gpt-4o"), MediaBound { image: 1445, pdf_page: 4445 });
        assert_eq!(OpenAi.media_bound("llama-3.3-70b"), MediaBound::default());
        assert_eq!(OpenAi.media_bound("anthropic/claude-sonnet-4.6"), MediaBound::default());
    }
}
