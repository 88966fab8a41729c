//! `chat` and `chat.cancel`: one chat call through the router, streamed or not, metered.
//!
//! Invariants:
//! - every call that completed, was cancelled, or failed after tokens were billed commits exactly
//!   one usage record for the attempt that ended it, plus one `error` record per earlier failed
//!   attempt its provider reported usage for (`ChatOutcome::billed_failures`), all in one durable
//!   ledger batch before it is answered;
//! - with `stream: true`, deltas go out as `chat.chunk [msgid, {delta, seq}]` notifications on the
//!   caller's connection only, all before the final response;
//! - `$/cancel [msgid]` or `chat.cancel {id}` aborts the upstream request at once; the answer is
//!   `cancelled` with the usage billed so far in `data`;
//! - nothing here sees a key: the router picks keys and redacts provider messages.

use super::{ok, Call, Method};
use crate::chat::{
    reasoning_text, tool_calls, ChatRequest, Delta, Message, Part, Reasoning, ResponseFormat, Tool, ToolCallOut,
    ToolChoice,
};
use crate::pricing::cost_microusd;
use crate::router::{Attempt, ChatCall, ChatFailure, ChatOutcome};
use crate::rpc::{Encoded, ErrorCode, RpcError};
use crate::usage_record::{CallStatus, KeySource, TokenUsage, UsageRecord};
use rmpv::Value;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Attempt outcomes of targets that were skipped without a request.
const SKIPPED: &[&str] = &["cooldown", "key_missing", "vault_locked", "deadline", "skipped_tier"];

/// Deltas buffered between the router and the connection writer.
const CHUNK_BUFFER: usize = 64;

pub(super) fn methods() -> Vec<Method> {
    vec![
        Method {
            name: "chat",
            params: "{model: str, messages: [{role: system|user|assistant, content: str}], system?: str, max_tokens?: u32, temperature?: f64 (0-2), stop?: str|[str], stream?: bool, metadata?: map}",
            result: "{content, finish_reason, model, provider, usage: {input, output, cached, cache_write, reasoning, estimated}, cost_microusd, latency_ms, ttft_ms, attempts: [{provider, model, outcome, status, ms, usage?, cost_microusd?}]}",
            summary: "Chat completion via a route, alias or provider/model; with stream: true sends chat.chunk [msgid, {delta, seq}] notifications first",
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

/// One entry of `attempts`: the router's [`Attempt`], plus the usage and cost of a failed attempt
/// that was billed on its own record.
#[derive(Serialize)]
struct AttemptOut<'a> {
    provider: &'a str,
    model: &'a str,
    outcome: &'a str,
    status: Option<u16>,
    ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_microusd: Option<i64>,
}

#[derive(Serialize)]
struct ChatResult<'a> {
    content: &'a str,
    message: MessageOut<'a>,
    tool_calls: &'a [ToolCallOut],
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<String>,
    finish_reason: Option<&'a str>,
    model: &'a str,
    provider: &'a str,
    usage: UsageOut,
    cost_microusd: i64,
    latency_ms: u64,
    ttft_ms: Option<u64>,
    attempts: &'a [AttemptOut<'a>],
}

/// The assistant message, ready to append to the conversation.
#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: &'a [Part],
}

/// `data` of a `cancelled` or `provider_error` answer.
#[derive(Serialize)]
struct FailureData<'a> {
    provider: &'a str,
    model: &'a str,
    status: Option<u16>,
    usage: UsageOut,
    cost_microusd: i64,
    /// Text that reached the app (streaming) or was received before the end.
    content: &'a str,
    /// Every part received before the end (text, reasoning, tool calls).
    message: MessageOut<'a>,
    after_first_chunk: bool,
    attempts: &'a [AttemptOut<'a>],
}

fn validate(p: ChatParams) -> Result<(ChatCall, bool), RpcError> {
    if p.model.trim().is_empty() {
        return Err(RpcError::invalid_params("`model` must name a route, an alias or provider/model"));
    }
    if let Some(t) = p.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(RpcError::invalid_params("`temperature` must be between 0 and 2"));
        }
    }
    if p.max_tokens == Some(0) {
        return Err(RpcError::invalid_params("`max_tokens` must be at least 1"));
    }
    let stop = match p.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.len() > 16 {
        return Err(RpcError::invalid_params("at most 16 `stop` sequences"));
    }
    let stream = p.stream.unwrap_or(false);
    let request = ChatRequest {
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
    request.validate().map_err(RpcError::invalid_params)?;
    Ok((ChatCall { route: p.model, request, stream, targets: None }, stream))
}

/// Running chat calls by (connection, msgid), so `chat.cancel` can reach them.
static RUNNING: LazyLock<Mutex<HashMap<(u64, u32), CancellationToken>>> = LazyLock::new(Mutex::default);

struct Registered((u64, u32));

impl Registered {
    fn new(conn: u64, msgid: u32, token: CancellationToken) -> Registered {
        if let Ok(mut m) = RUNNING.lock() {
            m.insert((conn, msgid), token);
        }
        Registered((conn, msgid))
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut m) = RUNNING.lock() {
            m.remove(&self.0);
        }
    }
}

async fn chat(mut c: Call) -> Result<Encoded, RpcError> {
    let (mut call, stream) = validate(c.params()?)?;
    // One router for the whole call: a config reload meanwhile does not change it.
    let router = c.state.router();
    let admitted = super::quota::admit(&c.state, &router, &c.conn.app(), &mut call)?;
    let _registered = Registered::new(c.conn.id, c.msgid, c.cancel.clone());
    let state = c.state.clone();
    // A tier without BYOK uses no vault keys (platform and local keys only).
    let keys: &dyn crate::keystore::KeyStore =
        if admitted.byok_allowed { state.keys.as_ref() } else { &crate::keystore::NoKeys };
    let outcome = if stream {
        let (tx, mut rx) = mpsc::channel::<Delta>(CHUNK_BUFFER);
        let run = router.chat(&call, keys, Some(&tx), &c.cancel);
        tokio::pin!(run);
        let mut seq: u64 = 0;
        let outcome = loop {
            tokio::select! {
                biased;
                Some(delta) = rx.recv() => send_chunk(&c, &mut seq, delta).await,
                o = &mut run => break o,
            }
        };
        while let Ok(delta) = rx.try_recv() {
            send_chunk(&c, &mut seq, delta).await;
        }
        outcome
    } else {
        router.chat(&call, keys, None, &c.cancel).await
    };
    let mut outcome = outcome;
    let skipped = admitted.skipped.iter().map(|t| Attempt {
        provider: t.provider.clone(),
        model: t.model.clone(),
        outcome: "skipped_tier".into(),
        status: None,
        ms: 0,
    });
    let shift = admitted.skipped.len();
    outcome.attempts.splice(0..0, skipped);
    for b in &mut outcome.billed_failures {
        b.attempt += shift;
    }
    finish(&c, &call, outcome, admitted).await
}

/// One `chat.chunk` notification: `{delta}`, `{reasoning_delta}` or `{tool_call: {index, id?,
/// name?, arguments_delta}}`, with `seq`. A signature is not streamed (it is in the final
/// `message`).
async fn send_chunk(c: &Call, seq: &mut u64, delta: Delta) {
    let s = |v: String| Value::from(v);
    let piece = match delta {
        Delta::Text(t) => (Value::from("delta"), s(t)),
        Delta::Reasoning(t) => (Value::from("reasoning_delta"), s(t)),
        Delta::Signature(_) => return,
        Delta::ToolCall { index, id, name, arguments } => {
            let mut m = vec![(Value::from("index"), Value::from(index as u64))];
            if let Some(id) = id {
                m.push((Value::from("id"), s(id)));
            }
            if let Some(name) = name {
                m.push((Value::from("name"), s(name)));
            }
            m.push((Value::from("arguments_delta"), s(arguments)));
            (Value::from("tool_call"), Value::Map(m))
        }
    };
    let body = Value::Map(vec![piece, (Value::from("seq"), Value::from(*seq))]);
    *seq += 1;
    // A closed connection cancels the call (conn.rs); nothing to do here if this fails.
    let _ = c.conn.notify("chat.chunk", vec![Value::from(c.msgid), body]).await;
}

/// Bills the call (when tokens were or may have been billed, or it was cancelled) and answers.
async fn finish(
    c: &Call,
    call: &ChatCall,
    o: ChatOutcome,
    mut admitted: crate::policy::Admitted,
) -> Result<Encoded, RpcError> {
    let usage = o.usage.unwrap_or_default();
    let cost = price_usage(c, &o.provider, &o.target_model, &o.model, &usage);
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let (status, error_code) = match &o.result {
        None => (CallStatus::Ok, None),
        Some(ChatFailure::Cancelled) => (CallStatus::Cancelled, Some(ErrorCode::Cancelled)),
        Some(_) => (CallStatus::Error, Some(ErrorCode::ProviderError)),
    };
    tracing::debug!(
        conn = c.conn.id,
        route = %call.route,
        provider = %o.provider,
        model = %o.model,
        status = ?status,
        input = usage.input,
        output = usage.output,
        estimated = usage.estimated,
        latency_ms = ms(o.latency),
        attempts = o.attempts.len(),
        billed_failures = o.billed_failures.len(),
        "chat finished"
    );
    // Failed attempts the provider billed come first (they happened first), each on its own
    // `error` record; `records[i]` belongs to `o.billed_failures[i]`.
    let mut records: Vec<UsageRecord> = o
        .billed_failures
        .iter()
        .map(|b| {
            let cost = price_usage(c, &b.provider, &b.target_model, &b.model, &b.usage);
            let mut r = call_record(c, call, &b.provider, &b.target_model, b.key_source, &b.usage, cost);
            r.latency_ms = b.ms;
            r.status = CallStatus::Error;
            r.error_code = Some(b.outcome.to_string());
            r
        })
        .collect();
    let bill = o.usage.is_some() || matches!(o.result, Some(ChatFailure::Cancelled));
    if bill && !o.provider.is_empty() {
        let key_source = o.key_source.unwrap_or_default();
        let mut record = call_record(c, call, &o.provider, &o.target_model, key_source, &usage, cost);
        record.latency_ms = ms(o.latency);
        record.ttft_ms = o.ttft.map(ms);
        record.status = status;
        record.error_code = error_code.map(|e| e.as_str().to_string());
        let tries = o.attempts.iter().filter(|a| !SKIPPED.contains(&a.outcome.as_str())).count();
        record.attempts = u32::try_from(tries).unwrap_or(u32::MAX).max(1);
        records.push(record);
    }
    let committed = if records.is_empty() {
        Ok(())
    } else {
        // Overage and quotas count these records like any other (the ledger's counters are the
        // quota's source); the reservation is released the moment they are visible there.
        c.state.policy.charge_overage(&admitted, &mut records);
        for r in &mut records {
            c.state.policy.stamp(r);
        }
        let release = admitted.release_when_applied();
        c.state.ledger.commit_many_then(&records, release).await.map(drop)
    };
    c.state.policy.settle(admitted);
    if let Err(e) = committed {
        tracing::error!("usage records not committed: {e}");
        return Err(RpcError::internal("the usage record could not be stored; the call was not billed"));
    }
    let mut attempts: Vec<AttemptOut<'_>> = o
        .attempts
        .iter()
        .map(|a| AttemptOut {
            provider: &a.provider,
            model: &a.model,
            outcome: &a.outcome,
            status: a.status,
            ms: a.ms,
            usage: None,
            cost_microusd: None,
        })
        .collect();
    for (b, r) in o.billed_failures.iter().zip(&records) {
        if let Some(a) = attempts.get_mut(b.attempt) {
            a.usage = Some(b.usage.into());
            a.cost_microusd = Some(r.cost_microusd);
        }
    }
    let content = crate::chat::joined_text(&o.parts);
    let message = MessageOut { role: "assistant", content: &o.parts };
    let calls = tool_calls(&o.parts);
    let data = |status: Option<u16>, after_first_chunk: bool| FailureData {
        provider: &o.provider,
        model: &o.model,
        status,
        usage: usage.into(),
        cost_microusd: cost,
        content: &content,
        message: MessageOut { role: "assistant", content: &o.parts },
        after_first_chunk,
        attempts: &attempts,
    };
    match &o.result {
        None => ok(&ChatResult {
            content: &content,
            message,
            tool_calls: &calls,
            reasoning: reasoning_text(&o.parts),
            finish_reason: o.finish_reason.as_ref().map(|f| f.as_str()),
            model: &o.model,
            provider: &o.provider,
            usage: usage.into(),
            cost_microusd: cost,
            latency_ms: ms(o.latency),
            ttft_ms: o.ttft.map(ms),
            attempts: &attempts,
        }),
        Some(ChatFailure::Cancelled) => {
            Err(RpcError::new(ErrorCode::Cancelled, "the chat call was cancelled").with_data(&data(None, o.delivered)))
        }
        Some(ChatFailure::UnknownRoute(name)) => {
            #[derive(Serialize)]
            struct D<'a> {
                model: &'a str,
            }
            Err(RpcError::invalid_params(format!(
                "unknown model `{}`: not a route, alias, provider/model or listed model (see models.list)",
                name.chars().take(128).collect::<String>()
            ))
            .with_data(&D { model: name }))
        }
        Some(ChatFailure::KeyMissing { provider }) => {
            #[derive(Serialize)]
            struct D<'a> {
                provider: &'a str,
                attempts: &'a [Attempt],
            }
            Err(RpcError::new(
                ErrorCode::KeyMissing,
                format!(
                    "no key for provider `{provider}`: add one with `llm-sidecar keys add {provider}` or set its key_env variable"
                ),
            )
            .with_data(&D { provider, attempts: &o.attempts }))
        }
        Some(ChatFailure::VaultLocked { provider }) => {
            #[derive(Serialize)]
            struct D<'a> {
                provider: &'a str,
            }
            Err(RpcError::new(ErrorCode::VaultLocked, "the vault is locked; unlock it with `llm-sidecar vault unlock`")
                .with_data(&D { provider }))
        }
        Some(ChatFailure::Unsupported { provider, feature }) => {
            #[derive(Serialize)]
            struct D<'a> {
                provider: &'a str,
                feature: &'a str,
            }
            Err(RpcError::invalid_params(format!("provider `{provider}` does not support {feature}"))
                .with_data(&D { provider, feature }))
        }
        Some(ChatFailure::Provider { provider, status, message, after_first_chunk }) => {
            let mut d = data(*status, *after_first_chunk);
            d.provider = provider;
            Err(RpcError::new(ErrorCode::ProviderError, format!("{provider}: {message}")).with_data(&d))
        }
    }
}

/// The cost of `usage` at the target's price, else the reported model's; 0 when unpriced.
fn price_usage(c: &Call, provider: &str, target_model: &str, model: &str, usage: &TokenUsage) -> i64 {
    let price = {
        let prices = c.state.prices();
        prices.lookup(provider, target_model).or_else(|| prices.lookup(provider, model))
    };
    price.map_or(0, |p| cost_microusd(&p, usage))
}

/// A usage record of this call for one attempt's target, key source, tokens and cost (one
/// attempt, status ok: callers set what differs).
fn call_record(
    c: &Call,
    call: &ChatCall,
    provider: &str,
    target_model: &str,
    key_source: KeySource,
    usage: &TokenUsage,
    cost: i64,
) -> UsageRecord {
    let mut r = UsageRecord::new(c.conn.app(), provider, target_model);
    r.route.clone_from(&call.route);
    r.key_source = key_source;
    r.set_tokens(usage);
    r.cost_microusd = cost;
    r
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
    let token = RUNNING.lock().ok().and_then(|m| m.get(&(c.conn.id, p.id)).cloned());
    if let Some(t) = &token {
        t.cancel();
    }
    ok(&CancelResult { cancelled: token.is_some() })
}
