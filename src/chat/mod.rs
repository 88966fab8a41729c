//! The chat domain shared by every front door and the providers: the conversation model
//! ([`types`]), stream deltas and their assembly ([`assemble`]), where a stream's deltas go
//! ([`sink`]) and the prompt token bound a quota reserves ([`bound`]).
//!
//! Invariant: no provider's wire shape appears here; adapters translate these types both ways
//! and the RPC (and any other face) maps its params onto them.

pub mod assemble;
pub mod bound;
pub mod service;
pub mod sink;
pub mod target;
pub mod types;

pub use assemble::{output_chars, Assembler, Delta};
pub use bound::MediaBound;
pub use sink::Sink;
pub use target::Target;
pub use types::{
    joined_text, reasoning_text, tool_call_name, tool_calls, ChatRequest, Effort, FinishReason, Image, ImageSource,
    Message, Part, Reasoning, ResponseFormat, Role, Tool, ToolCallOut, ToolChoice,
};
