//! The upper bound of prompt tokens a request can be billed for; a quota reserves it (plus the
//! output limit) before the call, so concurrent calls never together pass a token limit.
//!
//! The bound, per target (documented in `docs/chat.md`):
//! - every UTF-8 byte of text the request carries (system, message text, tool-call names and
//!   arguments, tool results, thinking text and signatures, tool schemas, the response schema):
//!   a byte-level BPE never makes more tokens than bytes;
//! - [`MESSAGE_OVERHEAD_TOKENS`] per message and per part after its first, [`REQUEST_OVERHEAD_TOKENS`] per request,
//!   [`TOOL_OVERHEAD_TOKENS`] per tool and [`TOOLS_PREAMBLE_TOKENS`] once when tools are declared
//!   (Anthropic's tool-use system prompt is 346 tokens);
//! - each image at its provider's published maximum ([`MediaBound::image`]), each PDF page at
//!   [`MediaBound::pdf_page`] (pages counted in the file; at least one).
//!
//! If a provider ever reports more than this, the call records it and emits `usage.overshoot`.

use super::types::{ChatRequest, ImageSource, Part, ResponseFormat};
use base64::Engine as _;

/// Tokens a provider may add per message or part around its content.
pub const MESSAGE_OVERHEAD_TOKENS: u64 = 8;
/// Tokens a provider may add per request (reply priming).
pub const REQUEST_OVERHEAD_TOKENS: u64 = 8;
/// Tokens per declared tool around its schema.
pub const TOOL_OVERHEAD_TOKENS: u64 = 16;
/// Tokens a provider adds once when tools are declared.
pub const TOOLS_PREAMBLE_TOKENS: u64 = 600;

/// The most tokens one image or one PDF page can cost at a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaBound {
    pub image: u64,
    pub pdf_page: u64,
}

impl Default for MediaBound {
    /// For providers without a published formula: generous, and overshoots are reported.
    fn default() -> Self {
        MediaBound { image: 6_400, pdf_page: 8_000 }
    }
}

fn bytes(s: &str) -> u64 {
    u64::try_from(s.len()).unwrap_or(u64::MAX)
}

/// Pages of a base64 PDF: its `/Type /Page` objects (not `/Pages`); at least 1.
pub fn pdf_pages(data: &str) -> u64 {
    let Ok(pdf) = base64::engine::general_purpose::STANDARD.decode(data.trim()) else { return 1 };
    let mut pages = 0u64;
    for needle in [&b"/Type/Page"[..], &b"/Type /Page"[..]] {
        let mut i = 0;
        while let Some(at) = pdf[i..].windows(needle.len()).position(|w| w == needle) {
            let end = i + at + needle.len();
            if pdf.get(end) != Some(&b's') {
                pages += 1;
            }
            i = end;
        }
    }
    pages.max(1)
}

fn parts_bound(parts: &[Part], media: MediaBound) -> u64 {
    parts
        .iter()
        .fold(0u64, |acc, p| {
            let cost = match p {
                Part::Text { text } => bytes(text),
                Part::Image(img) => media.image.saturating_add(match &img.source {
                    ImageSource::Url(u) => bytes(u),
                    ImageSource::Base64 { .. } => 0,
                }),
                Part::Document { data, name, .. } => {
                    pdf_pages(data).saturating_mul(media.pdf_page).saturating_add(name.as_deref().map_or(0, bytes))
                }
                Part::ToolCall { id, name, arguments } => bytes(id) + bytes(name) + bytes(arguments),
                Part::ToolResult { tool_call_id, content, .. } => {
                    bytes(tool_call_id).saturating_add(parts_bound(content, media))
                }
                Part::Thinking { text, signature } => bytes(text).saturating_add(signature.as_deref().map_or(0, bytes)),
            };
            acc.saturating_add(cost)
        })
        // Framing between parts (the first part's is the message's own overhead).
        .saturating_add(MESSAGE_OVERHEAD_TOKENS.saturating_mul(parts.len().saturating_sub(1) as u64))
}

impl ChatRequest {
    /// The most prompt tokens a provider with these media costs can bill for this request (see
    /// the module docs).
    pub fn prompt_token_bound(&self, media: MediaBound) -> u64 {
        let mut total = REQUEST_OVERHEAD_TOKENS;
        if let Some(s) = &self.system {
            total = total.saturating_add(bytes(s)).saturating_add(MESSAGE_OVERHEAD_TOKENS);
        }
        for m in &self.messages {
            total = total.saturating_add(MESSAGE_OVERHEAD_TOKENS).saturating_add(parts_bound(&m.content, media));
        }
        if !self.tools.is_empty() {
            total = total.saturating_add(TOOLS_PREAMBLE_TOKENS);
        }
        for t in &self.tools {
            let schema = t.parameters.to_string();
            total = total
                .saturating_add(TOOL_OVERHEAD_TOKENS)
                .saturating_add(bytes(&t.name))
                .saturating_add(t.description.as_deref().map_or(0, bytes))
                .saturating_add(bytes(&schema));
        }
        if let Some(ResponseFormat::JsonSchema { name, schema, .. }) = &self.response_format {
            total = total
                .saturating_add(TOOL_OVERHEAD_TOKENS)
                .saturating_add(bytes(name))
                .saturating_add(bytes(&schema.to_string()));
        }
        for s in &self.stop {
            total = total.saturating_add(bytes(s));
        }
        total
    }

    /// Characters of all prompt text (system, message text, tool calls and results), used for
    /// the usage estimate when a provider reports none.
    pub fn prompt_chars(&self) -> usize {
        fn chars(parts: &[Part]) -> usize {
            parts
                .iter()
                .map(|p| match p {
                    Part::Text { text } | Part::Thinking { text, .. } => text.chars().count(),
                    Part::ToolCall { name, arguments, .. } => name.len() + arguments.chars().count(),
                    Part::ToolResult { content, .. } => chars(content),
                    Part::Image(_) | Part::Document { .. } => 0,
                })
                .sum()
        }
        self.system.as_deref().map_or(0, |s| s.chars().count())
            + self.messages.iter().map(|m| chars(&m.content)).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::chat::types::{Image, Message, Role, Tool};
    use serde_json::json;

    #[test]
    fn bound_counts_bytes_parts_tools_and_media() {
        let media = MediaBound { image: 1000, pdf_page: 100 };
        // "héllo" is 6 bytes.
        let mut req = ChatRequest {
            system: Some("be brief".into()),
            messages: vec![Message::text(Role::User, "héllo")],
            ..ChatRequest::default()
        };
        let text_only = 8 + 6 + 8 + 8 + REQUEST_OVERHEAD_TOKENS;
        assert_eq!(req.prompt_token_bound(media), text_only);
        assert!(req.prompt_token_bound(media) >= crate::providers::estimate_tokens(req.prompt_chars()));
        req.messages[0].content.push(Part::Image(Image {
            source: ImageSource::Base64 { data: "AAAA".repeat(10_000), media_type: "image/png".into() },
            detail: None,
        }));
        assert_eq!(req.prompt_token_bound(media), text_only + 1000 + MESSAGE_OVERHEAD_TOKENS);
        req.tools.push(Tool { name: "f".into(), description: None, parameters: json!({"type":"object"}) });
        let schema = json!({"type":"object"}).to_string().len() as u64;
        assert_eq!(
            req.prompt_token_bound(media),
            text_only + 1000 + MESSAGE_OVERHEAD_TOKENS + TOOLS_PREAMBLE_TOKENS + TOOL_OVERHEAD_TOKENS + 1 + schema
        );
    }

    #[test]
    fn counts_pdf_pages() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let two =
            "%PDF-1.4 1 0 obj <</Type /Pages /Kids [2 0 R 3 0 R]>> 2 0 obj <</Type /Page>> 3 0 obj <</Type/Page>>";
        assert_eq!(pdf_pages(&b64(two)), 2);
        assert_eq!(pdf_pages(&b64("%PDF no pages")), 1);
        assert_eq!(pdf_pages("not base64!"), 1);
    }
}
