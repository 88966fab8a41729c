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
pub mod sse;
pub mod transport;

pub use error::ProviderError;
pub use presets::{AdapterKind, ProviderConfig, ProviderSpec, ProvidersConfig};
pub use sse::{Frame, Framer};

use crate::usage_record::TokenUsage;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

/// The unified chat request, independent of any wire format.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub system: Option<String>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub stop: Vec<String>,
}

impl ChatRequest {
    /// The system prompt: the `system` field followed by any `system` role messages.
    pub fn system_text(&self) -> Option<String> {
        let parts: Vec<&str> = self
            .system
            .iter()
            .map(String::as_str)
            .chain(self.messages.iter().filter(|m| m.role == "system").map(|m| m.content.as_str()))
            .collect();
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }

    /// Characters of all prompt text (system and messages), used by [`estimate_usage`].
    pub fn prompt_chars(&self) -> usize {
        self.system.as_deref().map_or(0, |s| s.chars().count())
            + self.messages.iter().map(|m| m.content.chars().count()).sum::<usize>()
    }

    /// An upper bound of the prompt tokens any provider can bill for this request (the quota
    /// reserves it): the UTF-8 bytes of the system prompt and every message (a byte-level BPE
    /// never makes more tokens than bytes), plus [`MESSAGE_OVERHEAD_TOKENS`] per message (role
    /// and framing; OpenAI documents 3 to 4) and [`REQUEST_OVERHEAD_TOKENS`] per request (reply
    /// priming).
    pub fn prompt_token_bound(&self) -> u64 {
        let bytes =
            self.system.as_deref().map_or(0, str::len) + self.messages.iter().map(|m| m.content.len()).sum::<usize>();
        let messages = self.messages.len() + usize::from(self.system.is_some());
        u64::try_from(bytes)
            .unwrap_or(u64::MAX)
            .saturating_add(MESSAGE_OVERHEAD_TOKENS.saturating_mul(messages as u64))
            .saturating_add(REQUEST_OVERHEAD_TOKENS)
    }
}

/// Tokens a provider may add per message around its content (see
/// [`ChatRequest::prompt_token_bound`]).
pub const MESSAGE_OVERHEAD_TOKENS: u64 = 8;
/// Tokens a provider may add per request (see [`ChatRequest::prompt_token_bound`]).
pub const REQUEST_OVERHEAD_TOKENS: u64 = 8;

/// A finished (non-streaming) answer, or the summary of a finished stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    pub content: String,
    pub finish_reason: Option<String>,
    /// The model the provider says answered, when it says.
    pub model: Option<String>,
    /// `None` when the provider reported no usage.
    pub usage: Option<TokenUsage>,
}

/// What a stream decoder knows so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamSummary {
    pub finish_reason: Option<String>,
    pub model: Option<String>,
    pub usage: Option<TokenUsage>,
}

/// Decodes one provider's streaming body, frame by frame.
pub trait StreamDecoder: Send {
    /// Handles one frame; returns the text delta it carries, if any. An error event inside the
    /// stream is returned as [`ProviderError::Stream`] (after recording any usage it carried).
    fn on_frame(&mut self, frame: &Frame) -> Result<Option<String>, ProviderError>;
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
    /// Turns a non-2xx response into an error (status, provider's message, retry hints).
    fn classify(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        error::classify_http(status, headers, body)
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
/// text (system + message contents) for input and of the text received so far for output.
pub fn estimate_usage(req: &ChatRequest, output_text: &str) -> TokenUsage {
    TokenUsage {
        input: estimate_tokens(req.prompt_chars()),
        output: estimate_tokens(output_text.chars().count()),
        estimated: true,
        ..TokenUsage::default()
    }
}

/// Starts a JSON POST request to `url` with the spec's extra headers.
pub(crate) fn json_post(
    spec: &ProviderSpec,
    url: &str,
    body: &serde_json::Value,
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

/// `[{role, content}]` with the `system` field first as a `system` message (OpenAI, Ollama).
pub(crate) fn role_content_messages(req: &ChatRequest) -> Vec<serde_json::Value> {
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    if let Some(system) = &req.system {
        messages.push(serde_json::json!({"role": "system", "content": system}));
    }
    messages.extend(req.messages.iter().map(|m| serde_json::json!({"role": m.role, "content": m.content})));
    messages
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
        assert_eq!([0, 1, 4, 5, 8, 9].map(estimate_tokens), [0, 1, 1, 2, 2, 3]);
        // The bound counts bytes, not characters: "héllo" is 6 bytes.
        let req = ChatRequest {
            system: Some("be brief".into()),
            messages: vec![ChatMessage { role: "user".into(), content: "héllo".into() }],
            ..ChatRequest::default()
        };
        assert_eq!(req.prompt_token_bound(), 8 + 6 + 2 * MESSAGE_OVERHEAD_TOKENS + REQUEST_OVERHEAD_TOKENS);
        assert!(req.prompt_token_bound() >= estimate_tokens(req.prompt_chars()));
        let req = ChatRequest {
            system: Some("abcd".into()),
            messages: vec![ChatMessage { role: "user".into(), content: "héllo".into() }],
            ..ChatRequest::default()
        };
        // 4 + 5 characters (not bytes) of prompt, 3 of output.
        let u = estimate_usage(&req, "abc");
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

    /// Feeds `bytes` in chunks of `chunk` bytes through the adapter's framing and decoder.
    /// Returns the concatenated text, the summary and the first stream error.
    pub fn decode(
        provider: &dyn Provider,
        bytes: &[u8],
        chunk: usize,
    ) -> (String, StreamSummary, Option<ProviderError>, bool) {
        let mut framer = Framer::new(provider.framing());
        let mut decoder = provider.decoder();
        let mut text = String::new();
        let mut frames = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            framer.feed(piece, &mut frames).unwrap();
        }
        framer.finish(&mut frames).unwrap();
        let mut err = None;
        for f in &frames {
            match decoder.on_frame(f) {
                Ok(Some(d)) => text.push_str(&d),
                Ok(None) => {}
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        (text, decoder.summary(), err, decoder.finished())
    }
}
