//! The chat service: one call from any front door (RPC, HTTP faces, CLI through the RPC),
//! admitted, routed, streamed, priced, metered and settled.
//!
//! [`run`] does, in order: validation of the request, admission (tier gate on targets and on
//! features — tools, images, documents —, rate limit, quota reservation of the call's bound at
//! each target), the router's call (deltas go straight from the router into the caller's
//! [`Sink`] as they are decoded: no channel or task in between), pricing (the provider's own cost
//! when it reports one, else the price table), the usage records, one durable ledger commit, and
//! the policy's settlement. Faces only map their dialect onto
//! [`Request`] and the [`Answer`] / [`ChatError`] back.
//!
//! Invariants:
//! - every call that completed, was cancelled, or failed after tokens were billed commits exactly
//!   one usage record for the attempt that ended it, plus one `error` record per earlier failed
//!   attempt its provider reported usage for, all in one durable ledger batch before [`run`]
//!   returns; the reservation is released when they are visible;
//! - all deltas reach the sink before [`run`] returns;
//! - if a provider reports more tokens than the call reserved for its target, the record keeps
//!   the actual numbers and `usage.overshoot` is emitted;
//! - nothing here sees a key: the router picks keys and redacts provider messages.

pub use super::Sink;
use super::{ChatRequest, FinishReason, Part, Target};
use crate::events::EventKind;
use crate::keystore::{KeyStore, NoKeys};
use crate::policy::{AdmitRequest, Admitted, Amount, Features, Refusal};
use crate::pricing::cost_microusd;
use crate::providers::ProviderError;
use crate::router::{Attempt, AttemptOutcome, ChatCall, ChatFailure, ChatOutcome, Router};
use crate::state::State;
use crate::usage_record::{CallStatus, KeySource, TokenUsage, UsageRecord};
use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Who is calling: the app name records, rate limits and policy use.
#[derive(Debug, Clone)]
pub struct Caller {
    pub app: String,
}

/// One chat call, in the domain's terms.
#[derive(Debug, Clone)]
pub struct Request {
    /// Route, alias, `provider/model`, or a model listed by one provider.
    pub route: String,
    pub chat: ChatRequest,
    pub stream: bool,
}

/// Where a call's cost comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CostSource {
    /// The daemon's price table.
    Table,
    /// The provider's own report (OpenRouter's `usage.cost`).
    Provider,
    /// The model has no price: the cost is recorded as 0.
    #[default]
    Unknown,
}

/// One attempt as reported: the router's, plus the usage and cost of a failed attempt that was
/// billed on its own record.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptReport {
    #[serde(flatten)]
    pub attempt: Attempt,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_microusd: Option<i64>,
}

/// What a call produced: the whole answer, or what was received before it failed or was
/// cancelled.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// The assistant message (text, thinking and tool-call parts).
    pub parts: Vec<Part>,
    pub finish_reason: Option<FinishReason>,
    pub provider: String,
    /// The model the provider reported, else the target's.
    pub model: String,
    pub usage: TokenUsage,
    pub cost_microusd: i64,
    pub cost_source: CostSource,
    pub latency: Duration,
    pub ttft: Option<Duration>,
    pub attempts: Vec<AttemptReport>,
    /// At least one delta reached the sink.
    pub delivered: bool,
}

/// Why a call did not answer.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("{0}")]
    Invalid(String),
    /// Admission refused the call (tier, rate limit, quota).
    #[error("refused by the policy")]
    Refused(Refusal),
    #[error("unknown model `{0}`")]
    UnknownRoute(String),
    #[error("no key for provider `{provider}`")]
    KeyMissing { provider: String, attempts: Vec<Attempt> },
    #[error("the vault is locked")]
    VaultLocked { provider: String },
    #[error("provider `{provider}` does not support {feature}")]
    Unsupported { provider: String, feature: &'static str },
    #[error("the call was cancelled")]
    Cancelled(Box<Answer>),
    #[error("{provider}: {error}")]
    Provider { provider: String, error: ProviderError, after_first_chunk: bool, answer: Box<Answer> },
    #[error("the call's deadline passed before any provider answered")]
    Deadline { provider: String, answer: Box<Answer> },
    /// The usage records could not be stored; the call was not billed.
    #[error("the usage record could not be stored; the call was not billed")]
    NotRecorded,
}

/// Runs one call to its answer or error (see the module docs). `sink` receives the deltas of a
/// streamed call; `cancel` aborts it (it then ends in [`ChatError::Cancelled`], billed).
pub async fn run(
    state: &State,
    caller: &Caller,
    req: Request,
    sink: Option<&mut dyn Sink>,
    cancel: &CancellationToken,
) -> Result<Answer, ChatError> {
    req.chat.validate().map_err(ChatError::Invalid)?;
    let mut call =
        ChatCall { route: req.route, request: req.chat, stream: req.stream && sink.is_some(), targets: None };
    // One router for the whole call: a config reload meanwhile does not change it.
    let router = state.router();
    let (admitted, bounds) = admit(state, &router, &caller.app, &mut call).map_err(ChatError::Refused)?;
    // A tier without BYOK uses no vault keys (platform and local keys only).
    let keys: &dyn KeyStore = if admitted.byok_allowed { state.keys.as_ref() } else { &NoKeys };
    let sink = if call.stream { sink } else { None };
    let mut outcome = router.chat(&call, keys, sink, cancel).await;
    let skipped = admitted.skipped.iter().map(|t| Attempt {
        provider: t.provider.clone(),
        model: t.model.clone(),
        outcome: AttemptOutcome::SkippedTier,
        status: None,
        ms: 0,
    });
    let shift = admitted.skipped.len();
    outcome.attempts.splice(0..0, skipped);
    for b in &mut outcome.billed_failures {
        b.attempt += shift;
    }
    finish(state, caller, &call, outcome, admitted, &bounds).await
}

/// A prompt's token count without a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenCount {
    pub input_tokens: u64,
    /// The daemon's upper bound (see [`ChatRequest::prompt_token_bound`]), not a provider's count.
    pub estimated: bool,
    /// The target whose provider counted (`None` when estimated).
    pub counted_by: Option<Target>,
}

/// The input tokens of `chat` at `route`: the provider's own count where its wire format has one
/// (the first such target the caller's tiers allow, with the keys the active tier may use), else
/// the most prompt tokens any of the route's targets can bill for it (the bound a quota
/// reserves). Not billed.
pub async fn count_tokens(
    state: &State,
    caller: &Caller,
    route: &str,
    chat: &ChatRequest,
) -> Result<TokenCount, ChatError> {
    chat.validate().map_err(ChatError::Invalid)?;
    let router = state.router();
    let targets = router.resolve(route).ok_or_else(|| ChatError::UnknownRoute(route.to_string()))?;
    let keys: &dyn KeyStore = if state.policy.byok_allowed() { state.keys.as_ref() } else { &NoKeys };
    let allowed: Vec<Target> = targets
        .iter()
        .filter(|t| state.policy.model_allowed_for(&caller.app, &t.provider, &t.model))
        .cloned()
        .collect();
    if let Some((t, n)) = router.count_tokens(&allowed, chat, keys).await {
        return Ok(TokenCount { input_tokens: n, estimated: false, counted_by: Some(t) });
    }
    let bound = targets
        .iter()
        .map(|t| chat.prompt_token_bound(media_bound(&router, t)))
        .max()
        .unwrap_or_else(|| chat.prompt_token_bound(Default::default()));
    Ok(TokenCount { input_tokens: bound, estimated: true, counted_by: None })
}

/// What an image and a PDF page can cost at `t` (the adapter's published maxima).
fn media_bound(router: &Router, t: &Target) -> crate::chat::bound::MediaBound {
    router
        .providers()
        .get(&t.provider)
        .map(|spec| crate::providers::for_spec(spec).media_bound(&t.model))
        .unwrap_or_default()
}

/// The worst case of a call at `target`: `tokens_in` prompt tokens + `tokens_out` output, one
/// request, and its cost at the table's price.
pub fn worst(state: &State, target: &Target, tokens_in: u64, tokens_out: u64) -> Amount {
    let usage = TokenUsage { input: tokens_in, output: tokens_out, ..TokenUsage::default() };
    let cost = state.prices().lookup(&target.provider, &target.model).map_or(0, |p| cost_microusd(&p, &usage));
    Amount { tokens: tokens_in.saturating_add(tokens_out), requests: 1, cost_microusd: cost }
}

/// Whether the user has an own (vault) key for `provider`.
pub fn has_byok(state: &State, provider: &str) -> bool {
    state.keys.keys_for(provider).is_ok_and(|keys| keys.iter().any(|k| k.source == KeySource::Byok))
}

/// The features of a request that tiers gate.
pub fn features(req: &ChatRequest) -> Features {
    let mut tools: Vec<String> = req.tools.iter().map(|t| t.name.clone()).collect();
    for m in &req.messages {
        for p in &m.content {
            if let Part::ToolCall { name, .. } = p {
                if !tools.contains(name) {
                    tools.push(name.clone());
                }
            }
        }
    }
    Features { tools, uses_tools: req.uses_tools(), images: req.has_images(), documents: req.has_documents() }
}

/// Admission: restricts `call.targets` to what the tier allows, or refuses. Returns the token
/// bound reserved at each target (for the overshoot check).
fn admit(
    state: &State,
    router: &Router,
    app: &str,
    call: &mut ChatCall,
) -> Result<(Admitted, HashMap<Target, u64>), Refusal> {
    let Some(targets) = router.resolve(&call.route) else {
        return Ok((crate::policy::Policy::pass_through(), HashMap::new())); // the router reports it
    };
    // The reservation must bound what the call can cost: the prompt's token bound at each
    // target, and an output limit the provider is told. With tiers on, a call without
    // `max_tokens` gets the default.
    let rules = state.policy.rules();
    if call.request.max_tokens.is_none() && !rules.tiers.is_empty() {
        call.request.max_tokens = Some(rules.settings.default_max_tokens);
    }
    // Reasoning is output, and an adapter may raise the output limit to fit the thinking budget
    // (Anthropic requires max_tokens above it): reserve both.
    let output = u64::from(call.request.max_tokens.unwrap_or(rules.settings.default_max_tokens))
        .saturating_add(call.request.reasoning.map_or(0, |r| u64::from(r.budget().max(1024))));
    let mut bounds = HashMap::new();
    let amounts = targets
        .iter()
        .map(|t| {
            let input = call.request.prompt_token_bound(media_bound(router, t));
            bounds.insert(t.clone(), input.saturating_add(output));
            (t.clone(), worst(state, t, input, output))
        })
        .collect();
    let byok = |p: &str| has_byok(state, p);
    let features = features(&call.request);
    let req = AdmitRequest { app, targets: amounts, features: &features, has_byok: &byok, dry_run: false };
    let admitted = state.policy.admit(&req)?;
    call.targets = Some(admitted.targets.clone());
    Ok((admitted, bounds))
}

/// The cost of `usage` at the target's price, else the reported model's; the provider's own
/// report wins when there is one.
fn price(state: &State, target: &Target, model: &str, usage: &TokenUsage, reported: Option<i64>) -> (i64, CostSource) {
    if let Some(c) = reported {
        return (c, CostSource::Provider);
    }
    let prices = state.prices();
    match prices.lookup(&target.provider, &target.model).or_else(|| prices.lookup(&target.provider, model)) {
        Some(p) => (cost_microusd(&p, usage), CostSource::Table),
        None => (0, CostSource::Unknown),
    }
}

/// A usage record of this call for one attempt's target, key source, tokens and cost (one
/// attempt, status ok: callers set what differs).
fn call_record(
    caller: &Caller,
    call: &ChatCall,
    target: &Target,
    key_source: KeySource,
    usage: &TokenUsage,
    cost: i64,
) -> UsageRecord {
    let mut r = UsageRecord::new(caller.app.clone(), &target.provider, &target.model);
    r.route.clone_from(&call.route);
    r.key_source = key_source;
    r.set_tokens(usage);
    r.cost_microusd = cost;
    r
}

#[derive(Serialize)]
struct Overshoot<'a> {
    app: &'a str,
    provider: &'a str,
    model: &'a str,
    reserved_tokens: u64,
    actual_tokens: u64,
}

/// Bills the call (when tokens were or may have been billed, or it was cancelled), settles the
/// reservation and turns the outcome into the answer or error.
async fn finish(
    state: &State,
    caller: &Caller,
    call: &ChatCall,
    o: ChatOutcome,
    mut admitted: Admitted,
    bounds: &HashMap<Target, u64>,
) -> Result<Answer, ChatError> {
    let usage = o.usage.unwrap_or_default();
    let target = Target { provider: o.provider.clone(), model: o.target_model.clone() };
    let (cost, cost_source) = price(state, &target, &o.model, &usage, o.provider_cost_microusd);
    let ms = crate::clock::millis;
    let status = match &o.result {
        None => CallStatus::Ok,
        Some(ChatFailure::Cancelled) => CallStatus::Cancelled,
        Some(_) => CallStatus::Error,
    };
    tracing::debug!(
        app = %caller.app,
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
            let t = Target { provider: b.provider.clone(), model: b.target_model.clone() };
            let (cost, _) = price(state, &t, &b.model, &b.usage, None);
            let mut r = call_record(caller, call, &t, b.key_source, &b.usage, cost);
            r.latency_ms = b.ms;
            r.status = CallStatus::Error;
            r.error_code = Some(b.outcome.as_str().to_string());
            r
        })
        .collect();
    let bill = o.usage.is_some() || matches!(o.result, Some(ChatFailure::Cancelled));
    if bill && !o.provider.is_empty() {
        let mut record = call_record(caller, call, &target, o.key_source.unwrap_or_default(), &usage, cost);
        record.latency_ms = ms(o.latency);
        record.ttft_ms = o.ttft.map(ms);
        record.status = status;
        record.error_code = match &o.result {
            None => None,
            Some(ChatFailure::Cancelled) => Some("cancelled".into()),
            Some(_) => Some("provider_error".into()),
        };
        let tries = o.attempts.iter().filter(|a| !a.outcome.skipped()).count();
        record.attempts = u32::try_from(tries).unwrap_or(u32::MAX).max(1);
        records.push(record);
    }
    for (r, (provider, model, u)) in records.iter().zip(
        o.billed_failures.iter().map(|b| (&b.provider, &b.target_model, b.usage)).chain(std::iter::once((
            &o.provider,
            &o.target_model,
            usage,
        ))),
    ) {
        let t = Target { provider: provider.clone(), model: model.clone() };
        let actual = u.input.saturating_add(u.output);
        if let Some(&reserved) = bounds.get(&t).filter(|&&b| actual > b && !u.estimated) {
            tracing::warn!(provider = %t.provider, model = %t.model, reserved, actual, id = %r.id, "usage above the reserved bound");
            state.events.emit(
                EventKind::UsageOvershoot,
                &Overshoot {
                    app: &caller.app,
                    provider: &t.provider,
                    model: &t.model,
                    reserved_tokens: reserved,
                    actual_tokens: actual,
                },
            );
        }
    }
    let committed = if records.is_empty() {
        Ok(())
    } else {
        // Overage and quotas count these records like any other (the ledger's counters are the
        // quota's source); the reservation is released the moment they are visible there.
        state.policy.charge_overage(&admitted, &mut records);
        for r in &mut records {
            state.policy.stamp(r);
        }
        // A call paid with credits: its deduction goes into the same transaction.
        let deduction = state.policy.credit_deduction(&admitted, &records).into_iter().collect();
        let release = admitted.release_when_applied();
        state.ledger.commit_call(&records, deduction, release).await.map(drop)
    };
    state.policy.settle(admitted);
    if let Err(e) = committed {
        tracing::error!("usage records not committed: {e}");
        return Err(ChatError::NotRecorded);
    }
    let mut attempts: Vec<AttemptReport> =
        o.attempts.iter().map(|a| AttemptReport { attempt: a.clone(), usage: None, cost_microusd: None }).collect();
    for (b, r) in o.billed_failures.iter().zip(&records) {
        if let Some(a) = attempts.get_mut(b.attempt) {
            a.usage = Some(b.usage);
            a.cost_microusd = Some(r.cost_microusd);
        }
    }
    let answer = Answer {
        parts: o.parts,
        finish_reason: o.finish_reason,
        provider: o.provider,
        model: o.model,
        usage,
        cost_microusd: cost,
        cost_source,
        latency: o.latency,
        ttft: o.ttft,
        attempts,
        delivered: o.delivered,
    };
    match o.result {
        None => Ok(answer),
        Some(ChatFailure::Cancelled) => Err(ChatError::Cancelled(Box::new(answer))),
        Some(ChatFailure::UnknownRoute(name)) => Err(ChatError::UnknownRoute(name)),
        Some(ChatFailure::KeyMissing { provider }) => Err(ChatError::KeyMissing { provider, attempts: o.attempts }),
        Some(ChatFailure::VaultLocked { provider }) => Err(ChatError::VaultLocked { provider }),
        Some(ChatFailure::Unsupported { provider, feature }) => Err(ChatError::Unsupported { provider, feature }),
        Some(ChatFailure::Provider { provider, error, after_first_chunk }) => {
            Err(ChatError::Provider { provider, error, after_first_chunk, answer: Box::new(answer) })
        }
        Some(ChatFailure::Deadline { provider }) => Err(ChatError::Deadline { provider, answer: Box::new(answer) }),
    }
}
