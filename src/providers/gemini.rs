//! Google Gemini API: `POST {base}/models/{model}:generateContent`, or
//! `:streamGenerateContent?alt=sse` (SSE with CRLF line endings, no terminal marker), key in
//! `x-goog-api-key`.
//!
//! Every chunk carries a cumulative `usageMetadata`; the last one wins (never summed).
//! `input` = `promptTokenCount` (which includes `cachedContentTokenCount`) +
//! `toolUsePromptTokenCount`; `cached` = `cachedContentTokenCount`; `reasoning` =
//! `thoughtsTokenCount`; `output` = `candidatesTokenCount` + `thoughtsTokenCount` (thinking is
//! billed as output). Thought parts (`thought: true`) are not part of the answer text.
//!
//! Request translation (the conversation → `contents`):
//! - `system` text → `systemInstruction`; `user` → role `user`, `assistant` → role `model`;
//! - text → `{text}`; base64 images and PDFs → `{inlineData: {mimeType, data}}`; URL images →
//!   `{fileData: {mimeType?, fileUri}}` with the type guessed from the URL's extension (omitted
//!   when unknown). Limits: the Gemini API reads `fileUri`s it can resolve (its Files API URIs,
//!   and on current models public `https` URLs); any other URL is refused by Gemini with a 400,
//!   which comes back as a provider error. An image's `detail` has no Gemini equivalent and is
//!   dropped;
//! - an assistant tool call → `{functionCall: {name, args}}` with `args` the parsed arguments
//!   (they must be a JSON object: a call whose arguments do not parse as one is a
//!   [`ProviderError::Request`]);
//! - a thinking part's text is never sent back (Gemini does not take thought text as input);
//!   its `signature` goes on the next part of the same message as `thoughtSignature` (Gemini
//!   requires the signature back on the very part it came with; answers are read so that the
//!   signature's thinking part sits right before that part). A signature with no part after it
//!   rides on an empty text part;
//! - tool results → a `user` content of `{functionResponse: {name, response: {result}}}` (or
//!   `{error}` when `is_error`), consecutive results in one content. Gemini pairs responses
//!   with calls by name and order: the name is the one of the tool call with that id in the
//!   nearest earlier assistant message (an unknown id is a [`ProviderError::Request`]). Call
//!   ids are not sent: some Gemini endpoints refuse an `id` field on `functionCall` /
//!   `functionResponse` with a 400. Images inside tool results are refused as unsupported;
//! - `tools` → `[{functionDeclarations: [{name, description, parametersJsonSchema}]}]` (full
//!   JSON Schema; the older `parameters` field takes only an OpenAPI subset); `tool_choice` →
//!   `toolConfig.functionCallingConfig.mode` AUTO, NONE, ANY (required), or ANY with
//!   `allowedFunctionNames` for a named tool; `parallel_tool_calls` has no Gemini equivalent;
//! - `response_format` → `generationConfig.responseMimeType: application/json`, with
//!   `responseJsonSchema` for a schema (`strict` has no equivalent); `reasoning` →
//!   `generationConfig.thinkingConfig: {thinkingBudget, includeThoughts: true}`.
//!
//! Answer translation, part by part in order: `thought: true` text → reasoning (then its
//! `thoughtSignature`, if any, completes that thinking part); text → text; `functionCall` →
//! a tool call (id: `functionCall.id`, else `call_<ordinal>` — unique within the answer, and a
//! tool result is matched against the nearest assistant message, so reuse across turns is
//! harmless), arguments = the compact JSON of `args`, arriving whole in one chunk. A
//! `thoughtSignature` on any non-thought part becomes a signature delta right before that part
//! (an empty thinking part carrying it). Gemini says `STOP` after function calls; an answer
//! with tool calls finishes with `tool_calls`.

use super::{
    error::truncate, json_post, parse_json, set_secret_header, u64_at, ChatRequest, Completion, Frame, Provider,
    ProviderError, ProviderSpec, StreamDecoder, StreamSummary,
};
use crate::chat::{joined_text, ResponseFormat};
use crate::chat::{Assembler, Delta, FinishReason, ImageSource, MediaBound, Message, Part, Role, ToolChoice};
use crate::providers::error::retryable_status;
use crate::usage_record::TokenUsage;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Tokens of one 768×768 image tile (and of a whole image of at most 384×384 pixels).
pub const TILE_TOKENS: u64 = 258;
/// Tiles of the largest image: Gemini scales images down to at most 3072×3072 before tiling
/// them into 768×768 tiles (4×4). 16 × 258 = 4128 tokens is also above Gemini 3's highest
/// `media_resolution` per image (1120 at `high`), so it bounds every current model.
pub const MAX_IMAGE_TILES: u64 = 16;
/// A PDF page: 258 tokens as an image plus the text Gemini extracts from it; 1000 covers a
/// dense page of text.
pub const PDF_PAGE_TOKENS: u64 = 1000;

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
        if model.is_empty() || model.contains(['/', '?', '#', ':']) {
            return Err(ProviderError::Request(format!("`{model}` is not a valid Gemini model name")));
        }
        let body = request_body(req)?;
        let body = serde_json::to_value(&body)
            .map_err(|e| ProviderError::Request(format!("cannot encode the Gemini request: {e}")))?;
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
        let usage = usage_of(&v);
        if v.get("candidates").is_none() && usage.is_none() {
            return Err(ProviderError::Malformed("no `candidates` in the response".into()));
        }
        let chunk = read_chunk(&v)?;
        let mut deltas = Vec::new();
        let mut calls = 0;
        chunk.deltas(&mut calls, &mut deltas);
        let mut a = Assembler::default();
        for d in &deltas {
            a.push(d);
        }
        Ok(Completion {
            parts: a.into_parts(),
            finish_reason: chunk.finish_reason.map(|f| normalise(f, calls > 0)),
            model: chunk.model_version,
            usage,
            provider_cost_microusd: None,
        })
    }

    fn body_usage(&self, body: &Value) -> Option<TokenUsage> {
        usage_of(body)
    }

    fn decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(Decoder::default())
    }

    fn media_bound(&self, _model: &str) -> MediaBound {
        MediaBound { image: TILE_TOKENS * MAX_IMAGE_TILES, pdf_page: PDF_PAGE_TOKENS }
    }
}

// ---- request wire ----

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestWire<'a> {
    contents: Vec<ContentOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<SystemOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolsOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfigOut<'a>>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    generation_config: GenerationConfig<'a>,
}

#[derive(Serialize)]
struct SystemOut {
    parts: Vec<TextOut>,
}

#[derive(Serialize)]
struct TextOut {
    text: String,
}

#[derive(Serialize, Debug)]
struct ContentOut<'a> {
    role: &'static str,
    parts: Vec<PartOut<'a>>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct PartOut<'a> {
    #[serde(flatten)]
    data: PartData<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thought_signature: Option<&'a str>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
enum PartData<'a> {
    Text(&'a str),
    InlineData(InlineData<'a>),
    FileData(FileData<'a>),
    FunctionCall(FunctionCallOut<'a>),
    FunctionResponse(FunctionResponseOut<'a>),
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct InlineData<'a> {
    mime_type: &'a str,
    data: &'a str,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct FileData<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    mime_type: Option<&'static str>,
    file_uri: &'a str,
}

#[derive(Serialize, Debug)]
struct FunctionCallOut<'a> {
    name: &'a str,
    args: Value,
}

#[derive(Serialize, Debug)]
struct FunctionResponseOut<'a> {
    name: &'a str,
    response: FunctionResult,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "lowercase")]
enum FunctionResult {
    Result(String),
    Error(String),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolsOut<'a> {
    function_declarations: Vec<FunctionDeclaration<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionDeclaration<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters_json_schema: &'a Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfigOut<'a> {
    function_calling_config: FunctionCallingConfig<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig<'a> {
    mode: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_function_names: Vec<&'a str>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_json_schema: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_config: Option<ThinkingConfig>,
}

impl GenerationConfig<'_> {
    fn is_empty(&self) -> bool {
        self.max_output_tokens.is_none()
            && self.temperature.is_none()
            && self.stop_sequences.is_empty()
            && self.response_mime_type.is_none()
            && self.thinking_config.is_none()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ThinkingConfig {
    thinking_budget: u32,
    include_thoughts: bool,
}

fn request_body(req: &ChatRequest) -> Result<RequestWire<'_>, ProviderError> {
    let mut contents: Vec<ContentOut<'_>> = Vec::new();
    // Whether the last content holds tool results (the next ones join it).
    let mut in_results = false;
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::System => continue,
            Role::Tool => {
                let parts = tool_results(&req.messages[..i], m)?;
                match contents.last_mut() {
                    Some(last) if in_results => last.parts.extend(parts),
                    _ => contents.push(ContentOut { role: "user", parts }),
                }
                in_results = true;
            }
            Role::User | Role::Assistant => {
                let parts = message_parts(m)?;
                in_results = false;
                if !parts.is_empty() {
                    let role = if m.role == Role::Assistant { "model" } else { "user" };
                    contents.push(ContentOut { role, parts });
                }
            }
        }
    }
    let tools = if req.tools.is_empty() {
        Vec::new()
    } else {
        vec![ToolsOut {
            function_declarations: req
                .tools
                .iter()
                .map(|t| FunctionDeclaration {
                    name: &t.name,
                    description: t.description.as_deref(),
                    parameters_json_schema: &t.parameters,
                })
                .collect(),
        }]
    };
    let tool_config = req.tool_choice.as_ref().map(|c| {
        let (mode, allowed) = match c {
            ToolChoice::Auto => ("AUTO", Vec::new()),
            ToolChoice::None => ("NONE", Vec::new()),
            ToolChoice::Required => ("ANY", Vec::new()),
            ToolChoice::Tool(name) => ("ANY", vec![name.as_str()]),
        };
        ToolConfigOut { function_calling_config: FunctionCallingConfig { mode, allowed_function_names: allowed } }
    });
    let (response_mime_type, response_json_schema) = match &req.response_format {
        None | Some(ResponseFormat::Text) => (None, None),
        Some(ResponseFormat::JsonObject) => (Some("application/json"), None),
        Some(ResponseFormat::JsonSchema { schema, .. }) => (Some("application/json"), Some(schema)),
    };
    Ok(RequestWire {
        contents,
        system_instruction: req.system_text().map(|text| SystemOut { parts: vec![TextOut { text }] }),
        tools,
        tool_config,
        generation_config: GenerationConfig {
            max_output_tokens: req.max_tokens,
            temperature: req.temperature,
            stop_sequences: &req.stop,
            response_mime_type,
            response_json_schema,
            thinking_config: req
                .reasoning
                .map(|r| ThinkingConfig { thinking_budget: r.budget(), include_thoughts: true }),
        },
    })
}

/// The parts of a user or assistant message; thinking signatures move onto the next part.
fn message_parts(m: &Message) -> Result<Vec<PartOut<'_>>, ProviderError> {
    let mut out = Vec::new();
    let mut signature: Option<&str> = None;
    for p in &m.content {
        let data = match p {
            Part::Thinking { signature: Some(s), .. } => {
                if let Some(earlier) = signature.replace(s) {
                    // Two signatures in a row: the earlier one keeps its own (empty) part.
                    out.push(PartOut { data: PartData::Text(""), thought_signature: Some(earlier) });
                }
                continue;
            }
            Part::Thinking { signature: None, .. } => continue,
            Part::Text { text } => PartData::Text(text),
            Part::Image(img) => match &img.source {
                ImageSource::Base64 { data, media_type } => {
                    PartData::InlineData(InlineData { mime_type: media_type, data })
                }
                ImageSource::Url(url) => PartData::FileData(FileData { mime_type: image_type_of(url), file_uri: url }),
            },
            Part::Document { data, media_type, .. } => PartData::InlineData(InlineData { mime_type: media_type, data }),
            Part::ToolCall { name, arguments, .. } => PartData::FunctionCall(FunctionCallOut {
                name,
                args: super::arguments_object(name, arguments, "which Gemini's functionCall.args must be")?,
            }),
            // `validate` keeps tool results in tool messages.
            Part::ToolResult { .. } => {
                return Err(ProviderError::Request("a tool result outside a tool message".into()));
            }
        };
        out.push(PartOut { data, thought_signature: signature.take() });
    }
    if let Some(s) = signature {
        out.push(PartOut { data: PartData::Text(""), thought_signature: Some(s) });
    }
    Ok(out)
}

/// A tool message's results as `functionResponse` parts; `earlier` are the messages before it.
fn tool_results<'a>(earlier: &'a [Message], m: &'a Message) -> Result<Vec<PartOut<'a>>, ProviderError> {
    let mut out = Vec::new();
    for p in &m.content {
        let Part::ToolResult { tool_call_id, content, is_error } = p else {
            return Err(ProviderError::Request("a tool message holds tool results only".into()));
        };
        if content.iter().any(|p| matches!(p, Part::Image(_))) {
            return Err(ProviderError::Unsupported { feature: "images in tool results" });
        }
        let name = crate::chat::tool_call_name(earlier, tool_call_id).ok_or_else(|| {
            ProviderError::Request(format!(
                "tool result `{tool_call_id}` answers no tool call of an earlier assistant message (Gemini needs the function name)"
            ))
        })?;
        let text = joined_text(content);
        let response = if *is_error { FunctionResult::Error(text) } else { FunctionResult::Result(text) };
        out.push(PartOut {
            data: PartData::FunctionResponse(FunctionResponseOut { name, response }),
            thought_signature: None,
        });
    }
    Ok(out)
}

/// The image media type a URL's extension names, if it names one Gemini reads.
fn image_type_of(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase())?;
    match ext.as_str() {
        "png" => Some("image/png"),
        "jpg" | "jpeg" => Some("image/jpeg"),
        "gif" => Some("image/gif"),
        "webp" => Some("image/webp"),
        _ => None,
    }
}

// ---- response wire ----

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ChunkWire {
    candidates: Vec<CandidateWire>,
    model_version: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct CandidateWire {
    content: Option<ContentWire>,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ContentWire {
    parts: Vec<PartWire>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct PartWire {
    text: Option<String>,
    thought: bool,
    thought_signature: Option<String>,
    function_call: Option<FunctionCallWire>,
}

#[derive(Deserialize)]
struct FunctionCallWire {
    name: String,
    #[serde(default)]
    args: Option<Value>,
    #[serde(default)]
    id: Option<String>,
}

/// One response body or stream chunk: its first candidate's parts and finish reason.
struct Chunk {
    parts: Vec<PartWire>,
    finish_reason: Option<FinishReason>,
    model_version: Option<String>,
}

fn read_chunk(v: &Value) -> Result<Chunk, ProviderError> {
    let wire = ChunkWire::deserialize(v)
        .map_err(|e| ProviderError::Malformed(format!("unexpected Gemini response shape: {e}")))?;
    let candidate = wire.candidates.into_iter().next().unwrap_or_default();
    Ok(Chunk {
        parts: candidate.content.map(|c| c.parts).unwrap_or_default(),
        finish_reason: candidate.finish_reason.as_deref().map(finish_reason),
        model_version: wire.model_version,
    })
}

impl Chunk {
    /// The deltas of this chunk's parts; `calls` counts the answer's tool calls so far.
    fn deltas(&self, calls: &mut usize, out: &mut Vec<Delta>) {
        for p in &self.parts {
            if let Some(fc) = &p.function_call {
                if let Some(s) = &p.thought_signature {
                    out.push(Delta::Signature(s.clone()));
                }
                let arguments = match &fc.args {
                    Some(a @ Value::Object(_)) => a.to_string(),
                    _ => "{}".to_string(),
                };
                out.push(Delta::ToolCall {
                    index: *calls,
                    id: Some(fc.id.clone().filter(|id| !id.is_empty()).unwrap_or_else(|| format!("call_{calls}"))),
                    name: Some(fc.name.clone()),
                    arguments,
                });
                *calls += 1;
            } else if p.thought {
                if let Some(t) = p.text.as_ref().filter(|t| !t.is_empty()) {
                    out.push(Delta::Reasoning(t.clone()));
                }
                if let Some(s) = &p.thought_signature {
                    out.push(Delta::Signature(s.clone()));
                }
            } else {
                if let Some(s) = &p.thought_signature {
                    out.push(Delta::Signature(s.clone()));
                }
                if let Some(t) = p.text.as_ref().filter(|t| !t.is_empty()) {
                    out.push(Delta::Text(t.clone()));
                }
            }
        }
    }
}

fn usage_of(v: &Value) -> Option<TokenUsage> {
    v.get("usageMetadata").filter(|u| u.is_object()).map(|u| {
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
    })
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

/// Gemini says `STOP` after function calls: an answer with tool calls stopped for them.
fn normalise(f: FinishReason, has_calls: bool) -> FinishReason {
    match f {
        FinishReason::Stop if has_calls => FinishReason::ToolCalls,
        other => other,
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
    /// Tool calls seen so far (the next one's index).
    calls: usize,
}

impl StreamDecoder for Decoder {
    fn on_frame(&mut self, frame: &Frame, out: &mut Vec<Delta>) -> Result<(), ProviderError> {
        let v = parse_json(frame.data.as_bytes())?;
        if let Some(err) = v.get("error") {
            return Err(error_object(err));
        }
        if let Some(u) = usage_of(&v) {
            self.summary.usage = Some(u); // cumulative: the latest replaces the earlier
        }
        let chunk = read_chunk(&v)?;
        if chunk.finish_reason.is_some() {
            self.summary.finish_reason = chunk.finish_reason.clone();
        }
        if self.summary.model.is_none() {
            self.summary.model.clone_from(&chunk.model_version);
        }
        chunk.deltas(&mut self.calls, out);
        Ok(())
    }

    fn finished(&self) -> bool {
        self.summary.finish_reason.is_some()
    }

    fn summary(&self) -> StreamSummary {
        let mut s = self.summary.clone();
        s.finish_reason = s.finish_reason.map(|f| normalise(f, self.calls > 0));
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

    const SIG: &str = "CikB0e2Kbw5tJ9dwYB9m1I9W28H1Pvbhg7iFnlQJMZT9ndxhy/OJBT3V9QptAdHtim+b6IrcZhtF6O6xQkkPMDhjrvwL3icXkpwLLWkm7JJ3R234Bd2U3pZ5l5u4roaEWO893S7XXaCgzKHLjxhFjN2sHgLLE/Hsi8UryVlawsmJhHEry727TP6p3fXGfoHF4P3+NwX0aRVDaQrOAQHR7YpvcZTnUyY/7cZcudNT4WukK1q1cnMx8pjpKbBWrByVhsOkQ9acocfYVirn1/iCK2QINNmt6lwFfDqQOr4KVY1cj1YwDRUeRN6QawgKKk0+IfpgCintbyvglLQVvA0K+FrW8l7OEqDU/ROKkwMm4g4uEHsoA2BgR0CAHd9Tnx1SsmdXOdPvXOM1FdrZGq1JQpE8r7fSBCEbhN2wHHHjAHR11O2iex12if4qjFmaxk0WD6e32VVE/ocsvy+BTeSxsfFo6v4VRanbbnKg";

    fn spec() -> ProviderSpec {
        super::super::presets::resolve(&Default::default()).unwrap()["gemini"].clone()
    }

    fn body_of(req: &ChatRequest, stream: bool) -> (String, Value) {
        let r = Gemini.build(&spec(), "gemini-2.5-flash", req, stream, None).unwrap();
        let body = serde_json::from_slice(r.body().unwrap().as_bytes().unwrap()).unwrap();
        (r.url().to_string(), body)
    }

    fn message(v: Value) -> Message {
        serde_json::from_value(v).unwrap()
    }

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
        assert_eq!(
            c.parts,
            vec![Part::Thinking { text: "thinking...".into(), signature: None }, Part::Text { text: "Answer".into() }]
        );
        assert_eq!(c.finish_reason, Some(FinishReason::Stop));
        let u = c.usage.unwrap();
        assert_eq!((u.input, u.cached, u.output, u.reasoning), (100, 60, 12, 7));
    }

    #[test]
    fn stream_of_parallel_function_calls_keeps_the_signature_before_its_call() {
        for chunk in [1, 7, 64, 333, 100_000] {
            let d = decode_parts(&Gemini, &fixture("gemini_stream_function_calls.sse"), chunk);
            assert!(d.err.is_none() && d.done, "chunk {chunk}");
            assert_eq!(
                d.parts,
                vec![
                    Part::Thinking { text: String::new(), signature: Some(SIG.into()) },
                    Part::ToolCall {
                        id: "call_0".into(),
                        name: "secret_retrieval_tool".into(),
                        arguments: r#"{"password":"mellon"}"#.into()
                    },
                    Part::ToolCall {
                        id: "call_1".into(),
                        name: "secret_retrieval_tool".into(),
                        arguments: r#"{"password":"radiance"}"#.into()
                    },
                ],
                "chunk {chunk}"
            );
            // Each call arrives whole: one delta per call.
            assert_eq!(d.deltas.iter().filter(|x| matches!(x, Delta::ToolCall { .. })).count(), 2);
            assert_eq!(d.text, "");
            let u = d.summary.usage.unwrap();
            assert_eq!((u.input, u.output, u.reasoning, u.cached), (70, 101, 61, 0));
            assert_eq!(d.summary.finish_reason, Some(FinishReason::ToolCalls));
            assert_eq!(d.summary.model.as_deref(), Some("gemini-2.5-flash"));
        }
    }

    #[test]
    fn whole_body_function_calls_with_ids_and_signatures() {
        let body = json!({"candidates":[{"content":{"role":"model","parts":[
            {"text":"Let me look.","thought":true},
            {"text":"Checking both."},
            {"functionCall":{"id":"fc-a","name":"get_weather","args":{"city":"Paris","days":2}},"thoughtSignature":"s1"},
            {"functionCall":{"name":"get_time","args":{}}},
            {"text":"","thoughtSignature":"s2"}]},"finishReason":"STOP"}],
            "usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":4}});
        let c = Gemini.parse_body(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            c.parts,
            vec![
                Part::Thinking { text: "Let me look.".into(), signature: None },
                Part::Text { text: "Checking both.".into() },
                Part::Thinking { text: String::new(), signature: Some("s1".into()) },
                Part::ToolCall {
                    id: "fc-a".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Paris","days":2}"#.into()
                },
                Part::ToolCall { id: "call_1".into(), name: "get_time".into(), arguments: "{}".into() },
                Part::Thinking { text: String::new(), signature: Some("s2".into()) },
            ]
        );
        assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
        // MAX_TOKENS stays length even with calls; no calls keeps STOP.
        let body = br#"{"candidates":[{"content":{"parts":[{"text":"hi"}]},"finishReason":"MAX_TOKENS"}]}"#;
        assert_eq!(Gemini.parse_body(body).unwrap().finish_reason, Some(FinishReason::Length));
    }

    /// Lower-cases every `type` value (the recorded request used the OpenAPI `parameters`
    /// spelling, `STRING`/`OBJECT`; we send JSON Schema in `parametersJsonSchema`).
    fn json_schema_types(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| match (k.as_str(), v) {
                        ("type", Value::String(s)) => (k.clone(), json!(s.to_ascii_lowercase())),
                        _ => (k.clone(), json_schema_types(v)),
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn fixture_request() -> ChatRequest {
        ChatRequest {
            system: Some("Use parallel tool calling.".into()),
            messages: vec![Message::text(
                Role::User,
                "Please retrieve the secrets associated with each of these passwords: mellon,radiance",
            )],
            tools: vec![Tool {
                name: "secret_retrieval_tool".into(),
                description: Some("A tool that requires a password to retrieve a secret.".into()),
                parameters: json!({"properties":{"password":{"title":"Password","type":"string"}},"required":["password"],"type":"object"}),
            }],
            ..ChatRequest::default()
        }
    }

    #[test]
    fn request_matches_the_recorded_function_call_request() {
        let recorded: Value = serde_json::from_slice(&fixture("gemini_stream_function_calls.request.json")).unwrap();
        let req = fixture_request();
        req.validate().unwrap();
        let (url, body) = body_of(&req, true);
        assert!(url.ends_with("/models/gemini-2.5-flash:streamGenerateContent?alt=sse"), "{url}");
        assert_eq!(body["contents"], recorded["contents"]);
        assert_eq!(body["systemInstruction"]["parts"], recorded["systemInstruction"]["parts"]);
        let (ours, theirs) =
            (&body["tools"][0]["functionDeclarations"][0], &recorded["tools"][0]["functionDeclarations"][0]);
        assert_eq!(ours["name"], theirs["name"]);
        assert_eq!(ours["description"], theirs["description"]);
        assert_eq!(ours["parametersJsonSchema"], json_schema_types(&theirs["parameters"]));
        assert!(body.get("toolConfig").is_none() && body.get("generationConfig").is_none(), "{body}");
    }

    #[test]
    fn second_turn_hands_the_signature_back_on_its_function_call() {
        // Turn 1's answer as the app gets it, appended with the two tool results.
        let answer = decode_parts(&Gemini, &fixture("gemini_stream_function_calls.sse"), 100).parts;
        let mut req = fixture_request();
        req.messages.push(Message { role: Role::Assistant, content: answer });
        req.messages.push(message(json!({"role":"tool","tool_call_id":"call_0","content":"Welcome to Zion!"})));
        req.messages.push(message(json!({"role":"tool","tool_call_id":"call_1","content":"nope","is_error":true})));
        req.validate().unwrap();
        let (_, body) = body_of(&req, false);
        let contents = body["contents"].as_array().unwrap();
        assert_eq!(contents.len(), 3, "{body}");
        assert_eq!(
            contents[1],
            json!({"role":"model","parts":[
                {"functionCall":{"name":"secret_retrieval_tool","args":{"password":"mellon"}},"thoughtSignature":SIG},
                {"functionCall":{"name":"secret_retrieval_tool","args":{"password":"radiance"}}}]})
        );
        assert_eq!(
            contents[2],
            json!({"role":"user","parts":[
                {"functionResponse":{"name":"secret_retrieval_tool","response":{"result":"Welcome to Zion!"}}},
                {"functionResponse":{"name":"secret_retrieval_tool","response":{"error":"nope"}}}]})
        );
    }

    #[test]
    fn request_media_options_and_errors() {
        let mut req = ChatRequest {
            messages: vec![
                message(json!({"role":"system","content":"be brief"})),
                message(json!({"role":"user","content":[
                    {"type":"text","text":"what are these?"},
                    {"type":"image","data":"iVBORw0KGgo=","media_type":"image/png"},
                    {"type":"image","url":"https://example.com/a.JPG?x=1"},
                    {"type":"image","url":"https://example.com/picture"},
                    {"type":"document","data":"JVBERi0=","media_type":"application/pdf","name":"a.pdf"}]})),
                message(json!({"role":"assistant","content":[
                    {"type":"thinking","text":"hidden thoughts","signature":"sigA"},
                    {"type":"text","text":"Two images."},
                    {"type":"thinking","text":"","signature":"sigB"}]})),
            ],
            max_tokens: Some(100),
            temperature: Some(0.5),
            stop: vec!["END".into()],
            tools: vec![Tool { name: "f".into(), description: None, parameters: json!({"type":"object"}) }],
            tool_choice: Some(ToolChoice::Tool("f".into())),
            response_format: Some(ResponseFormat::JsonSchema {
                name: "out".into(),
                schema: json!({"type":"object","additionalProperties":false}),
                strict: Some(true),
            }),
            reasoning: Some(Reasoning::Budget { budget_tokens: 2048 }),
            ..ChatRequest::default()
        };
        req.validate().unwrap();
        let (url, body) = body_of(&req, false);
        assert!(url.ends_with("/models/gemini-2.5-flash:generateContent"), "{url}");
        assert_eq!(body["systemInstruction"], json!({"parts":[{"text":"be brief"}]}));
        assert_eq!(
            body["contents"],
            json!([
                {"role":"user","parts":[
                    {"text":"what are these?"},
                    {"inlineData":{"mimeType":"image/png","data":"iVBORw0KGgo="}},
                    {"fileData":{"mimeType":"image/jpeg","fileUri":"https://example.com/a.JPG?x=1"}},
                    {"fileData":{"fileUri":"https://example.com/picture"}},
                    {"inlineData":{"mimeType":"application/pdf","data":"JVBERi0="}}]},
                {"role":"model","parts":[
                    {"text":"Two images.","thoughtSignature":"sigA"},
                    {"text":"","thoughtSignature":"sigB"}]}
            ])
        );
        assert_eq!(
            body["tools"],
            json!([{"functionDeclarations":[{"name":"f","parametersJsonSchema":{"type":"object"}}]}])
        );
        assert_eq!(body["toolConfig"], json!({"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["f"]}}));
        assert_eq!(
            body["generationConfig"],
            json!({"maxOutputTokens":100,"temperature":0.5,"stopSequences":["END"],
                   "responseMimeType":"application/json",
                   "responseJsonSchema":{"type":"object","additionalProperties":false},
                   "thinkingConfig":{"thinkingBudget":2048,"includeThoughts":true}})
        );
        for (choice, mode) in [(ToolChoice::Auto, "AUTO"), (ToolChoice::None, "NONE"), (ToolChoice::Required, "ANY")] {
            req.tool_choice = Some(choice);
            let (_, body) = body_of(&req, false);
            assert_eq!(body["toolConfig"], json!({"functionCallingConfig":{"mode":mode}}));
        }
        req.response_format = Some(ResponseFormat::JsonObject);
        let (_, body) = body_of(&req, false);
        assert_eq!(body["generationConfig"]["responseMimeType"], "application/json");
        assert!(body["generationConfig"].get("responseJsonSchema").is_none());

        // A tool result whose call is unknown, and one with an image.
        let build = |messages: Vec<Value>| {
            let req = ChatRequest { messages: messages.into_iter().map(message).collect(), ..ChatRequest::default() };
            req.validate().unwrap();
            Gemini.build(&spec(), "gemini-2.5-flash", &req, false, None)
        };
        let e = build(vec![
            json!({"role":"user","content":"hi"}),
            json!({"role":"tool","tool_call_id":"nope","content":"x"}),
        ])
        .unwrap_err();
        assert!(matches!(&e, ProviderError::Request(m) if m.contains("nope")), "{e:?}");
        let call = json!({"role":"assistant","content":[{"type":"tool_call","id":"c1","name":"f","arguments":{}}]});
        let e = build(vec![
            json!({"role":"user","content":"hi"}),
            call.clone(),
            json!({"role":"tool","content":[{"type":"tool_result","tool_call_id":"c1","content":[
                {"type":"image","url":"https://x/a.png"}]}]}),
        ])
        .unwrap_err();
        assert!(matches!(e, ProviderError::Unsupported { feature: "images in tool results" }), "{e:?}");
        let e = build(vec![
            json!({"role":"user","content":"hi"}),
            json!({"role":"assistant","content":[{"type":"tool_call","id":"c1","name":"f","arguments":"{\"a\":"}]}),
        ])
        .unwrap_err();
        assert!(matches!(&e, ProviderError::Request(m) if m.contains("JSON object")), "{e:?}");
        // The nearest assistant message names the call when ids repeat across turns.
        let req = ChatRequest {
            messages: vec![
                message(json!({"role":"user","content":"hi"})),
                message(call),
                message(json!({"role":"tool","tool_call_id":"c1","content":"1"})),
                message(
                    json!({"role":"assistant","content":[{"type":"tool_call","id":"c1","name":"g","arguments":{}}]}),
                ),
                message(json!({"role":"tool","tool_call_id":"c1","content":"2"})),
            ],
            ..ChatRequest::default()
        };
        let (_, body) = body_of(&req, false);
        assert_eq!(body["contents"][2]["parts"][0]["functionResponse"]["name"], "f");
        assert_eq!(body["contents"][4]["parts"][0]["functionResponse"]["name"], "g");
    }

    #[test]
    fn media_bound_is_the_tiled_maximum() {
        assert_eq!(Gemini.media_bound("gemini-2.5-flash"), MediaBound { image: 4128, pdf_page: 1000 });
    }
}
