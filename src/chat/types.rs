//! The conversation: messages made of parts, the request's tools and output options, and the
//! normalised finish reason. The RPC `chat` params deserialize straight into these types (they
//! are the daemon's own dialect); every adapter translates them to and from its wire format.
//!
//! Invariants (checked by [`ChatRequest::validate`], so adapters may rely on them):
//! - `system` messages hold text only; `tool_call` and `thinking` parts appear only in
//!   `assistant` messages; `tool_result` parts only in `tool` messages, which hold nothing else;
//!   images and documents only in `user` messages and inside tool results;
//! - a tool call's `arguments` is JSON text exactly as the model produced it (an app may send an
//!   object; it is kept as its compact JSON text);
//! - tool names are 1–64 characters of `[A-Za-z0-9_-]` and unique; a named `tool_choice` names one
//!   of `tools`.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// Where an image's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// An `https:` (or `data:`) URL the provider fetches.
    Url(String),
    /// Base64 bytes of the given media type (`image/png`, `image/jpeg`, `image/gif`, `image/webp`).
    Base64 { data: String, media_type: String },
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text {
        text: String,
    },
    Image(Image),
    /// A PDF (base64), for providers that read documents.
    Document {
        data: String,
        media_type: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    ToolCall {
        id: String,
        name: String,
        /// JSON text as the model produced it; serialized as the parsed value when it parses.
        #[serde(serialize_with = "ser_arguments", deserialize_with = "de_arguments")]
        arguments: String,
    },
    ToolResult {
        tool_call_id: String,
        #[serde(deserialize_with = "de_content")]
        content: Vec<Part>,
        #[serde(default, skip_serializing_if = "is_false")]
        is_error: bool,
    },
    /// Model reasoning. `signature` is what the provider needs back to accept it (Anthropic's
    /// `signature`, Gemini's `thoughtSignature`, an OpenAI Responses reasoning item's
    /// encrypted content); a Gemini signature may come with empty text.
    Thinking {
        #[serde(default)]
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
}

/// An image part: `{type: "image", url}` or `{type: "image", data, media_type}`, with an optional
/// OpenAI `detail` (`low`, `high`, `auto`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ImageWire", into = "ImageWire")]
pub struct Image {
    pub source: ImageSource,
    pub detail: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

impl TryFrom<ImageWire> for Image {
    type Error = String;
    fn try_from(w: ImageWire) -> Result<Self, String> {
        let source = match (w.url, w.data, w.media_type) {
            (Some(url), None, _) => ImageSource::from_url(url)?,
            (None, Some(data), Some(media_type)) => ImageSource::Base64 { data, media_type },
            (None, Some(_), None) => return Err("an image with `data` needs its `media_type`".into()),
            (Some(_), Some(_), _) => return Err("an image has either `url` or `data`, not both".into()),
            (None, None, _) => return Err("an image needs `url` or `data` + `media_type`".into()),
        };
        Image::new(source, w.detail)
    }
}

impl ImageSource {
    /// The source of an image URL: `data:<media type>;base64,<data>` is the same as base64 bytes
    /// of that type; any other URL is fetched by the provider.
    pub fn from_url(url: String) -> Result<ImageSource, String> {
        match url.strip_prefix("data:") {
            Some(rest) => {
                let (media_type, data) = rest
                    .split_once(";base64,")
                    .ok_or("an image `data:` URL must be `data:<media type>;base64,<data>`")?;
                Ok(ImageSource::Base64 { data: data.to_string(), media_type: media_type.to_string() })
            }
            None => Ok(ImageSource::Url(url)),
        }
    }
}

impl Image {
    /// An image part; base64 bytes must be of one of [`IMAGE_TYPES`]. Every face builds images
    /// through this, so the check holds for all of them.
    pub fn new(source: ImageSource, detail: Option<String>) -> Result<Image, String> {
        if let ImageSource::Base64 { media_type, .. } = &source {
            if !IMAGE_TYPES.contains(&media_type.as_str()) {
                return Err(format!(
                    "image media_type `{}` is not one of {}",
                    clip(media_type),
                    IMAGE_TYPES.join(", ")
                ));
            }
        }
        Ok(Image { source, detail })
    }
}

impl From<Image> for ImageWire {
    fn from(i: Image) -> Self {
        let (url, data, media_type) = match i.source {
            ImageSource::Url(u) => (Some(u), None, None),
            ImageSource::Base64 { data, media_type } => (None, Some(data), Some(media_type)),
        };
        ImageWire { url, data, media_type, detail: i.detail }
    }
}

/// Image media types every provider that reads images accepts.
pub const IMAGE_TYPES: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp"];

fn is_false(b: &bool) -> bool {
    !*b
}

fn ser_arguments<S: Serializer>(args: &str, s: S) -> Result<S::Ok, S::Error> {
    match serde_json::from_str::<Value>(args) {
        Ok(v) => v.serialize(s),
        Err(_) => s.serialize_str(args),
    }
}

fn de_arguments<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        other => other.to_string(),
    })
}

/// `content`: a string (one text part) or a list of parts.
pub(crate) fn de_content<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Part>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Content {
        Text(String),
        Parts(Vec<Part>),
    }
    // Untagged enums hide the part's own error; try the two shapes in turn to keep it.
    let v = Value::deserialize(d)?;
    match v {
        Value::String(text) => Ok(vec![Part::Text { text }]),
        Value::Array(_) => match serde_json::from_value::<Content>(v.clone()) {
            Ok(Content::Parts(p)) => Ok(p),
            Ok(Content::Text(text)) => Ok(vec![Part::Text { text }]),
            Err(_) => serde_json::from_value::<Vec<Part>>(v).map_err(de::Error::custom),
        },
        Value::Null => Ok(Vec::new()),
        _ => Err(de::Error::custom("`content` must be a string or a list of parts")),
    }
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "MessageWire")]
pub struct Message {
    pub role: Role,
    pub content: Vec<Part>,
}

/// `{role, content}`; a `tool` message may also be `{role: "tool", tool_call_id, content: str}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageWire {
    role: Role,
    #[serde(deserialize_with = "de_content")]
    content: Vec<Part>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    is_error: Option<bool>,
}

impl TryFrom<MessageWire> for Message {
    type Error = String;
    fn try_from(w: MessageWire) -> Result<Self, String> {
        match w.tool_call_id {
            Some(id) if w.role == Role::Tool => Ok(Message {
                role: Role::Tool,
                content: vec![Part::ToolResult {
                    tool_call_id: id,
                    content: w.content,
                    is_error: w.is_error.unwrap_or(false),
                }],
            }),
            Some(_) => Err("`tool_call_id` belongs on a `tool` message".into()),
            None if w.is_error.is_some() => Err("`is_error` belongs on a `tool` message with `tool_call_id`".into()),
            None => Ok(Message { role: w.role, content: w.content }),
        }
    }
}

impl Message {
    /// A message of one text part.
    pub fn text(role: Role, text: impl Into<String>) -> Message {
        Message { role, content: vec![Part::Text { text: text.into() }] }
    }

    /// The message's text parts, joined.
    pub fn joined_text(&self) -> String {
        joined_text(&self.content)
    }
}

/// The text parts of `parts`, concatenated.
pub fn joined_text(parts: &[Part]) -> String {
    parts
        .iter()
        .filter_map(|p| match p {
            Part::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the arguments (an object schema); absent = no arguments.
    #[serde(default = "empty_object_schema")]
    pub parameters: Value,
}

fn empty_object_schema() -> Value {
    serde_json::json!({"type": "object", "properties": {}})
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Tool(String),
}

impl<'de> Deserialize<'de> for ToolChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Named {
            name: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Word(String),
            Named(Named),
        }
        match Wire::deserialize(d)? {
            Wire::Word(w) => match w.as_str() {
                "auto" => Ok(ToolChoice::Auto),
                "none" => Ok(ToolChoice::None),
                "required" | "any" => Ok(ToolChoice::Required),
                other => Err(de::Error::custom(format!(
                    "`tool_choice` `{}` is not auto, none, required or {{name}}",
                    clip(other)
                ))),
            },
            Wire::Named(n) => Ok(ToolChoice::Tool(n.name)),
        }
    }
}

impl Serialize for ToolChoice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ToolChoice::Auto => s.serialize_str("auto"),
            ToolChoice::None => s.serialize_str("none"),
            ToolChoice::Required => s.serialize_str("required"),
            ToolChoice::Tool(name) => serde_json::json!({ "name": name }).serialize(s),
        }
    }
}

/// The shape of the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        schema: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        strict: Option<bool>,
    },
}

/// How hard a reasoning model thinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effort {
    Low,
    Medium,
    High,
}

impl Effort {
    pub fn as_str(self) -> &'static str {
        match self {
            Effort::Low => "low",
            Effort::Medium => "medium",
            Effort::High => "high",
        }
    }

    /// The thinking budget used for providers that take a token budget (Anthropic, Gemini).
    pub fn budget_tokens(self) -> u32 {
        match self {
            Effort::Low => 1024,
            Effort::Medium => 4096,
            Effort::High => 16384,
        }
    }
}

/// `{effort}` or `{budget_tokens}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Reasoning {
    Effort { effort: Effort },
    Budget { budget_tokens: u32 },
}

impl Reasoning {
    /// A token budget: the given one, or the effort's.
    pub fn budget(self) -> u32 {
        match self {
            Reasoning::Effort { effort } => effort.budget_tokens(),
            Reasoning::Budget { budget_tokens } => budget_tokens,
        }
    }

    /// An effort: the given one, or the budget's nearest.
    pub fn effort(self) -> Effort {
        match self {
            Reasoning::Effort { effort } => effort,
            Reasoning::Budget { budget_tokens } if budget_tokens <= 2048 => Effort::Low,
            Reasoning::Budget { budget_tokens } if budget_tokens <= 8192 => Effort::Medium,
            Reasoning::Budget { .. } => Effort::High,
        }
    }
}

/// The unified chat request, independent of any wire format.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub system: Option<String>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub stop: Vec<String>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<ResponseFormat>,
    pub reasoning: Option<Reasoning>,
}

impl ChatRequest {
    /// The system prompt: the `system` field followed by any `system` role messages.
    pub fn system_text(&self) -> Option<String> {
        let parts: Vec<String> = self
            .system
            .iter()
            .cloned()
            .chain(self.messages.iter().filter(|m| m.role == Role::System).map(Message::joined_text))
            .collect();
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }

    /// The messages other than `system` ones (adapters with a separate system field use these).
    pub fn turns(&self) -> impl Iterator<Item = &Message> {
        self.messages.iter().filter(|m| m.role != Role::System)
    }

    /// Whether any message carries an image (a tool result's included).
    pub fn has_images(&self) -> bool {
        self.messages.iter().any(|m| any_part(&m.content, &|p| matches!(p, Part::Image(_))))
    }

    /// Whether any message carries a document.
    pub fn has_documents(&self) -> bool {
        self.messages.iter().any(|m| any_part(&m.content, &|p| matches!(p, Part::Document { .. })))
    }

    /// Whether the request uses tools: declares them or carries tool calls or results.
    pub fn uses_tools(&self) -> bool {
        !self.tools.is_empty()
            || self
                .messages
                .iter()
                .any(|m| any_part(&m.content, &|p| matches!(p, Part::ToolCall { .. } | Part::ToolResult { .. })))
    }

    /// Checks the invariants of the module docs; the message says what is wrong and where.
    pub fn validate(&self) -> Result<(), String> {
        if self.messages.is_empty() {
            return Err("`messages` must not be empty".into());
        }
        if self.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
            return Err("`temperature` must be between 0 and 2".into());
        }
        if self.max_tokens == Some(0) {
            return Err("`max_tokens` must be at least 1".into());
        }
        if self.stop.len() > 16 {
            return Err("at most 16 `stop` sequences".into());
        }
        for (i, m) in self.messages.iter().enumerate() {
            let at = |what: &str| format!("messages[{i}] ({}): {what}", m.role.as_str());
            for p in &m.content {
                let ok = match (m.role, p) {
                    (Role::System, Part::Text { .. }) => true,
                    (Role::System, _) => return Err(at("a system message holds text only")),
                    (Role::Tool, Part::ToolResult { content, .. }) => {
                        if let Some(bad) = content.iter().find(|p| !matches!(p, Part::Text { .. } | Part::Image(_))) {
                            return Err(at(&format!("a tool result holds text and images, not {}", part_name(bad))));
                        }
                        true
                    }
                    (Role::Tool, _) => false,
                    (_, Part::ToolResult { .. }) => false,
                    (Role::Assistant, Part::Image(_) | Part::Document { .. }) => false,
                    (Role::User, Part::ToolCall { .. } | Part::Thinking { .. }) => false,
                    _ => true,
                };
                if !ok {
                    return Err(at(&format!("a {} part does not belong here", part_name(p))));
                }
                if let Part::ToolCall { name, .. } = p {
                    check_tool_name(name).map_err(|e| at(&e))?;
                }
                if let Part::Document { media_type, .. } = p {
                    if media_type != "application/pdf" {
                        return Err(at(&format!("document media_type `{}` is not application/pdf", clip(media_type))));
                    }
                }
            }
            if m.role == Role::Tool && m.content.is_empty() {
                return Err(at("a tool message needs a tool_result part"));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.tools {
            check_tool_name(&t.name).map_err(|e| format!("tools: {e}"))?;
            if !seen.insert(t.name.as_str()) {
                return Err(format!("tools: `{}` is declared twice", t.name));
            }
            if !t.parameters.is_object() {
                return Err(format!("tools: `{}`: `parameters` must be a JSON Schema object", t.name));
            }
        }
        match &self.tool_choice {
            Some(ToolChoice::Tool(name)) if !seen.contains(name.as_str()) => {
                return Err(format!("`tool_choice` names `{}`, which is not in `tools`", clip(name)));
            }
            Some(ToolChoice::Required | ToolChoice::Tool(_)) if self.tools.is_empty() => {
                return Err("`tool_choice` requires a tool but `tools` is empty".into());
            }
            _ => {}
        }
        if let Some(ResponseFormat::JsonSchema { name, schema, .. }) = &self.response_format {
            check_tool_name(name).map_err(|e| format!("response_format.name: {e}"))?;
            if !schema.is_object() {
                return Err("response_format.schema must be a JSON Schema object".into());
            }
        }
        if let Some(Reasoning::Budget { budget_tokens: 0 }) = self.reasoning {
            return Err("reasoning.budget_tokens must be at least 1".into());
        }
        Ok(())
    }
}

fn any_part(parts: &[Part], f: &dyn Fn(&Part) -> bool) -> bool {
    parts.iter().any(|p| {
        f(p) || match p {
            Part::ToolResult { content, .. } => any_part(content, f),
            _ => false,
        }
    })
}

/// The `type` of a part, for messages.
pub fn part_name(p: &Part) -> &'static str {
    match p {
        Part::Text { .. } => "text",
        Part::Image(_) => "image",
        Part::Document { .. } => "document",
        Part::ToolCall { .. } => "tool_call",
        Part::ToolResult { .. } => "tool_result",
        Part::Thinking { .. } => "thinking",
    }
}

fn check_tool_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("name `{}` must be 1 to 64 characters of A-Z a-z 0-9 _ -", clip(name)))
    }
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Why the model stopped, normalised across providers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    Refusal,
    /// A reason no mapping knows, as the provider spelled it.
    #[serde(untagged)]
    Other(String),
}

impl FinishReason {
    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::Refusal => "refusal",
            FinishReason::Other(s) => s,
        }
    }

    /// OpenAI Chat Completions (and compatible) `finish_reason`.
    pub fn from_openai(s: &str) -> FinishReason {
        match s {
            "stop" => FinishReason::Stop,
            "length" => FinishReason::Length,
            "tool_calls" | "function_call" => FinishReason::ToolCalls,
            "content_filter" => FinishReason::ContentFilter,
            other => FinishReason::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for FinishReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One tool call of an answer, with its arguments parsed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCallOut {
    pub id: String,
    pub name: String,
    /// The parsed arguments; `null` when they are not valid JSON (see `arguments_raw`).
    pub arguments: Value,
    /// The arguments as the model produced them, present only when they do not parse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments_raw: Option<String>,
}

/// The tool calls among `parts`, in order.
pub fn tool_calls(parts: &[Part]) -> Vec<ToolCallOut> {
    parts
        .iter()
        .filter_map(|p| match p {
            Part::ToolCall { id, name, arguments } => {
                let parsed = if arguments.trim().is_empty() {
                    Ok(Value::Object(serde_json::Map::new()))
                } else {
                    serde_json::from_str::<Value>(arguments)
                };
                Some(match parsed {
                    Ok(v) => ToolCallOut { id: id.clone(), name: name.clone(), arguments: v, arguments_raw: None },
                    Err(_) => ToolCallOut {
                        id: id.clone(),
                        name: name.clone(),
                        arguments: Value::Null,
                        arguments_raw: Some(arguments.clone()),
                    },
                })
            }
            _ => None,
        })
        .collect()
}

/// The name of the tool call `id` in the nearest earlier assistant message that has it (for wire
/// formats that answer a call by its function's name).
pub fn tool_call_name<'a>(earlier: &'a [Message], id: &str) -> Option<&'a str> {
    earlier.iter().rev().filter(|m| m.role == Role::Assistant).find_map(|m| {
        m.content.iter().find_map(|p| match p {
            Part::ToolCall { id: call_id, name, .. } if call_id == id => Some(name.as_str()),
            _ => None,
        })
    })
}

/// The thinking text among `parts`, joined; `None` when there is none.
pub fn reasoning_text(parts: &[Part]) -> Option<String> {
    let text: Vec<&str> = parts
        .iter()
        .filter_map(|p| match p {
            Part::Thinking { text, .. } if !text.is_empty() => Some(text.as_str()),
            _ => None,
        })
        .collect();
    (!text.is_empty()).then(|| text.join("\n\n"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn message(v: Value) -> Result<Message, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn content_is_a_string_or_parts() {
        assert_eq!(message(json!({"role":"user","content":"hi"})).unwrap(), Message::text(Role::User, "hi"));
        let m = message(json!({"role":"user","content":[
            {"type":"text","text":"what is this?"},
            {"type":"image","url":"https://example.com/a.png"},
            {"type":"image","data":"iVBORw0KGgo=","media_type":"image/png"},
            {"type":"image","url":"data:image/jpeg;base64,/9j/4AAQ"}]}))
        .unwrap();
        assert_eq!(m.content.len(), 4);
        assert!(
            matches!(&m.content[3], Part::Image(Image { source: ImageSource::Base64 { media_type, .. }, .. }) if media_type == "image/jpeg")
        );
        let e = message(json!({"role":"user","content":[{"type":"image","data":"x"}]})).unwrap_err();
        assert!(e.contains("media_type"), "{e}");
        let e = message(json!({"role":"user","content":[{"type":"image","data":"x","media_type":"image/bmp"}]}))
            .unwrap_err();
        assert!(e.contains("image/bmp"), "{e}");
        let e = message(json!({"role":"user","content":[{"type":"video","url":"x"}]})).unwrap_err();
        assert!(e.contains("video"), "{e}");
    }

    #[test]
    fn tool_messages_and_arguments() {
        let m = message(json!({"role":"tool","tool_call_id":"call_1","content":"22 C"})).unwrap();
        assert_eq!(
            m.content,
            vec![Part::ToolResult {
                tool_call_id: "call_1".into(),
                content: vec![Part::Text { text: "22 C".into() }],
                is_error: false
            }]
        );
        let m = message(json!({"role":"assistant","content":[
            {"type":"tool_call","id":"c1","name":"get_weather","arguments":{"city":"Paris"}},
            {"type":"tool_call","id":"c2","name":"f","arguments":"{\"a\": 1"}]}))
        .unwrap();
        let calls = tool_calls(&m.content);
        assert_eq!(calls[0].arguments, json!({"city":"Paris"}));
        assert_eq!(calls[1].arguments, Value::Null);
        assert_eq!(calls[1].arguments_raw.as_deref(), Some("{\"a\": 1"));
        // Round trip: arguments serialize as the parsed value (or the raw string).
        let back = serde_json::to_value(&m.content).unwrap();
        assert_eq!(back[0]["arguments"], json!({"city":"Paris"}));
        assert_eq!(back[1]["arguments"], json!("{\"a\": 1"));
    }

    #[test]
    fn validate_places_parts_and_tools() {
        let req = |messages: Vec<Value>, tools: Value, choice: Value| -> Result<(), String> {
            let mut r = ChatRequest {
                messages: messages.into_iter().map(|m| message(m).unwrap()).collect(),
                tools: serde_json::from_value(tools).unwrap(),
                ..ChatRequest::default()
            };
            if !choice.is_null() {
                r.tool_choice = Some(serde_json::from_value(choice).map_err(|e| e.to_string())?);
            }
            r.validate()
        };
        let user = json!({"role":"user","content":"hi"});
        let weather = json!([{"name":"get_weather","parameters":{"type":"object"}}]);
        assert!(req(vec![user.clone()], weather.clone(), json!("auto")).is_ok());
        assert!(req(vec![user.clone()], weather.clone(), json!({"name":"get_weather"})).is_ok());
        let e = req(vec![user.clone()], weather.clone(), json!({"name":"nope"})).unwrap_err();
        assert!(e.contains("nope"), "{e}");
        let e = req(vec![user.clone()], json!([]), json!("required")).unwrap_err();
        assert!(e.contains("tools"), "{e}");
        let e = req(vec![user.clone()], json!([{"name":"bad name"}]), Value::Null).unwrap_err();
        assert!(e.contains("bad name"), "{e}");
        let e = req(
            vec![json!({"role":"user","content":[{"type":"tool_call","id":"x","name":"f","arguments":{}}]})],
            json!([]),
            Value::Null,
        )
        .unwrap_err();
        assert!(e.contains("messages[0] (user)") && e.contains("tool_call"), "{e}");
        let e = req(
            vec![json!({"role":"system","content":[{"type":"image","url":"https://x/a.png"}]})],
            json!([]),
            Value::Null,
        )
        .unwrap_err();
        assert!(e.contains("text only"), "{e}");
        assert!(ChatRequest::default().validate().is_err());
    }

    #[test]
    fn reasoning_and_response_format_shapes() {
        let r: Reasoning = serde_json::from_value(json!({"effort":"high"})).unwrap();
        assert_eq!((r.budget(), r.effort()), (16384, Effort::High));
        let r: Reasoning = serde_json::from_value(json!({"budget_tokens":2000})).unwrap();
        assert_eq!((r.budget(), r.effort()), (2000, Effort::Low));
        assert!(serde_json::from_value::<Reasoning>(json!({"effort":"max"})).is_err());
        let f: ResponseFormat = serde_json::from_value(
            json!({"type":"json_schema","name":"book","schema":{"type":"object"},"strict":true}),
        )
        .unwrap();
        assert!(matches!(f, ResponseFormat::JsonSchema { strict: Some(true), .. }));
        assert_eq!(serde_json::to_value(FinishReason::ToolCalls).unwrap(), json!("tool_calls"));
        assert_eq!(serde_json::to_value(FinishReason::Other("pause_turn".into())).unwrap(), json!("pause_turn"));
    }
}
