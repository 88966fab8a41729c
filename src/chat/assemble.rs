//! Stream deltas, and the assembly of a streamed answer into the assistant message.
//!
//! Adapters turn each provider event into [`Delta`]s; the [`Assembler`] builds from them the
//! same [`Part`] list a non-streamed answer has. Invariants: text deltas that follow each other
//! form one text part; reasoning deltas one thinking part, and a [`Delta::Signature`] completes
//! the unsigned thinking part it follows (else it stands alone as an empty one: Gemini signs a
//! function call, and two signed blocks in a row stay two parts);
//! a tool call is identified by its `index` (0-based among the answer's tool calls): its first
//! delta opens the part at that point, later ones append arguments.

use super::types::Part;
use serde::Serialize;

/// One piece of a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Delta {
    Text(String),
    Reasoning(String),
    /// The signature of the reasoning just streamed (Anthropic `signature_delta`, Gemini
    /// `thoughtSignature`, a Responses reasoning item's encrypted content).
    Signature(String),
    ToolCall {
        index: usize,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    },
}

/// Builds the assistant message from deltas.
#[derive(Debug, Default, Clone)]
pub struct Assembler {
    parts: Vec<Part>,
    /// Position in `parts` of each tool call index seen.
    tools: Vec<(usize, usize)>,
    /// The last part touched by text or reasoning (a tool call in between ends it).
    open: Option<usize>,
    chars: usize,
}

impl Assembler {
    pub fn push(&mut self, d: &Delta) {
        match d {
            Delta::Text(t) => {
                self.chars += t.chars().count();
                match self.open.and_then(|i| self.parts.get_mut(i)) {
                    Some(Part::Text { text }) => text.push_str(t),
                    _ => self.open_part(Part::Text { text: t.clone() }),
                }
            }
            Delta::Reasoning(t) => {
                self.chars += t.chars().count();
                match self.open.and_then(|i| self.parts.get_mut(i)) {
                    Some(Part::Thinking { text, signature: None }) => text.push_str(t),
                    _ => self.open_part(Part::Thinking { text: t.clone(), signature: None }),
                }
            }
            Delta::Signature(s) => match self.open.and_then(|i| self.parts.get_mut(i)) {
                Some(Part::Thinking { signature: signature @ None, .. }) => *signature = Some(s.clone()),
                _ => self.open_part(Part::Thinking { text: String::new(), signature: Some(s.clone()) }),
            },
            Delta::ToolCall { index, id, name, arguments } => {
                self.chars += arguments.chars().count() + name.as_deref().map_or(0, str::len);
                let at = self.tools.iter().find(|(i, _)| i == index).map(|(_, p)| *p);
                match at.and_then(|p| self.parts.get_mut(p)) {
                    Some(Part::ToolCall { id: have_id, name: have_name, arguments: args }) => {
                        if let Some(i) = id {
                            if have_id.is_empty() {
                                have_id.clone_from(i);
                            }
                        }
                        if let Some(n) = name {
                            if have_name.is_empty() {
                                have_name.clone_from(n);
                            }
                        }
                        args.push_str(arguments);
                    }
                    _ => {
                        self.tools.push((*index, self.parts.len()));
                        self.parts.push(Part::ToolCall {
                            id: id.clone().unwrap_or_default(),
                            name: name.clone().unwrap_or_default(),
                            arguments: arguments.clone(),
                        });
                        self.open = None;
                    }
                }
            }
        }
    }

    /// Appends a whole part (a non-streamed answer's).
    pub fn push_part(&mut self, p: Part) {
        self.chars += output_chars(std::slice::from_ref(&p));
        if let Part::ToolCall { .. } = p {
            self.tools.push((self.tools.len(), self.parts.len()));
        }
        self.open = None;
        self.parts.push(p);
    }

    fn open_part(&mut self, p: Part) {
        self.open = Some(self.parts.len());
        self.parts.push(p);
    }

    /// The message so far.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Characters received so far (text, reasoning, tool names and arguments), for estimates.
    pub fn chars(&self) -> usize {
        self.chars
    }

    pub fn into_parts(self) -> Vec<Part> {
        self.parts
    }
}

/// Characters of generated content in `parts` (as [`Assembler::chars`] counts them).
pub fn output_chars(parts: &[Part]) -> usize {
    parts
        .iter()
        .map(|p| match p {
            Part::Text { text } | Part::Thinking { text, .. } => text.chars().count(),
            Part::ToolCall { name, arguments, .. } => name.len() + arguments.chars().count(),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembles_thinking_text_and_tool_calls_in_order() {
        let mut a = Assembler::default();
        for d in [
            Delta::Reasoning("Let me ".into()),
            Delta::Reasoning("think.".into()),
            Delta::Signature("sig".into()),
            Delta::Text("Calling ".into()),
            Delta::Text("tools.".into()),
            Delta::ToolCall { index: 0, id: Some("a".into()), name: Some("f".into()), arguments: "{\"x\":".into() },
            Delta::ToolCall { index: 1, id: Some("b".into()), name: Some("g".into()), arguments: String::new() },
            Delta::ToolCall { index: 0, id: None, name: None, arguments: "1}".into() },
            Delta::ToolCall { index: 1, id: None, name: None, arguments: "{}".into() },
            Delta::Signature("gem".into()),
            Delta::Signature("second".into()),
        ] {
            a.push(&d);
        }
        assert_eq!(
            a.parts(),
            &[
                Part::Thinking { text: "Let me think.".into(), signature: Some("sig".into()) },
                Part::Text { text: "Calling tools.".into() },
                Part::ToolCall { id: "a".into(), name: "f".into(), arguments: "{\"x\":1}".into() },
                Part::ToolCall { id: "b".into(), name: "g".into(), arguments: "{}".into() },
                Part::Thinking { text: String::new(), signature: Some("gem".into()) },
                Part::Thinking { text: String::new(), signature: Some("second".into()) },
            ]
        );
        assert_eq!(a.chars(), output_chars(a.parts()));
    }
}
