//! Anthropic Messages API (`POST {base}/messages`, `x-api-key`, `anthropic-version`).
//!
//! # Request translation
//! - The system text ([`ChatRequest::system_text`]) goes to `system`; the other messages go to
//!   `messages`. `tool` messages become `user` messages, and consecutive messages of the same
//!   wire role are merged into one (Anthropic requires alternating roles): the results of
//!   parallel tool calls and a user message that follows them form one `user` message, with the
//!   `tool_result` blocks first (Anthropic requires them before any other block).
//! - A message of exactly one text part is sent as a plain string; otherwise as a block array.
//!   Empty text parts are dropped (the API rejects empty text blocks), and so is a message left
//!   with no blocks.
//! - Parts: text → `text`; image → `image` with a `base64` (`media_type`, `data`) or `url`
//!   source (OpenAI's `detail` has no Anthropic equivalent and is ignored); document →
//!   `document` with a base64 `application/pdf` source and `title` = its name; tool call →
//!   `tool_use {id, name, input}` where `input` is the parsed arguments (empty arguments are
//!   `{}`; arguments that are not a JSON object are refused as
//!   [`ProviderError::Unsupported`], never sent as something else); tool result →
//!   `tool_result {tool_use_id, content, is_error?}` with `content` a string (one text part) or
//!   text/image blocks.
//! - Thinking with a signature → `thinking {thinking, signature}`, in the order the parts have
//!   (as returned: first in the assistant message). A signature of the form
//!   `redacted:<data>` (how this adapter reads a `redacted_thinking` block) goes back as
//!   `redacted_thinking {data}`. Thinking *without* a signature cannot be sent back (the API
//!   verifies every thinking block) and is dropped.
//! - `tools` → `[{name, description?, input_schema}]`, sent with `tool_choice` only when tools
//!   are declared: auto → `auto`, required → `any`, `{name}` → `tool`, none → `none`;
//!   `parallel_tool_calls: false` adds `disable_parallel_tool_use: true` (on `auto` when no
//!   choice was given; `none` has no such field).
//! - `reasoning` → `thinking {type: enabled, budget_tokens}` with the budget of
//!   [`crate::chat::Reasoning::budget`], raised to the API's minimum of
//!   [`MIN_THINKING_BUDGET`]. `max_tokens` must exceed the budget: when the app's (or the
//!   default [`DEFAULT_MAX_TOKENS`]) is not above it, the adapter sends
//!   `budget + max_tokens`, so the answer keeps the room the app asked for. With reasoning,
//!   a `temperature` other than 1 is refused (`Unsupported: temperature with reasoning`:
//!   the API rejects it), and so is a `tool_choice` that forces a tool (the API only allows
//!   `auto` and `none` with thinking).
//! - `response_format` `json_object`/`json_schema` is refused (`Unsupported:
//!   response_format`): the Messages API has no stable JSON mode; `text` is the default.
//!
//! # Response translation
//! Content blocks become parts in order: `text` → text; `thinking` → thinking with its
//! signature; `redacted_thinking` → thinking with empty text and signature `redacted:<data>`
//! (sent back as it came, see above); `tool_use` → tool call whose arguments are the compact
//! JSON of `input`. Other blocks (server tools) are skipped. `stop_reason` is normalised
//! (`tool_use` → tool_calls, `refusal` → refusal, `max_tokens` → length).
//!
//! Stream events: `message_start` (model, input and cache tokens, and an `output_tokens`
//! placeholder that must not be counted), `content_block_start` (`text`, `thinking`,
//! `redacted_thinking`, `tool_use {id, name}`), `content_block_delta` (`text_delta` → text,
//! `thinking_delta` → reasoning, `signature_delta` → signature, `input_json_delta` → the
//! arguments of the tool call that block started; tool calls are numbered 0, 1, … in the
//! order their blocks start, whatever the block index), `ping`, `message_delta` (cumulative
//! usage: output tokens, and on newer servers input and cache tokens too), `message_stop`,
//! `error`. A thinking block that directly follows another is opened with an empty reasoning
//! delta so the two keep their own signatures.
//!
//! # Usage
//! When `usage.iterations` is present (server-side compaction), the billable usage is the sum
//! over the iterations, not the top-level numbers. `input` = uncached input + cache reads +
//! cache writes; `cached` = cache reads.
//!
//! # Media bound
//! An image costs about `width × height / 750` tokens and larger images are scaled down to
//! about 1.15 megapixels, ≈ 1,600 tokens ([`IMAGE_TOKENS`]). A PDF page is sent as its text
//! (Anthropic: 1,500–3,000 tokens a page) plus an image of the page, so a page is bounded by
//! [`PDF_PAGE_TOKENS`] = 3,000 + 1,600.

use super::{
    error::{retryable_error_type, truncate},
    json_post, parse_json, set_secret_header, u64_at, ChatRequest, Completion, Frame, Provider, ProviderError,
    ProviderSpec, StreamDecoder, StreamSummary,
};
use crate::chat::{Delta, FinishReason, ImageSource, MediaBound, Message, Part, ResponseFormat, Role, ToolChoice};
use crate::usage_record::TokenUsage;
use reqwest::header::{HeaderName, HeaderValue};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `max_tokens` is required by the API; used when the app gives none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;
/// The smallest `thinking.budget_tokens` the API accepts.
pub const MIN_THINKING_BUDGET: u32 = 1024;
/// The most tokens one image costs (it is scaled down to about 1.15 megapixels).
pub const IMAGE_TOKENS: u64 = 1_600;
/// The most tokens one PDF page costs: its text (up to about 3,000) plus its image.
pub const PDF_PAGE_TOKENS: u64 = 3_000 + IMAGE_TOKENS;
/// The signature prefix that marks a `redacted_thinking` block read back as a thinking part.
pub const REDACTED_PREFIX: &str = "redacted:";

pub struct Anthropic;

/// The fields of a Messages body that `messages/count_tokens` takes.
const COUNTED_FIELDS: &[&str] = &["model", "messages", "system", "tools", "tool_choice", "thinking"];

impl Provider for Anthropic {
    fn build(
        &self,
        spec: &ProviderSpec,
        model: &str,
        req: &ChatRequest,
        stream: bool,
        key: Option<&SecretString>,
    ) -> Result<reqwest::Request, ProviderError> {
        let body = serde_json::to_value(wire_body(model, req, stream)?)
            .map_err(|e| ProviderError::Request(format!("cannot encode body: {e}")))?;
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

    fn count_request(
        &self,
        spec: &ProviderSpec,
        model: &str,
        req: &ChatRequest,
        key: Option<&SecretString>,
    ) -> Option<Result<reqwest::Request, ProviderError>> {
        Some(self.build(spec, model, req, false, key).and_then(|mut r| {
            // The same body, minus what only generation takes (count_tokens refuses it).
            let mut body: serde_json::Map<String, Value> = r
                .body()
                .and_then(|b| b.as_bytes())
                .and_then(|b| serde_json::from_slice(b).ok())
                .ok_or_else(|| ProviderError::Request("cannot re-read the request body".into()))?;
            body.retain(|k, _| COUNTED_FIELDS.contains(&k.as_str()));
            let bytes =
                serde_json::to_vec(&body).map_err(|e| ProviderError::Request(format!("cannot encode body: {e}")))?;
            *r.body_mut() = Some(bytes.into());
            let path = format!("{}/count_tokens", r.url().path());
            r.url_mut().set_path(&path);
            Ok(r)
        }))
    }

    fn parse_count(&self, body: &[u8]) -> Option<u64> {
        serde_json::from_slice::<Value>(body).ok()?.get("input_tokens")?.as_u64()
    }

    fn parse_body(&self, body: &[u8]) -> Result<Completion, ProviderError> {
        let v = parse_json(body)?;
        if v.get("type").and_then(Value::as_str) == Some("error") {
            return Err(error_event(&v));
        }
        let blocks = v
            .get("content")
            .filter(|c| c.is_array())
            .ok_or_else(|| ProviderError::Malformed("no `content` array in the response".into()))?;
        let blocks = Vec::<ResponseBlock>::deserialize(blocks)
            .map_err(|e| ProviderError::Malformed(format!("bad content block in the response: {e}")))?;
        let parts = blocks
            .into_iter()
            .filter_map(|b| match b {
                ResponseBlock::Text { text } => Some(Part::Text { text }),
                ResponseBlock::Thinking { thinking, signature } => {
                    Some(Part::Thinking { text: thinking, signature: signature.filter(|s| !s.is_empty()) })
                }
                ResponseBlock::RedactedThinking { data } => {
                    Some(Part::Thinking { text: String::new(), signature: Some(format!("{REDACTED_PREFIX}{data}")) })
                }
                ResponseBlock::ToolUse { id, name, input } => {
                    Some(Part::ToolCall { id, name, arguments: input.to_string() })
                }
                ResponseBlock::Other => None,
            })
            .collect();
        Ok(Completion {
            parts,
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

    fn media_bound(&self, _model: &str) -> MediaBound {
        MediaBound { image: IMAGE_TOKENS, pdf_page: PDF_PAGE_TOKENS }
    }
}

// ---- request wire format ----

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<WireToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<WireThinking>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: Content<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(&'a str),
    Blocks(Vec<Block<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: Source<'a>,
    },
    Document {
        source: Source<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        title: Option<&'a str>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<Content<'a>>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    RedactedThinking {
        data: &'a str,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Source<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

#[derive(Serialize)]
struct WireTool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: &'a Value,
}

#[derive(Serialize)]
struct WireToolChoice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disable_parallel_tool_use: bool,
}

#[derive(Serialize)]
struct WireThinking {
    #[serde(rename = "type")]
    kind: &'static str,
    budget_tokens: u32,
}

/// The Messages body for `req` (see the module docs for the rules).
fn wire_body<'a>(model: &'a str, req: &'a ChatRequest, stream: bool) -> Result<Body<'a>, ProviderError> {
    let unsupported = |feature| Err(ProviderError::Unsupported { feature });
    if matches!(req.response_format, Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. })) {
        return unsupported("response_format");
    }
    let mut max_tokens = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    let thinking = match req.reasoning {
        None => None,
        Some(r) => {
            if req.temperature.is_some_and(|t| t != 1.0) {
                return unsupported("temperature with reasoning");
            }
            if matches!(req.tool_choice, Some(ToolChoice::Required | ToolChoice::Tool(_))) {
                return unsupported("a tool_choice that forces a tool with reasoning");
            }
            let budget = r.budget().max(MIN_THINKING_BUDGET);
            if max_tokens <= budget {
                max_tokens = budget.saturating_add(max_tokens);
            }
            Some(WireThinking { kind: "enabled", budget_tokens: budget })
        }
    };
    let tools: Vec<WireTool<'a>> = req
        .tools
        .iter()
        .map(|t| WireTool { name: &t.name, description: t.description.as_deref(), input_schema: &t.parameters })
        .collect();
    let no_parallel = req.parallel_tool_calls == Some(false);
    let tool_choice = if tools.is_empty() {
        None
    } else {
        let choice = |kind, name| WireToolChoice { kind, name, disable_parallel_tool_use: no_parallel };
        match &req.tool_choice {
            None if no_parallel => Some(choice("auto", None)),
            None => None,
            Some(ToolChoice::Auto) => Some(choice("auto", None)),
            Some(ToolChoice::Required) => Some(choice("any", None)),
            Some(ToolChoice::Tool(name)) => Some(choice("tool", Some(name.as_str()))),
            Some(ToolChoice::None) => {
                Some(WireToolChoice { kind: "none", name: None, disable_parallel_tool_use: false })
            }
        }
    };
    Ok(Body {
        model,
        max_tokens,
        system: req.system_text(),
        messages: wire_messages(req.turns())?,
        temperature: req.temperature,
        stop_sequences: &req.stop,
        tools,
        tool_choice,
        thinking,
        stream,
    })
}

/// The turns as alternating `user`/`assistant` messages.
fn wire_messages<'a>(turns: impl Iterator<Item = &'a Message>) -> Result<Vec<WireMessage<'a>>, ProviderError> {
    let mut out: Vec<(&'static str, Vec<Block<'a>>)> = Vec::new();
    for m in turns {
        let role = if m.role == Role::Assistant { "assistant" } else { "user" };
        let mut blocks = Vec::with_capacity(m.content.len());
        for p in &m.content {
            if let Some(b) = block(p)? {
                blocks.push(b);
            }
        }
        if blocks.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some((r, have)) if *r == role => have.extend(blocks),
            _ => out.push((role, blocks)),
        }
    }
    Ok(out
        .into_iter()
        .map(|(role, mut blocks)| {
            // tool_result blocks must open a user message; the order among the rest is kept.
            blocks.sort_by_key(|b| !matches!(b, Block::ToolResult { .. }));
            let content = match blocks.as_slice() {
                [Block::Text { text }] => Content::Text(text),
                _ => Content::Blocks(blocks),
            };
            WireMessage { role, content }
        })
        .collect())
}

/// The block for one part; `None` for what is not sent (empty text, unsigned thinking).
fn block(p: &Part) -> Result<Option<Block<'_>>, ProviderError> {
    Ok(Some(match p {
        Part::Text { text } if text.is_empty() => return Ok(None),
        Part::Text { text } => Block::Text { text },
        Part::Image(img) => Block::Image { source: image_source(&img.source) },
        Part::Document { data, media_type, name } => {
            Block::Document { source: Source::Base64 { media_type, data }, title: name.as_deref() }
        }
        Part::ToolCall { id, name, arguments } => Block::ToolUse { id, name, input: tool_input(arguments)? },
        Part::ToolResult { tool_call_id, content, is_error } => {
            let mut blocks = Vec::with_capacity(content.len());
            for p in content {
                match p {
                    Part::Text { text } if text.is_empty() => {}
                    Part::Text { text } => blocks.push(Block::Text { text }),
                    Part::Image(img) => blocks.push(Block::Image { source: image_source(&img.source) }),
                    // ChatRequest::validate allows only text and images in a tool result.
                    _ => {
                        return Err(ProviderError::Unsupported {
                            feature: "a tool result part other than text or image",
                        })
                    }
                }
            }
            let content = match blocks.as_slice() {
                [] => None,
                [Block::Text { text }] => Some(Content::Text(text)),
                _ => Some(Content::Blocks(blocks)),
            };
            Block::ToolResult { tool_use_id: tool_call_id, content, is_error: *is_error }
        }
        Part::Thinking { signature: None, .. } => return Ok(None),
        Part::Thinking { text, signature: Some(signature) } => match signature.strip_prefix(REDACTED_PREFIX) {
            Some(data) if text.is_empty() => Block::RedactedThinking { data },
            _ => Block::Thinking { thinking: text, signature },
        },
    }))
}

fn image_source(s: &ImageSource) -> Source<'_> {
    match s {
        ImageSource::Url(url) => Source::Url { url },
        ImageSource::Base64 { data, media_type } => Source::Base64 { media_type, data },
    }
}

/// A tool call's arguments as the `input` object Anthropic requires (empty = `{}`).
fn tool_input(arguments: &str) -> Result<Value, ProviderError> {
    if arguments.trim().is_empty() {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(ProviderError::Unsupported { feature: "tool call arguments that are not a JSON object" }),
    }
}

// ---- response wire format ----

/// A content block of a whole message (or a `content_block_start`).
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ResponseBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
        #[serde(default)]
        signature: Option<String>,
    },
    RedactedThinking {
        data: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

/// `content_block_start`.
#[derive(Deserialize)]
struct BlockStart {
    index: u64,
    content_block: ResponseBlock,
}

/// `content_block_delta`.
#[derive(Deserialize)]
struct BlockDeltaEvent {
    index: u64,
    delta: BlockDelta,
}

/// `content_block_stop`.
#[derive(Deserialize)]
struct BlockStop {
    index: u64,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        #[serde(default)]
        text: String,
    },
    ThinkingDelta {
        #[serde(default)]
        thinking: String,
    },
    SignatureDelta {
        #[serde(default)]
        signature: String,
    },
    InputJsonDelta {
        #[serde(default)]
        partial_json: String,
    },
    #[serde(other)]
    Other,
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

fn malformed(what: &str) -> impl Fn(serde_json::Error) -> ProviderError + '_ {
    move |e| ProviderError::Malformed(format!("bad `{what}` event: {e}"))
}

/// A `tool_use` block of the stream: its block index, its ordinal among the answer's tool
/// calls, and whether any arguments were seen.
struct ToolBlock {
    index: u64,
    ordinal: usize,
    has_arguments: bool,
}

#[derive(Default)]
struct Decoder {
    start: Option<Parts>,
    usage: Option<TokenUsage>,
    finish_reason: Option<FinishReason>,
    model: Option<String>,
    done: bool,
    tools: Vec<ToolBlock>,
    /// The last block started was a thinking or redacted thinking block.
    after_thinking: bool,
}

impl Decoder {
    fn block_start(&mut self, e: BlockStart, out: &mut Vec<Delta>) {
        let thinking =
            matches!(e.content_block, ResponseBlock::Thinking { .. } | ResponseBlock::RedactedThinking { .. });
        if thinking && self.after_thinking {
            // Opens a new thinking part: the previous one is complete and keeps its signature.
            out.push(Delta::Reasoning(String::new()));
        }
        match e.content_block {
            ResponseBlock::Text { text } => {
                if !text.is_empty() {
                    out.push(Delta::Text(text));
                }
            }
            ResponseBlock::Thinking { thinking, signature } => {
                if !thinking.is_empty() {
                    out.push(Delta::Reasoning(thinking));
                }
                if let Some(s) = signature.filter(|s| !s.is_empty()) {
                    out.push(Delta::Signature(s));
                }
            }
            ResponseBlock::RedactedThinking { data } => out.push(Delta::Signature(format!("{REDACTED_PREFIX}{data}"))),
            ResponseBlock::ToolUse { id, name, .. } => {
                // `input` is always `{}` here: the arguments follow as input_json_delta.
                let ordinal = self.tools.len();
                self.tools.push(ToolBlock { index: e.index, ordinal, has_arguments: false });
                out.push(Delta::ToolCall { index: ordinal, id: Some(id), name: Some(name), arguments: String::new() });
            }
            ResponseBlock::Other => {}
        }
        self.after_thinking = thinking;
    }

    fn block_delta(&mut self, e: BlockDeltaEvent, out: &mut Vec<Delta>) {
        match e.delta {
            BlockDelta::TextDelta { text } if !text.is_empty() => out.push(Delta::Text(text)),
            BlockDelta::ThinkingDelta { thinking } if !thinking.is_empty() => out.push(Delta::Reasoning(thinking)),
            BlockDelta::SignatureDelta { signature } if !signature.is_empty() => out.push(Delta::Signature(signature)),
            BlockDelta::InputJsonDelta { partial_json } if !partial_json.is_empty() => {
                // Server tool blocks stream input_json_delta too; only tool_use blocks are calls.
                if let Some(t) = self.tools.iter_mut().find(|t| t.index == e.index) {
                    t.has_arguments = true;
                    out.push(Delta::ToolCall { index: t.ordinal, id: None, name: None, arguments: partial_json });
                }
            }
            _ => {}
        }
    }

    fn block_stop(&mut self, e: BlockStop, out: &mut Vec<Delta>) {
        // A call without arguments gets `{}`, as a whole message's `input` has it.
        if let Some(t) = self.tools.iter_mut().find(|t| t.index == e.index && !t.has_arguments) {
            t.has_arguments = true;
            out.push(Delta::ToolCall { index: t.ordinal, id: None, name: None, arguments: "{}".into() });
        }
    }
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
            "content_block_start" => {
                let e = BlockStart::deserialize(&v).map_err(malformed(kind))?;
                self.block_start(e, out);
            }
            "content_block_delta" => {
                let e = BlockDeltaEvent::deserialize(&v).map_err(malformed(kind))?;
                self.block_delta(e, out);
            }
            "content_block_stop" => {
                let e = BlockStop::deserialize(&v).map_err(malformed(kind))?;
                self.block_stop(e, out);
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
            _ => {} // ping, future events
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
    use crate::providers::test_support::{decode, decode_parts, fixture};
    use serde_json::json;

    const THINKING_SIGNATURE: &str = "EvoCCkYICxgCKkCY593DZILKPT3+cK6Py3Hcu8WYGSW2vk6yge13JAuAYlQFzUC2c6UlsIWiBMvJjtDc6zfh73EOpWqxYB+pOh5zEgxoquY58aQkL5YJ9YUaDJpBRqMUVxU6SPYLRCIwcxSHXlhIWQw0QhiPV+lrMXgTdk4SuJnWVpHc+uTSxYmxetnHugsdCo6xWShRJaQLKuEBsfQzKHid0WmA8hdgz0mVpI+nAPvnhpHFIZbnGl2HQi7cc87o/HZzCod2tF8mEuqdyNtPHgx+H+Zyr/Pi0kmJF6hOoylmR5nGrXeqR1ttWFzzPF7XpmIr+vw3y/rNCDQVRWxmG/IDyHVLKXtALaFnDpNfvSGv6L3udrgkeWuV2VEzfGPclEIaailiMsxesYC/LJGUcPlqZ9kL18GQ16lr15u6kOUMlyYKA7AoeL6K7U3qCvpSdfGpMfgkasK5ugj0FL3UgFpUrrFbPlpLAdLsNeG2G+XBiOY0TtfokCiI1P7LGAE=";
    const THINKING_TEXT: &str = "The user wants two names for a pet pelican, and wants me to be brief. I'll give two simple, fitting names.\n\nSome options:\n- Pete\n- Percy\n- Captain\n- Scoop\n- Bill\n- Gully\n\nI'll pick two good ones and keep it very short.";

    /// A request from the RPC's JSON shape of its parts.
    fn request(v: Value) -> ChatRequest {
        let get = |k: &str| v.get(k).cloned().filter(|x| !x.is_null());
        let r = ChatRequest {
            messages: serde_json::from_value(v["messages"].clone()).unwrap(),
            system: get("system").map(|s| s.as_str().unwrap().to_string()),
            max_tokens: get("max_tokens").map(|m| u32::try_from(m.as_u64().unwrap()).unwrap()),
            temperature: get("temperature").map(|t| t.as_f64().unwrap()),
            stop: Vec::new(),
            tools: get("tools").map(|t| serde_json::from_value(t).unwrap()).unwrap_or_default(),
            tool_choice: get("tool_choice").map(|t| serde_json::from_value(t).unwrap()),
            parallel_tool_calls: get("parallel_tool_calls").map(|b| b.as_bool().unwrap()),
            response_format: get("response_format").map(|t| serde_json::from_value(t).unwrap()),
            reasoning: get("reasoning").map(|t| serde_json::from_value(t).unwrap()),
        };
        r.validate().unwrap();
        r
    }

    fn body(model: &str, r: &ChatRequest, stream: bool) -> Value {
        serde_json::to_value(wire_body(model, r, stream).unwrap()).unwrap()
    }

    fn refused(r: &ChatRequest) -> &'static str {
        match wire_body("m", r, false) {
            Err(ProviderError::Unsupported { feature }) => feature,
            Err(e) => panic!("not Unsupported: {e}"),
            Ok(b) => panic!("accepted: {}", serde_json::to_string(&b).unwrap()),
        }
    }

    /// `content` as a block array (a plain string is one text block), to compare with recordings.
    fn blocks(messages: &Value) -> Value {
        let mut m = messages.clone();
        for msg in m.as_array_mut().unwrap() {
            if let Some(t) = msg["content"].as_str() {
                msg["content"] = json!([{"type": "text", "text": t}]);
            }
        }
        m
    }

    fn strip_cache_control(v: &mut Value) {
        if let Some(a) = v.as_array_mut() {
            a.iter_mut().for_each(strip_cache_control);
        } else if let Some(o) = v.as_object_mut() {
            o.remove("cache_control");
        }
    }

    fn recorded(name: &str) -> Value {
        serde_json::from_slice(&fixture(name)).unwrap()
    }

    #[test]
    fn stream_of_text_and_two_tool_use_blocks() {
        for chunk in [1, 7, 61, 4096] {
            let d = decode_parts(&Anthropic, &fixture("anthropic_messages_stream_tool_use.sse"), chunk);
            assert!(d.err.is_none() && d.done, "chunk {chunk}");
            assert_eq!(
                d.parts,
                vec![
                    Part::Text { text: "I'll retrieve the secrets for both passwords you provided.".into() },
                    Part::ToolCall {
                        id: "toolu_015cUijgET79LXjgeYQerN2h".into(),
                        name: "secret_retrieval_tool".into(),
                        arguments: r#"{"password": "mellon"}"#.into(),
                    },
                    Part::ToolCall {
                        id: "toolu_01XZTimPexA7h3EVKesnKt5T".into(),
                        name: "secret_retrieval_tool".into(),
                        arguments: r#"{"password": "radiance"}"#.into(),
                    },
                ],
                "chunk {chunk}"
            );
            // Tool calls are numbered among the calls (0, 1), not by block index (1, 2).
            let indexes: Vec<usize> = d
                .deltas
                .iter()
                .filter_map(|x| match x {
                    Delta::ToolCall { index, .. } => Some(*index),
                    _ => None,
                })
                .collect();
            assert_eq!(indexes, [0, 0, 0, 0, 1, 1, 1, 1, 1]);
            assert_eq!(d.summary.finish_reason, Some(FinishReason::ToolCalls));
            assert_eq!(d.summary.model.as_deref(), Some("claude-sonnet-4-20250514"));
            let u = d.summary.usage.unwrap();
            assert_eq!((u.input, u.output, u.cached, u.cache_write, u.estimated), (416, 109, 0, 0, false));
        }
    }

    #[test]
    fn stream_of_thinking_with_signature_then_text() {
        assert_eq!(THINKING_SIGNATURE.len(), 512);
        for chunk in [1, 13, 200, 8192] {
            let d = decode_parts(&Anthropic, &fixture("anthropic_messages_stream_thinking.sse"), chunk);
            assert!(d.err.is_none() && d.done, "chunk {chunk}");
            assert_eq!(
                d.parts,
                vec![
                    Part::Thinking { text: THINKING_TEXT.into(), signature: Some(THINKING_SIGNATURE.into()) },
                    Part::Text { text: "- Captain\n- Scoop".into() },
                ],
                "chunk {chunk}"
            );
            assert_eq!(d.deltas.iter().filter(|x| matches!(x, Delta::Reasoning(_))).count(), 29);
            assert_eq!(d.summary.finish_reason, Some(FinishReason::Stop));
            let u = d.summary.usage.unwrap();
            assert_eq!((u.input, u.output, u.cached, u.estimated), (46, 84, 0, false));
        }
    }

    #[test]
    fn consecutive_thinking_blocks_keep_their_signatures_and_a_call_without_arguments_gets_an_object() {
        let events = [
            json!({"type":"message_start","message":{"model":"m","usage":{"input_tokens":3,"output_tokens":1}}}),
            json!({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"a"}}),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"S1"}}),
            json!({"type":"content_block_stop","index":0}),
            json!({"type":"content_block_start","index":1,"content_block":{"type":"redacted_thinking","data":"R"}}),
            json!({"type":"content_block_stop","index":1}),
            json!({"type":"content_block_start","index":2,"content_block":{"type":"thinking","thinking":"","signature":""}}),
            json!({"type":"content_block_delta","index":2,"delta":{"type":"signature_delta","signature":"S2"}}),
            json!({"type":"content_block_stop","index":2}),
            json!({"type":"content_block_start","index":3,"content_block":{"type":"server_tool_use","id":"srv","name":"web_search","input":{}}}),
            json!({"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{\"q\":1}"}}),
            json!({"type":"content_block_stop","index":3}),
            json!({"type":"content_block_start","index":4,"content_block":{"type":"tool_use","id":"t1","name":"now","input":{}}}),
            json!({"type":"content_block_delta","index":4,"delta":{"type":"input_json_delta","partial_json":""}}),
            json!({"type":"content_block_stop","index":4}),
            json!({"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":9}}),
            json!({"type":"message_stop"}),
        ];
        let sse: String =
            events.iter().map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap())).collect();
        let d = decode_parts(&Anthropic, sse.as_bytes(), 5);
        assert!(d.err.is_none() && d.done);
        assert_eq!(
            d.parts,
            vec![
                Part::Thinking { text: "a".into(), signature: Some("S1".into()) },
                Part::Thinking { text: String::new(), signature: Some("redacted:R".into()) },
                Part::Thinking { text: String::new(), signature: Some("S2".into()) },
                Part::ToolCall { id: "t1".into(), name: "now".into(), arguments: "{}".into() },
            ]
        );
        let u = d.summary.usage.unwrap();
        assert_eq!((u.input, u.output), (3, 9));
    }

    #[test]
    fn request_like_the_recorded_tool_use_request() {
        let rec = recorded("anthropic_messages_stream_tool_use.request.json");
        let tool = &rec["tools"][0];
        let r = request(json!({
            "system": "Use parallel tool calling.",
            "max_tokens": 16000,
            "messages": [{"role":"user","content": rec["messages"][0]["content"]}],
            "tools": [{"name": tool["name"], "description": tool["description"], "parameters": tool["input_schema"]}],
        }));
        let b = body("claude-sonnet-4-0", &r, true);
        assert_eq!(b["messages"], rec["messages"]);
        let mut tools = rec["tools"].clone();
        strip_cache_control(&mut tools);
        assert_eq!(b["tools"], tools);
        assert_eq!(b["system"], rec["system"][0]["text"]);
        for k in ["model", "max_tokens", "stream"] {
            assert_eq!(b[k], rec[k], "{k}");
        }
        for k in ["tool_choice", "thinking", "temperature"] {
            assert!(b.get(k).is_none(), "{k}: {b}");
        }
    }

    #[test]
    fn request_like_the_recorded_thinking_request() {
        let rec = recorded("anthropic_messages_stream_thinking.request.json");
        let r = request(json!({
            "max_tokens": 8192,
            "temperature": 1.0,
            "messages": rec["messages"],
            "reasoning": {"budget_tokens": 1024},
        }));
        let b = body("claude-sonnet-4-5", &r, true);
        // One text part goes as a plain string; the recording sent it as one text block.
        assert_eq!(b["messages"][0]["content"], json!("Two names for a pet pelican, be brief"));
        assert_eq!(blocks(&b["messages"]), rec["messages"]);
        for k in ["model", "max_tokens", "temperature", "thinking", "stream"] {
            assert_eq!(b[k], rec[k], "{k}");
        }
        // The same with an effort: low is a 1,024-token budget.
        let r = request(json!({"max_tokens": 8192, "messages": rec["messages"], "reasoning": {"effort": "low"}}));
        assert_eq!(body("m", &r, true)["thinking"], rec["thinking"]);
    }

    #[test]
    fn reasoning_budget_and_max_tokens() {
        let msgs = json!([{"role":"user","content":"hi"}]);
        let cases = [
            // (max_tokens, reasoning, sent max_tokens, sent budget)
            (json!(null), json!({"effort":"high"}), 16384 + DEFAULT_MAX_TOKENS, 16384),
            (json!(null), json!({"effort":"low"}), DEFAULT_MAX_TOKENS, 1024),
            (json!(500), json!({"effort":"medium"}), 4096 + 500, 4096),
            (json!(4096), json!({"budget_tokens":4096}), 8192, 4096),
            (json!(9000), json!({"budget_tokens":4096}), 9000, 4096),
            (json!(2000), json!({"budget_tokens":10}), 2000, MIN_THINKING_BUDGET),
        ];
        for (max, reasoning, want_max, want_budget) in cases {
            let r = request(json!({"messages": msgs, "max_tokens": max, "reasoning": reasoning}));
            let b = body("m", &r, false);
            assert_eq!(b["max_tokens"], json!(want_max), "{max} {reasoning}");
            assert_eq!(b["thinking"], json!({"type":"enabled","budget_tokens":want_budget}), "{max} {reasoning}");
        }
        let r = request(json!({"messages": msgs, "max_tokens": 100}));
        let b = body("m", &r, false);
        assert_eq!((b["max_tokens"].clone(), b.get("thinking")), (json!(100), None));
        assert!(b.get("stream").is_none());
        let r = request(json!({"messages": msgs, "temperature": 0.2, "reasoning": {"effort":"low"}}));
        assert_eq!(refused(&r), "temperature with reasoning");
        let tools = json!([{"name":"f"}]);
        let r = request(
            json!({"messages": msgs, "tools": tools, "tool_choice": "required", "reasoning": {"effort":"low"}}),
        );
        assert_eq!(refused(&r), "a tool_choice that forces a tool with reasoning");
        let r = request(json!({"messages": msgs, "temperature": 0.2}));
        assert_eq!(body("m", &r, false)["temperature"], json!(0.2));
    }

    #[test]
    fn tools_and_tool_choice() {
        let msgs = json!([{"role":"user","content":"hi"}]);
        let tools = json!([{"name":"f","description":"does f","parameters":{"type":"object","properties":{"x":{"type":"integer"}}}},{"name":"g"}]);
        let r = request(json!({"messages": msgs, "tools": tools}));
        let b = body("m", &r, false);
        assert_eq!(
            b["tools"],
            json!([
                {"name":"f","description":"does f","input_schema":{"type":"object","properties":{"x":{"type":"integer"}}}},
                {"name":"g","input_schema":{"type":"object","properties":{}}}
            ])
        );
        assert!(b.get("tool_choice").is_none());
        let cases = [
            (json!("auto"), json!(null), json!({"type":"auto"})),
            (json!("required"), json!(null), json!({"type":"any"})),
            (json!({"name":"g"}), json!(null), json!({"type":"tool","name":"g"})),
            (json!("none"), json!(null), json!({"type":"none"})),
            (json!(null), json!(false), json!({"type":"auto","disable_parallel_tool_use":true})),
            (json!("required"), json!(false), json!({"type":"any","disable_parallel_tool_use":true})),
            (json!({"name":"f"}), json!(false), json!({"type":"tool","name":"f","disable_parallel_tool_use":true})),
            (json!("none"), json!(false), json!({"type":"none"})),
            (json!("auto"), json!(true), json!({"type":"auto"})),
        ];
        for (choice, parallel, want) in cases {
            let r = request(
                json!({"messages": msgs, "tools": tools, "tool_choice": choice, "parallel_tool_calls": parallel}),
            );
            assert_eq!(body("m", &r, false)["tool_choice"], want, "{choice} {parallel}");
        }
        // No tools declared: no tool_choice either.
        let r = request(json!({"messages": msgs, "tool_choice": "none", "parallel_tool_calls": false}));
        assert!(body("m", &r, false).get("tool_choice").is_none());
    }

    #[test]
    fn conversation_with_tool_calls_results_media_and_thinking() {
        let r = request(json!({
            "system": "Be terse.",
            "messages": [
                {"role":"system","content":"Use metric units."},
                {"role":"user","content":[
                    {"type":"text","text":"Weather where this is, and summarise the PDF."},
                    {"type":"image","data":"iVBORw0KGgo=","media_type":"image/png"},
                    {"type":"image","url":"https://example.com/a.jpg","detail":"high"},
                    {"type":"document","data":"JVBERi0=","media_type":"application/pdf","name":"report.pdf"}]},
                {"role":"assistant","content":[
                    {"type":"thinking","text":"Need the weather.","signature":"sig-1"},
                    {"type":"thinking","text":"","signature":"redacted:opaque"},
                    {"type":"thinking","text":"unsigned, from elsewhere"},
                    {"type":"text","text":""},
                    {"type":"tool_call","id":"toolu_1","name":"weather","arguments":"{\"city\": \"Paris\"}"},
                    {"type":"tool_call","id":"toolu_2","name":"clock","arguments":""}]},
                {"role":"tool","tool_call_id":"toolu_1","content":"22 C"},
                {"role":"tool","tool_call_id":"toolu_2","is_error":true,"content":[
                    {"type":"text","text":"no clock;"},{"type":"image","url":"https://example.com/clock.png"}]},
                {"role":"user","content":"And tomorrow?"},
                {"role":"assistant","content":"Sunny."},
            ],
            "tools": [{"name":"weather"},{"name":"clock"}],
        }));
        let b = body("claude-sonnet-4-5", &r, false);
        assert_eq!(b["system"], json!("Be terse.\n\nUse metric units."));
        assert_eq!(
            b["messages"],
            json!([
                {"role":"user","content":[
                    {"type":"text","text":"Weather where this is, and summarise the PDF."},
                    {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},
                    {"type":"image","source":{"type":"url","url":"https://example.com/a.jpg"}},
                    {"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0="},"title":"report.pdf"}]},
                {"role":"assistant","content":[
                    {"type":"thinking","thinking":"Need the weather.","signature":"sig-1"},
                    {"type":"redacted_thinking","data":"opaque"},
                    {"type":"tool_use","id":"toolu_1","name":"weather","input":{"city":"Paris"}},
                    {"type":"tool_use","id":"toolu_2","name":"clock","input":{}}]},
                {"role":"user","content":[
                    {"type":"tool_result","tool_use_id":"toolu_1","content":"22 C"},
                    {"type":"tool_result","tool_use_id":"toolu_2","is_error":true,"content":[
                        {"type":"text","text":"no clock;"},
                        {"type":"image","source":{"type":"url","url":"https://example.com/clock.png"}}]},
                    {"type":"text","text":"And tomorrow?"}]},
                {"role":"assistant","content":"Sunny."}
            ])
        );
    }

    #[test]
    fn refused_features_are_named() {
        let msgs = json!([{"role":"user","content":"hi"}]);
        let r = request(json!({"messages": msgs, "response_format": {"type":"json_object"}}));
        assert_eq!(refused(&r), "response_format");
        let r = request(
            json!({"messages": msgs, "response_format": {"type":"json_schema","name":"x","schema":{"type":"object"}}}),
        );
        assert_eq!(refused(&r), "response_format");
        let r = request(json!({"messages": msgs, "response_format": {"type":"text"}}));
        assert!(wire_body("m", &r, false).is_ok());
        for args in ["{\"a\": 1", "[1,2]", "\"text\""] {
            let r = request(json!({"messages": [
                {"role":"user","content":"hi"},
                {"role":"assistant","content":[{"type":"tool_call","id":"t","name":"f","arguments":args}]},
                {"role":"tool","tool_call_id":"t","content":"ok"}]}));
            assert_eq!(refused(&r), "tool call arguments that are not a JSON object", "{args}");
            assert!(!ProviderError::Unsupported { feature: "x" }.is_retryable());
        }
    }

    #[test]
    fn whole_message_with_thinking_and_tool_use_goes_back_as_it_came() {
        let body = json!({"id":"msg_2","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929",
            "content":[
                {"type":"thinking","thinking":"I should look it up.","signature":"EqQBCgIYAhIM"},
                {"type":"redacted_thinking","data":"EmwKAhgBEgy3va3pzix"},
                {"type":"text","text":"Let me check."},
                {"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{"query":"x"}},
                {"type":"tool_use","id":"toolu_9","name":"lookup","input":{"q":"pelican","n":2}}],
            "stop_reason":"tool_use","usage":{"input_tokens":50,"output_tokens":40}});
        let c = Anthropic.parse_body(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            c.parts,
            vec![
                Part::Thinking { text: "I should look it up.".into(), signature: Some("EqQBCgIYAhIM".into()) },
                Part::Thinking { text: String::new(), signature: Some("redacted:EmwKAhgBEgy3va3pzix".into()) },
                Part::Text { text: "Let me check.".into() },
                Part::ToolCall {
                    id: "toolu_9".into(),
                    name: "lookup".into(),
                    arguments: r#"{"n":2,"q":"pelican"}"#.into()
                },
            ]
        );
        assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(c.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
        let u = c.usage.unwrap();
        assert_eq!((u.input, u.output), (50, 40));
        // The next turn sends the assistant message back, blocks in the same order.
        let r = ChatRequest {
            messages: vec![
                Message::text(Role::User, "Find pelicans."),
                Message { role: Role::Assistant, content: c.parts },
                serde_json::from_value(json!({"role":"tool","tool_call_id":"toolu_9","content":"2 found"})).unwrap(),
            ],
            tools: serde_json::from_value(json!([{"name":"lookup"}])).unwrap(),
            reasoning: Some(crate::chat::Reasoning::Budget { budget_tokens: 2048 }),
            ..ChatRequest::default()
        };
        r.validate().unwrap();
        let b = super::tests::body("m", &r, false);
        assert_eq!(
            b["messages"][1],
            json!({"role":"assistant","content":[
                {"type":"thinking","thinking":"I should look it up.","signature":"EqQBCgIYAhIM"},
                {"type":"redacted_thinking","data":"EmwKAhgBEgy3va3pzix"},
                {"type":"text","text":"Let me check."},
                {"type":"tool_use","id":"toolu_9","name":"lookup","input":{"q":"pelican","n":2}}]})
        );
        assert_eq!(
            b["messages"][2],
            json!({"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_9","content":"2 found"}]})
        );
    }

    #[test]
    fn build_sets_url_headers_and_body() {
        let spec = ProviderSpec {
            name: "anthropic".into(),
            adapter: crate::providers::AdapterKind::Anthropic,
            base_url: "https://api.anthropic.com/v1/".into(),
            key_env: None,
            keyless: false,
            models: Vec::new(),
            headers: Default::default(),
            max_tokens_field: "max_tokens".into(),
            stream_usage: true,
            api_version: "2023-06-01".into(),
            api: crate::providers::presets::Api::default(),
        };
        let r = request(json!({"messages":[{"role":"user","content":"hi"}]}));
        let key = SecretString::from("sk-ant-test".to_string());
        let http = Anthropic.build(&spec, "claude-haiku-4-5", &r, true, Some(&key)).unwrap();
        assert_eq!(http.url().as_str(), "https://api.anthropic.com/v1/messages");
        assert_eq!(http.headers()["anthropic-version"], "2023-06-01");
        assert!(http.headers()["x-api-key"].is_sensitive());
        let sent: Value = serde_json::from_slice(http.body().unwrap().as_bytes().unwrap()).unwrap();
        assert_eq!(
            sent,
            json!({"model":"claude-haiku-4-5","max_tokens":DEFAULT_MAX_TOKENS,"messages":[{"role":"user","content":"hi"}],"stream":true})
        );
        // The count request: same headers, its own path, no generation fields.
        let r = request(json!({"messages":[{"role":"user","content":"hi"}], "temperature": 0.5, "stop": ["x"]}));
        let count = Anthropic.count_request(&spec, "claude-haiku-4-5", &r, Some(&key)).unwrap().unwrap();
        assert_eq!(count.url().as_str(), "https://api.anthropic.com/v1/messages/count_tokens");
        assert!(count.headers()["x-api-key"].is_sensitive());
        let sent: Value = serde_json::from_slice(count.body().unwrap().as_bytes().unwrap()).unwrap();
        assert_eq!(sent, json!({"model":"claude-haiku-4-5","messages":[{"role":"user","content":"hi"}]}));
        assert_eq!(Anthropic.parse_count(br#"{"input_tokens": 14}"#), Some(14));
        assert_eq!(Anthropic.parse_count(b"{}"), None);
    }

    #[test]
    fn media_bound_is_published_per_image_and_page() {
        assert_eq!(Anthropic.media_bound("claude-sonnet-4-5"), MediaBound { image: 1_600, pdf_page: 4_600 });
    }

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
