//! `chat` and `chat.cancel`: the RPC face of the chat service ([`crate::chat::service`]).
//!
//! This file only maps RPC params onto a [`Request`] and the service's [`Answer`] /
//! [`ChatError`] onto results and structured errors. Invariants (kept by the service):
//! - every call that completed, was cancelled, or failed after tokens were billed is on disk in
//!   the ledger before it is answered;
//! - with `stream: true`, deltas go out as `chat.chunk [msgid, {delta | reasoning_delta |
//!   tool_call, seq}]` notifications on the caller's connection only, all before the response;
//! - `$/cancel [msgid]` or `chat.cancel {id}` aborts the upstream request at once (one registry:
//!   the connection's); the answer is `cancelled` with the usage billed so far in `data`.

use super::quota::refusal_error;
use super::{ok, Call, ConnCtx, Method};
use crate::chat::service::{self, Answer, AttemptReport, Caller, ChatError, CostSource, Request, Sink};
use crate::chat::{
    joined_text, reasoning_text, tool_calls, ChatRequest, Delta, Message, Part, Reasoning, ResponseFormat, Tool,
    ToolCallOut, ToolChoice,
};
use crate::clock::millis as ms;
use crate::router::Attempt;
use crate::rpc::{Encoded, ErrorCode, RpcError};
use crate::usage_record::TokenUsage;
use futures::future::BoxFuture;
use rmpv::Value;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

pub(super) fn methods() -> Vec<Method> {
    vec![
        Method {
            name: "chat",
            params: "{model: str, messages: [{role: system|user|assistant|tool, content: str | [part], tool_call_id?: str}], system?: str, max_tokens?: u32, temperature?: f64 (0-2), stop?: str|[str], stream?: bool, tools?: [{name, description?, parameters}], tool_choice?: auto|none|required|{name}, parallel_tool_calls?: bool, response_format?: {type: text|json_object} | {type: json_schema, name, schema, strict?}, reasoning?: {effort: low|medium|high} | {budget_tokens}, metadata?: map}  part: {type: text, text} | {type: image, url} | {type: image, data, media_type} | {type: document, data, media_type: application/pdf} | {type: tool_call, id, name, arguments} | {type: tool_result, tool_call_id, content, is_error?} | {type: thinking, text, signature?}",
            result: "{content, message: {role: assistant, content: [part]}, tool_calls: [{id, name, arguments, arguments_raw?}], reasoning?, finish_reason: stop|length|tool_calls|content_filter|refusal|<provider's>, model, provider, usage: {input, output, cached, cache_write, reasoning, estimated}, cost_microusd, cost_source: table|provider|unknown, latency_ms, ttft_ms, attempts: [{provider, model, outcome, status, ms, usage?, cost_microusd?}]}",
            summary: "Chat completion via a route, alias or provider/model, with tools, images, structured output and reasoning; with stream: true sends chat.chunk [msgid, {delta | reasoning_delta | tool_call: {index, id?, name?, arguments_delta}, seq}] notifications first",
            kind: "request",
            handler: Some(|c| Box::pin(chat(c))),
        },
        Method {
            name: "chat.cancel",
            params: "{id: u32}  (msgid of a running chat call on this connection)",
            result: "{cancelled: bool}",
            summary: "Cancel a running chat call (same as $/cancel); it answers `cancelled` with the usage so far",
            kind: "request",
            handler: Some(|c| Box::pin(cancel(c))),
        },
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatParams {
    model: String,
    messages: Vec<Message>,
    system: Option<String>,
    max_tokens: Option<u32>,
    temperature: Option<f64>,
    stop: Option<Stop>,
    stream: Option<bool>,
    #[serde(default)]
    tools: Vec<Tool>,
    tool_choice: Option<ToolChoice>,
    parallel_tool_calls: Option<bool>,
    response_format: Option<ResponseFormat>,
    reasoning: Option<Reasoning>,
    /// Accepted for the app's own bookkeeping; not sent to providers.
    #[allow(dead_code)]
    metadata: Option<HashMap<String, Value>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

fn request(p: ChatParams) -> Result<Request, RpcError> {
    if p.model.trim().is_empty() {
        return Err(RpcError::invalid_params("`model` must name a route, an alias or provider/model"));
    }
    let stop = match p.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    let chat = ChatRequest {
        messages: p.messages,
        system: p.system,
        max_tokens: p.max_tokens,
        temperature: p.temperature,
        stop,
        tools: p.tools,
        tool_choice: p.tool_choice,
        parallel_tool_calls: p.parallel_tool_calls,
        response_format: p.response_format,
        reasoning: p.reasoning,
    };
    Ok(Request { route: p.model, chat, stream: p.stream.unwrap_or(false) })
}

/// Sends deltas as `chat.chunk` notifications on the calling connection.
struct Chunks {
    conn: Arc<ConnCtx>,
    msgid: u32,
    seq: u64,
}

impl Sink for Chunks {
    fn send(&mut self, delta: Delta) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            fn s(v: impl Into<Value>) -> Value {
                v.into()
            }
            let piece = match delta {
                Delta::Text(t) | Delta::Reasoning(t) if t.is_empty() => return,
                Delta::Text(t) => (s("delta"), s(t)),
                Delta::Reasoning(t) => (s("reasoning_delta"), s(t)),
                // Not streamed: the final `message` carries it.
                Delta::Signature(_) => return,
                Delta::ToolCall { index, id, name, arguments } => {
                    let mut m = vec![(s("index"), Value::from(index as u64))];
                    if let Some(id) = id {
                        m.push((s("id"), s(id)));
                    }
                    if let Some(name) = name {
                        m.push((s("name"), s(name)));
                    }
                    m.push((s("arguments_delta"), s(arguments)));
                    (s("tool_call"), Value::Map(m))
                }
            };
            let body = Value::Map(vec![piece, (s("seq"), Value::from(self.seq))]);
            self.seq += 1;
            // A closed connection cancels the call (conn.rs); nothing to do here if this fails.
            let _ = self.conn.notify("chat.chunk", vec![Value::from(self.msgid), body]).await;
        })
    }
}

async fn chat(mut c: Call) -> Result<Encoded, RpcError> {
    let req = request(c.params()?)?;
    let caller = Caller { app: c.conn.app() };
    let mut chunks = Chunks { conn: c.conn.clone(), msgid: c.msgid, seq: 0 };
    let sink: Option<&mut dyn Sink> = if req.stream { Some(&mut chunks) } else { None };
    match service::run(&c.state, &caller, req, sink, &c.cancel).await {
        Ok(answer) => ok(&ChatResult::new(&answer)),
        Err(e) => Err(super::chat_error(e, &c.state).await),
    }
}

#[derive(Serialize)]
struct UsageOut {
    input: u64,
    output: u64,
    cached: u64,
    cache_write: u64,
    reasoning: u64,
    estimated: bool,
}

impl From<TokenUsage> for UsageOut {
    fn from(u: TokenUsage) -> Self {
        UsageOut {
            input: u.input,
            output: u.output,
            cached: u.cached,
            cache_write: u.cache_write,
            reasoning: u.reasoning,
            estimated: u.estimated,
        }
    }
}

/// One entry of `attempts`.
#[derive(Serialize)]
struct AttemptOut<'a> {
    provider: &'a str,
    model: &'a str,
    outcome: &'static str,
    status: Option<u16>,
    ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_microusd: Option<i64>,
}

fn attempts_out(a: &[AttemptReport]) -> Vec<AttemptOut<'_>> {
    a.iter()
        .map(|r| AttemptOut {
            provider: &r.attempt.provider,
            model: &r.attempt.model,
            outcome: r.attempt.outcome.as_str(),
            status: r.attempt.status,
            ms: r.attempt.ms,
            usage: r.usage.map(UsageOut::from),
            cost_microusd: r.cost_microusd,
        })
        .collect()
}

/// The assistant message, ready to append to the conversation.
#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: &'a [Part],
}

#[derive(Serialize)]
struct ChatResult<'a> {
    content: String,
    message: MessageOut<'a>,
    tool_calls: Vec<ToolCallOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<String>,
    finish_reason: Option<&'a str>,
    model: &'a str,
    provider: &'a str,
    usage: UsageOut,
    cost_microusd: i64,
    cost_source: CostSource,
    latency_ms: u64,
    ttft_ms: Option<u64>,
    attempts: Vec<AttemptOut<'a>>,
}

impl<'a> ChatResult<'a> {
    fn new(a: &'a Answer) -> ChatResult<'a> {
        ChatResult {
            content: joined_text(&a.parts),
            message: MessageOut { role: "assistant", content: &a.parts },
            tool_calls: tool_calls(&a.parts),
            reasoning: reasoning_text(&a.parts),
            finish_reason: a.finish_reason.as_ref().map(|f| f.as_str()),
            model: &a.model,
            provider: &a.provider,
            usage: a.usage.into(),
            cost_microusd: a.cost_microusd,
            cost_source: a.cost_source,
            latency_ms: ms(a.latency),
            ttft_ms: a.ttft.map(ms),
            attempts: attempts_out(&a.attempts),
        }
    }
}

/// `data` of a `cancelled` or `provider_error` answer.
#[derive(Serialize)]
struct FailureData<'a> {
    provider: &'a str,
    model: &'a str,
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    usage: UsageOut,
    cost_microusd: i64,
    /// Text that reached the app (streaming) or was received before the end.
    content: String,
    /// Every part received before the end (text, reasoning, tool calls).
    message: MessageOut<'a>,
    after_first_chunk: bool,
    attempts: Vec<AttemptOut<'a>>,
}

impl<'a> FailureData<'a> {
    fn new(a: &'a Answer, provider: &'a str, status: Option<u16>, after_first_chunk: bool) -> FailureData<'a> {
        FailureData {
            provider,
            model: &a.model,
            status,
            retry_after_ms: None,
            usage: a.usage.into(),
            cost_microusd: a.cost_microusd,
            content: joined_text(&a.parts),
            message: MessageOut { role: "assistant", content: &a.parts },
            after_first_chunk,
            attempts: attempts_out(&a.attempts),
        }
    }
}

/// The RPC error for a service error. `backend`: whether an account backend is configured.
pub(super) fn error(e: ChatError, backend: bool) -> RpcError {
    match e {
        ChatError::Invalid(m) => RpcError::invalid_params(m),
        ChatError::Refused(r) => refusal_error(&r, backend),
        ChatError::UnknownRoute(name) => {
            #[derive(Serialize)]
            struct D<'a> {
                model: &'a str,
            }
            RpcError::invalid_params(format!(
                "unknown model `{}`: not a route, alias, provider/model or listed model (see models.list)",
                name.chars().take(128).collect::<String>()
            ))
            .with_data(&D { model: &name })
        }
        ChatError::KeyMissing { provider, attempts } => {
            #[derive(Serialize)]
            struct D<'a> {
                provider: &'a str,
                attempts: &'a [Attempt],
            }
            RpcError::new(
                ErrorCode::KeyMissing,
                format!(
                    "no key for provider `{provider}`: add one with `llm-sidecar keys add {provider}` or set its key_env variable"
                ),
            )
            .with_data(&D { provider: &provider, attempts: &attempts })
        }
        ChatError::VaultLocked { provider } => {
            #[derive(Serialize)]
            struct D<'a> {
                provider: &'a str,
            }
            RpcError::new(ErrorCode::VaultLocked, "the vault is locked; unlock it with `llm-sidecar vault unlock`")
                .with_data(&D { provider: &provider })
        }
        ChatError::Unsupported { provider, feature } => {
            #[derive(Serialize)]
            struct D<'a> {
                provider: &'a str,
                feature: &'a str,
            }
            RpcError::invalid_params(format!("provider `{provider}` does not support {feature}"))
                .with_data(&D { provider: &provider, feature })
        }
        ChatError::Cancelled(a) => RpcError::new(ErrorCode::Cancelled, "the chat call was cancelled")
            .with_data(&FailureData::new(&a, &a.provider, None, a.delivered)),
        ChatError::Provider { provider, error, after_first_chunk, answer } => {
            let mut d = FailureData::new(&answer, &provider, error.status(), after_first_chunk);
            d.retry_after_ms = error.retry_after().map(ms);
            RpcError::new(ErrorCode::ProviderError, format!("{provider}: {error}")).with_data(&d)
        }
        ChatError::Deadline { provider, answer } => RpcError::new(
            ErrorCode::ProviderError,
            format!("{provider}: the call's deadline passed before any provider answered"),
        )
        .with_data(&FailureData::new(&answer, &provider, None, false)),
        e @ ChatError::NotRecorded => RpcError::internal(e.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelParams {
    id: u32,
}

#[derive(Serialize)]
struct CancelResult {
    cancelled: bool,
}

async fn cancel(mut c: Call) -> Result<Encoded, RpcError> {
    let p: CancelParams = c.params()?;
    ok(&CancelResult { cancelled: p.id != c.msgid && c.conn.cancel(p.id) })
}
