//! Provider adapters: the only code that builds provider HTTP bodies and reads provider responses.
//!
//! A [`Provider`] turns the unified [`ChatRequest`] into one HTTP request for its wire format,
//! reads a complete (non-streaming) response body into a [`Completion`], and decodes a streaming
//! body frame by frame with a [`StreamDecoder`]. Adapters:
//! - [`openai`]: Chat Completions, used by OpenAI and every OpenAI-compatible service;
//! - [`anthropic`]: the Messages API;
//! - [`gemini`]: `generateContent` / `streamGenerateContent?alt=sse`;
//! - [`ollama`]: Ollama's native `/api/chat` NDJSON (the `ollama` preset uses its `/v1` OpenAI path).
//!
//! Invariants:
//! - usage is taken exactly as the provider reports it (see each adapter for its traps); a
//!   [`TokenUsage`] has `input` = every prompt token billed (cached ones included), `cached` = the
//!   part read from cache, `output` = every generated token (reasoning included);
//! - when the provider reports nothing, [`estimate_usage`] gives a deterministic estimate
//!   ([`estimate_tokens`]: a token per four characters) and sets `estimated`;
//! - secrets only enter the request's headers (marked sensitive) and are never formatted into an
//!   error, a URL or a log line.

pub mod anthropic;
pub mod error;
pub mod gemini;
pub mod ollama;
pub mod openai;
pub mod presets;
pub mod responses;
pub mod sse;
pub mod transport;

pub use error::{FailureKind, ProviderError};
pub use presets::{AdapterKind, Api, ProviderConfig, ProviderSpec, ProvidersConfig};
pub use sse::{Frame, Framer};

pub use crate::chat::ChatRequest;
use crate::chat::{Delta, FinishReason, MediaBound, Part};
use crate::usage_record::TokenUsage;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

/// A finished (non-streaming) answer, or the summary of a finished stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    /// The assistant message: text, thinking and tool-call parts in the provider's order.
    pub parts: Vec<Part>,
    pub finish_reason: Option<FinishReason>,
    /// The model the provider says answered, when it says.
    pub model: Option<String>,
    /// `None` when the provider reported no usage.
    pub usage: Option<TokenUsage>,
    /// The cost the provider itself reported (OpenRouter's `usage.cost`), in micro-dollars.
    pub provider_cost_microusd: Option<i64>,
}

impl Completion {
    /// The answer's text parts, joined.
    pub fn text(&self) -> String {
        crate::chat::joined_text(&self.parts)
    }
}

/// What a stream decoder knows so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamSummary {
    pub finish_reason: Option<FinishReason>,
    pub model: Option<String>,
    pub usage: Option<TokenUsage>,
    pub provider_cost_microusd: Option<i64>,
}

/// Decodes one provider's streaming body, frame by frame.
pub trait StreamDecoder: Send {
    /// Handles one frame, pushing the deltas it carries to `out`. An error event inside the
    /// stream is returned as [`ProviderError::Stream`] (after recording any usage it carried).
    fn on_frame(&mut self, frame: &Frame, out: &mut Vec<Delta>) -> Result<(), ProviderError>;
    /// True once the stream's terminal marker (`[DONE]`, `message_stop`, a final chunk) was seen.
    fn finished(&self) -> bool;
    /// Usage, finish reason and model seen so far.
    fn summary(&self) -> StreamSummary;
}

/// How a streaming body is cut into frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Sse,
    Ndjson,
}

/// One wire format.
pub trait Provider: Send + Sync {
    /// Builds the HTTP request for `model` at `spec`. `key` is absent for keyless providers.
    fn build(
        &self,
        spec: &ProviderSpec,
        model: &str,
        req: &ChatRequest,
        stream: bool,
        key: Option<&SecretString>,
    ) -> Result<reqwest::Request, ProviderError>;
    /// Reads a complete 2xx response body.
    fn parse_body(&self, body: &[u8]) -> Result<Completion, ProviderError>;
    /// The usage a complete 2xx body reports, read on its own: a body that [`Provider::parse_body`]
    /// refuses (no content, say) may still say what the provider billed for it.
    fn body_usage(&self, body: &serde_json::Value) -> Option<TokenUsage>;
    /// A fresh decoder for one streaming response.
    fn decoder(&self) -> Box<dyn StreamDecoder>;
    fn framing(&self) -> Framing {
        Framing::Sse
    }
    /// The most tokens one image or PDF page can cost at `model` (for the quota's bound).
    fn media_bound(&self, _model: &str) -> MediaBound {
        MediaBound::default()
    }
    /// A request that counts the input tokens of `req` at `model` without running it, for wire
    /// formats that have one (Anthropic's `messages/count_tokens`); `None` otherwise.
    fn count_request(
        &self,
        _spec: &ProviderSpec,
        _model: &str,
        _req: &ChatRequest,
        _key: Option<&SecretString>,
    ) -> Option<Result<reqwest::Request, ProviderError>> {
        None
    }
    /// The input-token count in a 2xx answer to [`Provider::count_request`].
    fn parse_count(&self, _body: &[u8]) -> Option<u64> {
        None
    }
    /// Turns a non-2xx response into an error (status, provider's message, retry hints).
    fn classify(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        error::classify_http(status, headers, body)
    }
}

/// The adapter a provider speaks (its `adapter`, and for OpenAI-compatible ones its `api`).
pub fn for_spec(spec: &ProviderSpec) -> &'static dyn Provider {
    match (spec.adapter, spec.api) {
        (AdapterKind::Openai, presets::Api::Responses) => &responses::Responses,
        (kind, _) => adapter(kind),
    }
}

/// The adapter for a wire format.
pub fn adapter(kind: AdapterKind) -> &'static dyn Provider {
    match kind {
        AdapterKind::Openai => &openai::OpenAi,
        AdapterKind::Anthropic => &anthropic::Anthropic,
        AdapterKind::Gemini => &gemini::Gemini,
        AdapterKind::Ollama => &ollama::Ollama,
    }
}

/// The daemon's token estimate for `chars` characters of text: `ceil(chars / 4)`, used for
/// billing when a provider reports nothing ([`estimate_usage`]). Admission does not use it: an
/// estimate is no bound (see [`ChatRequest::prompt_token_bound`]).
pub fn estimate_tokens(chars: usize) -> u64 {
    u64::try_from(chars.div_ceil(4)).unwrap_or(u64::MAX)
}

/// Deterministic usage estimate when a provider reports none: [`estimate_tokens`] of the prompt
/// text (see [`ChatRequest::prompt_chars`]) for input and of the `output_chars` characters
/// generated so far (text, reasoning, tool calls) for output.
pub fn estimate_usage(req: &ChatRequest, output_chars: usize) -> TokenUsage {
    TokenUsage {
        input: estimate_tokens(req.prompt_chars()),
        output: estimate_tokens(output_chars),
        estimated: true,
        ..TokenUsage::default()
    }
}

/// Starts a JSON POST request to `url` with the spec's extra headers.
pub(crate) fn json_post(
    spec: &ProviderSpec,
    url: &str,
    body: &(impl serde::Serialize + ?Sized),
) -> Result<reqwest::Request, ProviderError> {
    let url =
        reqwest::Url::parse(url).map_err(|e| ProviderError::Request(format!("bad URL for {}: {e}", spec.name)))?;
    let mut request = reqwest::Request::new(reqwest::Method::POST, url);
    let bytes = serde_json::to_vec(body).map_err(|e| ProviderError::Request(format!("cannot encode body: {e}")))?;
    *request.body_mut() = Some(bytes.into());
    let headers = request.headers_mut();
    headers.insert(reqwest::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in &spec.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            ProviderError::Request(format!("providers.{}.headers: bad header name `{name}`", spec.name))
        })?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| ProviderError::Request(format!("providers.{}.headers: bad value for `{name}`", spec.name)))?;
        headers.insert(name, value);
    }
    Ok(request)
}

/// Adds a secret header, marked sensitive so it is never printed.
pub(crate) fn set_secret_header(
    request: &mut reqwest::Request,
    name: &'static str,
    prefix: &str,
    key: &SecretString,
) -> Result<(), ProviderError> {
    let mut value = HeaderValue::from_str(&format!("{prefix}{}", key.expose_secret()))
        .map_err(|_| ProviderError::Request("the key contains characters not allowed in a header".into()))?;
    value.set_sensitive(true);
    request.headers_mut().insert(HeaderName::from_static(name), value);
    Ok(())
}

/// A tool call's arguments as the JSON object a wire format must carry (empty text = `{}`);
/// anything else is a request error saying `why` (e.g. "which Gemini's functionCall.args must be").
pub(crate) fn arguments_object(name: &str, arguments: &str, why: &str) -> Result<serde_json::Value, ProviderError> {
    if arguments.trim().is_empty() {
        return Ok(serde_json::Value::Object(serde_json::Map::new()));
    }
    match serde_json::from_str::<serde_json::Value>(arguments) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        _ => Err(ProviderError::Request(format!("the arguments of tool call `{name}` are not a JSON object, {why}"))),
    }
}

/// Reads an unsigned count at `path` inside a JSON value.
pub(crate) fn u64_at(v: &serde_json::Value, path: &[&str]) -> Option<u64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_u64().or_else(|| cur.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

/// Parses JSON text of one frame or body.
pub(crate) fn parse_json(text: &[u8]) -> Result<serde_json::Value, ProviderError> {
    serde_json::from_slice(text).map_err(|e| ProviderError::Malformed(format!("invalid JSON from provider: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_a_token_per_four_characters_rounded_up() {
        use crate::chat::{Message, Role};
        assert_eq!([0, 1, 4, 5, 8, 9].map(estimate_tokens), [0, 1, 1, 2, 2, 3]);
        let req = ChatRequest {
            system: Some("abcd".into()),
            messages: vec![Message::text(Role::User, "héllo")],
            ..ChatRequest::default()
        };
        // 4 + 5 characters (not bytes) of prompt, 3 of output.
        let u = estimate_usage(&req, 3);
        assert_eq!((u.input, u.output, u.estimated), (3, 1, true));
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Fixture loading shared by the adapters' unit tests.
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    pub fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/providers/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {path}: {e}"))
    }

    /// What [`decode_parts`] saw.
    pub struct Decoded {
        pub text: String,
        pub parts: Vec<crate::chat::Part>,
        pub deltas: Vec<Delta>,
        pub summary: StreamSummary,
        pub err: Option<ProviderError>,
        pub done: bool,
    }

    /// Feeds `bytes` in chunks of `chunk` bytes through the adapter's framing and decoder, and
    /// assembles the deltas.
    pub fn decode_parts(provider: &dyn Provider, bytes: &[u8], chunk: usize) -> Decoded {
        let mut framer = Framer::new(provider.framing());
        let mut decoder = provider.decoder();
        let mut frames = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            framer.feed(piece, &mut frames).unwrap();
        }
        framer.finish(&mut frames).unwrap();
        let mut err = None;
        let mut deltas = Vec::new();
        for f in &frames {
            if let Err(e) = decoder.on_frame(f, &mut deltas) {
                err = Some(e);
                break;
            }
        }
        let mut a = crate::chat::Assembler::default();
        for d in &deltas {
            a.push(d);
        }
        let parts = a.into_parts();
        Decoded {
            text: crate::chat::joined_text(&parts),
            parts,
            deltas,
            summary: decoder.summary(),
            err,
            done: decoder.finished(),
        }
    }

    /// Feeds `bytes` in chunks of `chunk` bytes through the adapter's framing and decoder.
    /// Returns the concatenated text, the summary and the first stream error.
    pub fn decode(
        provider: &dyn Provider,
        bytes: &[u8],
        chunk: usize,
    ) -> (String, StreamSummary, Option<ProviderError>, bool) {
        let d = decode_parts(provider, bytes, chunk);
        (d.text, d.summary, d.err, d.done)
    }
}
