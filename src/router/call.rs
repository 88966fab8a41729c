//! One chat call through the router: targets × keys × retries, and one HTTP exchange per attempt.
//!
//! Deltas (text, reasoning, tool-call pieces) go straight into the caller's [`Sink`] as they are
//! decoded (in the caller's task: no channel, no wake-up of another task), and are assembled into
//! the answer's message; a delta is "delivered" once the sink took it, and from then on the call
//! can no longer fall back.
//!
//! A target whose API lacks a feature the request uses (its adapter refuses to build it, so
//! nothing is sent) is skipped as `unsupported` and the next target is tried; the call fails with
//! [`ChatFailure::Unsupported`] (the first such target) only if no other target answered or
//! failed otherwise.
//!
//! Billing: the attempt that ends the call is billed in [`ChatOutcome::usage`] (what the provider
//! reported, completed by an estimate when the call completed, was cancelled or broke after its
//! first chunk; only exact numbers for a request error). A failed attempt that delivered nothing
//! and after which the call went on (retry, next key, next target) or ran out of targets is
//! billed only if its provider reported usage for it (e.g. Anthropic's `message_start` before an
//! `overloaded_error` event, an OpenAI usage chunk before the connection broke): it is kept in
//! [`ChatOutcome::billed_failures`] with exactly those numbers. Nothing is estimated for such an
//! attempt: providers do not bill a request they refused (429, 5xx) or never reported on.

use super::{KeyChoice, Router, RouterConfig, Target};
use crate::chat::{Assembler, FinishReason, Part, Sink};
use crate::keystore::{KeyOutcome, KeyStore};
use crate::providers::{
    self, estimate_usage, transport, ChatRequest, Completion, FailureKind, Framer, ProviderError, ProviderSpec,
    StreamSummary,
};
use crate::usage_record::{KeySource, TokenUsage};
use secrecy::ExposeSecret;
use serde::Serialize;
use std::time::Duration;
// The tokio clock, so that waits and deadlines follow a paused clock in tests.
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long to wait for the end of a body after the stream's terminal marker before giving up on
/// reusing the connection.
const DRAIN_AFTER_END: Duration = Duration::from_millis(500);

/// What the app asked for.
#[derive(Debug, Clone)]
pub struct ChatCall {
    /// Route, alias, `provider/model`, or a model listed by one provider.
    pub route: String,
    pub request: ChatRequest,
    pub stream: bool,
    /// The targets to try (the policy's allowed subset of the route); `None` resolves `route`.
    pub targets: Option<Vec<Target>>,
}

/// One try of one target, as reported to the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub provider: String,
    pub model: String,
    pub outcome: AttemptOutcome,
    pub status: Option<u16>,
    pub ms: u64,
}

/// How one attempt ended (snake_case on the wire): a request that was made (`ok`, `cancelled`,
/// or the [`FailureKind`]), or a target skipped without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Ok,
    Cancelled,
    KeyMissing,
    VaultLocked,
    Cooldown,
    Deadline,
    /// The tier does not allow the target (set by admission).
    SkippedTier,
    #[serde(untagged)]
    Failed(FailureKind),
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::KeyMissing => "key_missing",
            AttemptOutcome::VaultLocked => "vault_locked",
            AttemptOutcome::Cooldown => "cooldown",
            AttemptOutcome::Deadline => "deadline",
            AttemptOutcome::SkippedTier => "skipped_tier",
            AttemptOutcome::Failed(k) => k.as_str(),
        }
    }

    /// Whether the target was skipped without a request.
    pub fn skipped(self) -> bool {
        matches!(
            self,
            AttemptOutcome::KeyMissing
                | AttemptOutcome::VaultLocked
                | AttemptOutcome::Cooldown
                | AttemptOutcome::Deadline
                | AttemptOutcome::SkippedTier
        )
    }
}

/// Why a call did not complete.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatFailure {
    UnknownRoute(String),
    /// No key for any target (the first target's provider).
    KeyMissing {
        provider: String,
    },
    VaultLocked {
        provider: String,
    },
    Cancelled,
    /// The request uses a feature the provider's API lacks (nothing was sent).
    Unsupported {
        provider: String,
        feature: &'static str,
    },
    /// The provider failed the call: the last attempt's error (redacted), kept whole so each
    /// front door can map it (status, retry hint, kind).
    Provider {
        provider: String,
        error: ProviderError,
        after_first_chunk: bool,
    },
    /// The call's deadline passed before any provider answered.
    Deadline {
        provider: String,
    },
}

/// Everything the API layer needs to answer and bill the call.
#[derive(Debug, Clone, Default)]
pub struct ChatOutcome {
    pub result: Option<ChatFailure>,
    /// The assistant message (what was received, when the call failed or was cancelled).
    pub parts: Vec<Part>,
    pub finish_reason: Option<FinishReason>,
    /// The cost the provider reported for the ending attempt, in micro-dollars.
    pub provider_cost_microusd: Option<i64>,
    /// The target of the last attempt that reached a provider.
    pub provider: String,
    pub target_model: String,
    /// The model the provider reported, else the target's.
    pub model: String,
    pub key_source: Option<KeySource>,
    /// Tokens billed (exact or estimated); `None` when nothing was billed.
    pub usage: Option<TokenUsage>,
    pub latency: Duration,
    pub ttft: Option<Duration>,
    pub attempts: Vec<Attempt>,
    /// Failed attempts, other than the one that ended the call, whose provider reported usage
    /// (in attempt order; see the module docs). Never overlaps `usage`.
    pub billed_failures: Vec<BilledAttempt>,
    /// At least one delta reached the app.
    pub delivered: bool,
}

/// A failed attempt the provider reported usage for, although the call went on without it.
#[derive(Debug, Clone, PartialEq)]
pub struct BilledAttempt {
    /// Its index in [`ChatOutcome::attempts`].
    pub attempt: usize,
    pub provider: String,
    pub target_model: String,
    /// The model the provider reported, else the target's.
    pub model: String,
    pub key_source: KeySource,
    /// Exactly what the provider reported: `estimated` is set when only the input side was
    /// reported (Anthropic's `message_start`); `output` is then 0, never guessed.
    pub usage: TokenUsage,
    /// The failure, as in the attempt's `outcome`.
    pub outcome: FailureKind,
    /// How long the attempt took.
    pub ms: u64,
}

enum End {
    Ok,
    Cancelled,
    Failed(ProviderError),
}

struct Attempted {
    end: End,
    content: Assembler,
    summary: StreamSummary,
    /// The request was sent (so the provider may bill the prompt).
    sent: bool,
    delivered: bool,
    ttft: Option<Duration>,
}

impl Router {
    /// Runs `call` to completion, failure or cancellation. Deltas go to `chunks` when streaming.
    pub async fn chat(
        &self,
        call: &ChatCall,
        store: &dyn KeyStore,
        chunks: Option<&mut dyn Sink>,
        cancel: &CancellationToken,
    ) -> ChatOutcome {
        let start = Instant::now();
        let mut out = self.chat_inner(call, store, chunks, cancel, start).await;
        out.latency = start.elapsed();
        out
    }

    async fn chat_inner(
        &self,
        call: &ChatCall,
        store: &dyn KeyStore,
        mut chunks: Option<&mut dyn Sink>,
        cancel: &CancellationToken,
        start: Instant,
    ) -> ChatOutcome {
        let mut out = ChatOutcome::default();
        let Some(targets) = call.targets.clone().or_else(|| self.resolve(&call.route)) else {
            out.result = Some(ChatFailure::UnknownRoute(call.route.clone()));
            return out;
        };
        let deadline = start + RouterConfig::ms(self.settings.deadline_ms);
        let max_retry_after = RouterConfig::ms(self.settings.max_retry_after_ms);
        let all_cooling = targets.iter().all(|t| self.cooling(t, start));
        let mut last_failure: Option<ChatFailure> = None;
        let mut missing: Option<String> = None;
        let mut locked: Option<String> = None;
        let mut unsupported: Option<(String, &'static str)> = None;

        'targets: for target in &targets {
            let Some(spec) = self.providers.get(&target.provider) else { continue };
            if !all_cooling && self.cooling(target, Instant::now()) {
                out.attempts.push(skipped(target, AttemptOutcome::Cooldown));
                continue;
            }
            let (keys, was_locked) = self.keys_for(spec, store);
            if keys.is_empty() {
                if was_locked {
                    locked.get_or_insert_with(|| target.provider.clone());
                } else {
                    missing.get_or_insert_with(|| target.provider.clone());
                }
                out.attempts.push(skipped(
                    target,
                    if was_locked { AttemptOutcome::VaultLocked } else { AttemptOutcome::KeyMissing },
                ));
                continue;
            }
            for key in &keys {
                let mut retries = 0u32;
                loop {
                    if cancel.is_cancelled() {
                        out.result = Some(ChatFailure::Cancelled);
                        return out;
                    }
                    if Instant::now() >= deadline {
                        out.attempts.push(skipped(target, AttemptOutcome::Deadline));
                        break 'targets;
                    }
                    let t0 = Instant::now();
                    // A reborrow for this attempt (the cast shortens the sink's lifetime to it).
                    let sink = chunks.as_mut().map(|s| &mut **s as &mut dyn Sink);
                    let a = self.attempt(spec, target, key, call, sink, cancel, deadline, start).await;
                    let ms = crate::clock::millis(t0.elapsed());
                    out.provider.clone_from(&target.provider);
                    out.target_model.clone_from(&target.model);
                    out.model = a.summary.model.clone().unwrap_or_else(|| target.model.clone());
                    out.key_source = Some(key.source);
                    out.delivered |= a.delivered;
                    out.ttft = out.ttft.or(a.ttft);
                    match a.end {
                        End::Ok => {
                            out.attempts.push(attempt(target, AttemptOutcome::Ok, None, ms));
                            if key.source != KeySource::Local {
                                store.report(&key.id, KeyOutcome::Ok);
                            }
                            self.note_success(target);
                            out.usage = Some(settle_usage(&call.request, &a.summary, &a.content));
                            out.finish_reason = a.summary.finish_reason;
                            out.provider_cost_microusd = a.summary.provider_cost_microusd;
                            out.parts = a.content.into_parts();
                            return out;
                        }
                        End::Cancelled => {
                            out.attempts.push(attempt(target, AttemptOutcome::Cancelled, None, ms));
                            if a.sent {
                                out.usage = Some(settle_usage(&call.request, &a.summary, &a.content));
                            }
                            out.parts = a.content.into_parts();
                            out.result = Some(ChatFailure::Cancelled);
                            return out;
                        }
                        End::Failed(err) => {
                            let err = match &key.secret {
                                Some(s) => err.redact(s.expose_secret()),
                                None => err,
                            };
                            out.attempts.push(attempt(target, AttemptOutcome::Failed(err.kind()), err.status(), ms));
                            if let ProviderError::Unsupported { feature } = err {
                                // Nothing was sent: another target may take the feature.
                                unsupported.get_or_insert((target.provider.clone(), feature));
                                continue 'targets;
                            }
                            tracing::debug!(target = %target, key = %key.id, error = %err, delivered = a.delivered, "attempt failed");
                            let failure = ChatFailure::Provider {
                                provider: target.provider.clone(),
                                error: err.clone(),
                                after_first_chunk: a.delivered,
                            };
                            if a.delivered {
                                // The app has part of the answer: no retry, no fallback.
                                out.usage = Some(settle_usage(&call.request, &a.summary, &a.content));
                                out.finish_reason = a.summary.finish_reason;
                                out.parts = a.content.into_parts();
                                out.result = Some(failure);
                                return out;
                            }
                            if !err.is_auth() && !err.is_retryable() {
                                // A request error fails the same everywhere: do not fall back.
                                out.usage = a.summary.usage.filter(|u| !u.estimated);
                                out.result = Some(failure);
                                return out;
                            }
                            // The call goes on (or runs out of targets) without this attempt.
                            if let Some(usage) = reported_usage(&a.summary) {
                                out.billed_failures.push(BilledAttempt {
                                    attempt: out.attempts.len().saturating_sub(1),
                                    provider: target.provider.clone(),
                                    target_model: target.model.clone(),
                                    model: out.model.clone(),
                                    key_source: key.source,
                                    usage,
                                    outcome: err.kind(),
                                    ms,
                                });
                            }
                            if err.is_auth() {
                                store.report(&key.id, KeyOutcome::Invalid);
                                tracing::warn!(provider = %target.provider, key = %key.id, "provider rejected the key");
                                last_failure = Some(failure);
                                break; // next key, then next target
                            }
                            last_failure = Some(failure);
                            self.note_failure(target);
                            if retries >= self.settings.max_retries {
                                continue 'targets;
                            }
                            let wait = match err.retry_after() {
                                Some(w) if w > max_retry_after => continue 'targets,
                                Some(w) => w,
                                None => self.backoff(retries),
                            };
                            if Instant::now() + wait >= deadline {
                                continue 'targets;
                            }
                            retries += 1;
                            tokio::select! {
                                _ = cancel.cancelled() => {
                                    out.result = Some(ChatFailure::Cancelled);
                                    return out;
                                }
                                _ = tokio::time::sleep(wait) => {}
                            }
                        }
                    }
                }
            }
        }
        out.result = Some(match (last_failure, unsupported, locked, missing) {
            (Some(f), ..) => f,
            (None, Some((provider, feature)), ..) => ChatFailure::Unsupported { provider, feature },
            (None, None, Some(provider), _) => ChatFailure::VaultLocked { provider },
            (None, None, None, Some(provider)) => ChatFailure::KeyMissing { provider },
            (None, None, None, None) => {
                ChatFailure::Deadline { provider: targets.first().map(|t| t.provider.clone()).unwrap_or_default() }
            }
        });
        out
    }

    /// One HTTP exchange with one target and key.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        spec: &ProviderSpec,
        target: &Target,
        key: &KeyChoice,
        call: &ChatCall,
        mut chunks: Option<&mut dyn Sink>,
        cancel: &CancellationToken,
        deadline: Instant,
        start: Instant,
    ) -> Attempted {
        let mut a = Attempted {
            end: End::Ok,
            content: Assembler::default(),
            summary: StreamSummary::default(),
            sent: false,
            delivered: false,
            ttft: None,
        };
        let adapter = providers::for_spec(spec);
        let request = match adapter.build(spec, &target.model, &call.request, call.stream, key.secret.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                a.end = End::Failed(e);
                return a;
            }
        };
        let first_byte = RouterConfig::ms(self.settings.first_byte_timeout_ms)
            .min(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)));
        let idle = RouterConfig::ms(self.settings.idle_timeout_ms);
        a.sent = true;
        let sent = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                a.end = End::Cancelled;
                return a;
            }
            r = self.transport.send(adapter, request, first_byte, idle) => r,
        };
        let mut body = match sent {
            Ok(b) => b,
            Err(e) => {
                a.end = End::Failed(e);
                return a;
            }
        };
        if !call.stream {
            let read = tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    a.end = End::Cancelled;
                    return a;
                }
                r = body.read_all(transport::MAX_BODY) => r,
            };
            let bytes = match read {
                Ok(bytes) => bytes,
                Err(e) => {
                    a.end = End::Failed(e);
                    return a;
                }
            };
            match adapter.parse_body(&bytes) {
                Ok(Completion { parts, finish_reason, model, usage, provider_cost_microusd }) => {
                    for p in parts {
                        a.content.push_part(p);
                    }
                    a.summary = StreamSummary { finish_reason, model, usage, provider_cost_microusd };
                    a.ttft = Some(start.elapsed());
                }
                Err(e) => {
                    // Refused, yet maybe billed: keep what the body reports, so it is charged.
                    a.summary.usage = providers::parse_json(&bytes).ok().and_then(|v| adapter.body_usage(&v));
                    a.end = End::Failed(e);
                }
            }
            return a;
        }

        let mut framer = Framer::new(adapter.framing());
        let mut decoder = adapter.decoder();
        let mut frames = Vec::new();
        let mut deltas = Vec::new();
        let mut ended_at: Option<Instant> = None;
        loop {
            let piece = if let Some(t) = ended_at {
                // Terminal marker seen: read to the end so the connection can be reused, briefly.
                match tokio::time::timeout(DRAIN_AFTER_END.saturating_sub(t.elapsed()), body.next()).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) | Err(_) => break,
                }
            } else {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => {
                        a.summary = decoder.summary();
                        a.end = End::Cancelled;
                        return a;
                    }
                    r = body.next() => match r {
                        Ok(p) => p,
                        Err(e) => {
                            a.summary = decoder.summary();
                            a.end = End::Failed(e);
                            return a;
                        }
                    },
                }
            };
            let eof = piece.is_none();
            let framed = match piece {
                Some(bytes) => framer.feed(&bytes, &mut frames),
                None => framer.finish(&mut frames),
            };
            if let Err(e) = framed {
                a.summary = decoder.summary();
                a.end = End::Failed(e);
                return a;
            }
            for frame in frames.drain(..) {
                if let Err(e) = decoder.on_frame(&frame, &mut deltas) {
                    a.summary = decoder.summary();
                    a.end = End::Failed(e);
                    return a;
                }
                for delta in deltas.drain(..) {
                    a.content.push(&delta);
                    if let Some(sink) = chunks.as_deref_mut() {
                        let sent = tokio::select! {
                            biased;
                            _ = cancel.cancelled() => false,
                            () = sink.send(delta) => true,
                        };
                        if !sent {
                            // Cancelled (the app went away, or asked).
                            a.summary = decoder.summary();
                            a.end = End::Cancelled;
                            return a;
                        }
                        a.delivered = true;
                    }
                    if a.ttft.is_none() {
                        a.ttft = Some(start.elapsed());
                    }
                }
            }
            if eof {
                break;
            }
            if ended_at.is_none() && decoder.finished() {
                ended_at = Some(Instant::now());
            }
        }
        a.summary = decoder.summary();
        if !decoder.finished() && a.summary.finish_reason.is_none() {
            a.end = End::Failed(ProviderError::Transport("the stream ended before its end marker".into()));
        }
        a
    }
}

/// The usage to bill: the provider's, with an estimate filling what it did not report.
fn settle_usage(req: &ChatRequest, summary: &StreamSummary, content: &Assembler) -> TokenUsage {
    let content = content.chars();
    match summary.usage {
        Some(u) if !u.estimated => u,
        Some(partial) => {
            // Exact input is known (e.g. Anthropic's message_start); estimate the output only.
            let est = estimate_usage(req, content);
            TokenUsage { output: partial.output.max(est.output), estimated: true, ..partial }
        }
        None => estimate_usage(req, content),
    }
}

/// What the provider reported for a failed attempt, as it reported it (no estimate); `None`
/// when it reported nothing or only zeros.
fn reported_usage(summary: &StreamSummary) -> Option<TokenUsage> {
    summary.usage.filter(|u| u.input > 0 || u.output > 0 || u.cached > 0 || u.cache_write > 0 || u.reasoning > 0)
}

fn attempt(target: &Target, outcome: AttemptOutcome, status: Option<u16>, ms: u64) -> Attempt {
    Attempt { provider: target.provider.clone(), model: target.model.clone(), outcome, status, ms }
}

fn skipped(target: &Target, why: AttemptOutcome) -> Attempt {
    attempt(target, why, None, 0)
}
