//! `quota.status` and `quota.check`, and the admission step of `chat` (tier gate, rate limit,
//! quota reservation) turned into the protocol's errors (`tier_required`, `rate_limited`,
//! `quota_exceeded`, design §3).

use super::{ok, Call, Method};
use crate::policy::{AdmitRequest, Admitted, Amount, Refusal};
use crate::pricing::cost_microusd;
use crate::router::{ChatCall, Router, Target};
use crate::rpc::{Encoded, ErrorCode, RpcError};
use crate::state::State;
use crate::usage_record::{KeySource, TokenUsage};
use rmpv::Value;
use serde::{Deserialize, Serialize};

pub(super) fn methods() -> Vec<Method> {
    vec![
        Method {
            name: "quota.status",
            params: "{}",
            result: "{enabled, tier, tier_source: config|entitlement, period_start, period_end, limits: [{metric: tokens|requests|cost_microusd, limit, used, remaining, reserved, projected}], overage, requests_per_minute, byok: {allowed, counts_toward_quota, used: {tokens, requests, cost_microusd}} | nil}",
            summary: "The active tier, every limit with used/remaining/reserved and the month-end projection, and the period bounds",
            kind: "request",
            handler: Some(|c| Box::pin(status(c))),
        },
        Method {
            name: "quota.check",
            params: "{model: str, estimated_tokens?: u64}",
            result: "{allowed: true, tier, targets: [str]} | {allowed: false, tier, error: {code, message, data}}",
            summary: "Whether a chat call of about `estimated_tokens` (prompt + output) would be admitted now, or the exact error it would get",
            kind: "request",
            handler: Some(|c| Box::pin(check(c))),
        },
    ]
}

/// How to get to `tier`: from the backend (upgrade link, then the new token) or, with no
/// backend, by a token for it or the config's default tier.
fn upgrade_hint(tier: &str, backend: bool) -> String {
    if backend {
        format!(
            "upgrade to `{tier}`: open the link from `account.checkout_url` (tier `{tier}`); the new tier applies at the next `llm-sidecar account status` refresh, or log in with the new token (`llm-sidecar account login --token-file FILE`)"
        )
    } else {
        format!(
            "to use the `{tier}` tier: log in with an entitlement token for it (`llm-sidecar account login --token-file FILE`), or set `policy.default_tier = \"{tier}\"` in config.toml and run `llm-sidecar config reload`"
        )
    }
}

/// The error `chat` answers for a refusal. `backend`: whether an account backend is configured
/// (it decides the upgrade hint of `tier_required`).
pub(super) fn refusal_error(r: &Refusal, backend: bool) -> RpcError {
    match r {
        Refusal::TierRequired { required_tier, provider, model } => {
            #[derive(Serialize)]
            struct D<'a> {
                required_tier: &'a Option<String>,
                provider: &'a str,
                model: &'a str,
                upgrade: Option<String>,
            }
            let hint = match required_tier {
                Some(t) => format!("; the `{t}` tier allows it"),
                None => "; no tier allows it".into(),
            };
            let upgrade = required_tier.as_deref().map(|t| upgrade_hint(t, backend));
            RpcError::new(ErrorCode::TierRequired, format!("your tier does not allow {provider}/{model}{hint}"))
                .with_data(&D { required_tier, provider, model, upgrade })
        }
        Refusal::RateLimited { retry_after_ms, limit } => {
            #[derive(Serialize)]
            struct D {
                retry_after_ms: u64,
                limit: u32,
            }
            RpcError::new(
                ErrorCode::RateLimited,
                format!("more than {limit} requests per minute; retry in {retry_after_ms} ms"),
            )
            .with_data(&D { retry_after_ms: *retry_after_ms, limit: *limit })
        }
        Refusal::QuotaExceeded { metric, limit, used, remaining, period_start, period_end } => {
            #[derive(Serialize)]
            struct D<'a> {
                metric: &'static str,
                limit: i64,
                used: i64,
                remaining: i64,
                period_start: &'a str,
                period_end: &'a str,
            }
            RpcError::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "this call would pass the {} quota ({used} of {limit} used, {remaining} left) until {period_end}",
                    metric.as_str()
                ),
            )
            .with_data(&D {
                metric: metric.as_str(),
                limit: *limit,
                used: *used,
                remaining: *remaining,
                period_start,
                period_end,
            })
        }
    }
}

/// The worst case of `call` at `target`: prompt estimate + max output, 1 request, and its cost.
fn worst(state: &State, target: &Target, tokens_in: u64, tokens_out: u64) -> Amount {
    let usage = TokenUsage { input: tokens_in, output: tokens_out, ..TokenUsage::default() };
    let cost = state.prices().lookup(&target.provider, &target.model).map_or(0, |p| cost_microusd(&p, &usage));
    Amount { tokens: tokens_in.saturating_add(tokens_out), requests: 1, cost_microusd: cost }
}

fn has_backend(state: &State) -> bool {
    state.policy.rules().account.url.is_some()
}

fn has_byok(state: &State, provider: &str) -> bool {
    state.keys.keys_for(provider).is_ok_and(|keys| keys.iter().any(|k| k.source == KeySource::Byok))
}

/// Admission of a `chat` call: restricts `call.targets` to what the tier allows, or refuses.
pub(super) fn admit(state: &State, router: &Router, app: &str, call: &mut ChatCall) -> Result<Admitted, RpcError> {
    let Some(targets) = router.resolve(&call.route) else {
        return Ok(crate::policy::Policy::pass_through()); // the router reports it
    };
    // The reservation must bound what the call can cost: the prompt's token bound, and an output
    // limit the provider is told. With tiers on, a call without `max_tokens` gets the default.
    let media = |t: &Target| {
        router.providers().get(&t.provider).map(|spec| crate::providers::for_spec(spec).media_bound(&t.model))
    };
    let rules = state.policy.rules();
    if call.request.max_tokens.is_none() && !rules.tiers.is_empty() {
        call.request.max_tokens = Some(rules.settings.default_max_tokens);
    }
    let output = u64::from(call.request.max_tokens.unwrap_or(rules.settings.default_max_tokens));
    let byok = |p: &str| has_byok(state, p);
    let req = AdmitRequest {
        app,
        targets: targets
            .iter()
            .map(|t| {
                let input = call.request.prompt_token_bound(media(t).unwrap_or_default());
                (t.clone(), worst(state, t, input, output))
            })
            .collect(),
        has_byok: &byok,
        dry_run: false,
    };
    let admitted = state.policy.admit(&req).map_err(|r| refusal_error(&r, has_backend(state)))?;
    call.targets = Some(admitted.targets.clone());
    Ok(admitted)
}

async fn status(c: Call) -> Result<Encoded, RpcError> {
    ok(&c.state.policy.status())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckParams {
    model: String,
    estimated_tokens: Option<u64>,
}

async fn check(mut c: Call) -> Result<Encoded, RpcError> {
    let p: CheckParams = c.params()?;
    let state = &c.state;
    let Some(targets) = state.router().resolve(&p.model) else {
        return Err(RpcError::invalid_params(format!(
            "unknown model `{}`: not a route, alias, provider/model or listed model (see models.list)",
            p.model.chars().take(128).collect::<String>()
        )));
    };
    let tokens = p.estimated_tokens.unwrap_or(u64::from(state.policy.rules().settings.default_max_tokens));
    let byok = |p: &str| has_byok(state, p);
    let app = c.conn.app();
    let req = AdmitRequest {
        app: &app,
        targets: targets.iter().map(|t| (t.clone(), worst(state, t, 0, tokens))).collect(),
        has_byok: &byok,
        dry_run: true,
    };
    #[derive(Serialize)]
    struct Allowed {
        allowed: bool,
        tier: Option<String>,
        targets: Vec<String>,
    }
    #[derive(Serialize)]
    struct Refused {
        allowed: bool,
        tier: Option<String>,
        error: Value,
    }
    match state.policy.admit(&req) {
        Ok(a) => ok(&Allowed {
            allowed: true,
            tier: a.tier.clone(),
            targets: a.targets.iter().map(ToString::to_string).collect(),
        }),
        Err(r) => {
            let e = refusal_error(&r, has_backend(state));
            let error = Value::Map(vec![
                (Value::from("code"), Value::from(e.code.as_str())),
                (Value::from("message"), Value::from(e.message)),
                (Value::from("data"), e.data),
            ]);
            ok(&Refused { allowed: false, tier: state.policy.tier(), error })
        }
    }
}
