//! `quota.status` and `quota.check`, and the admission step of `chat` (tier gate, rate limit,
//! quota reservation) turned into the protocol's errors (`tier_required`, `rate_limited`,
//! `quota_exceeded`, design §3).

use super::{ok, Call, Method};
use crate::chat::service::{has_byok, worst};
use crate::policy::{AdmitRequest, Features, Refusal};
use crate::rpc::{Encoded, ErrorCode, RpcError};
use crate::state::State;
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
        Refusal::TierRequired { required_tier, provider, model, feature, app } => {
            #[derive(Serialize)]
            struct D<'a> {
                required_tier: &'a Option<String>,
                provider: &'a str,
                model: &'a str,
                #[serde(skip_serializing_if = "Option::is_none")]
                feature: &'a Option<String>,
                upgrade: Option<String>,
                #[serde(skip_serializing_if = "Option::is_none")]
                app: &'a Option<String>,
            }
            let hint = match required_tier {
                Some(t) => format!("; the `{t}` tier allows it"),
                None => "; no tier allows it".into(),
            };
            let what = match feature.as_deref() {
                Some(f) => match f.strip_prefix("tool:") {
                    Some(name) => format!("the tool `{name}`"),
                    None => f.to_string(),
                },
                None => format!("{provider}/{model}"),
            };
            let upgrade = required_tier.as_deref().map(|t| upgrade_hint(t, backend));
            let whose = match app {
                Some(a) => format!("the tier set for the app `{a}` in [apps]"),
                None => "your tier".into(),
            };
            RpcError::new(ErrorCode::TierRequired, format!("{whose} does not allow {what}{hint}")).with_data(&D {
                required_tier,
                provider,
                model,
                feature,
                upgrade,
                app,
            })
        }
        Refusal::RateLimited { retry_after_ms, limit, app } => {
            #[derive(Serialize)]
            struct D<'a> {
                retry_after_ms: u64,
                limit: u32,
                #[serde(skip_serializing_if = "Option::is_none")]
                app: &'a Option<String>,
            }
            let whose = app.as_ref().map(|a| format!(" (the app `{a}`'s limit)")).unwrap_or_default();
            RpcError::new(
                ErrorCode::RateLimited,
                format!("more than {limit} requests per minute{whose}; retry in {retry_after_ms} ms"),
            )
            .with_data(&D { retry_after_ms: *retry_after_ms, limit: *limit, app })
        }
        Refusal::QuotaExceeded { metric, limit, used, remaining, period_start, period_end, app } => {
            #[derive(Serialize)]
            struct D<'a> {
                metric: &'static str,
                limit: i64,
                used: i64,
                remaining: i64,
                period_start: &'a str,
                period_end: &'a str,
                #[serde(skip_serializing_if = "Option::is_none")]
                app: &'a Option<String>,
            }
            let whose = app.as_ref().map(|a| format!("the app `{a}`'s")).unwrap_or_else(|| "the".into());
            RpcError::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "this call would pass {whose} {} quota ({used} of {limit} used, {remaining} left) until {period_end}",
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
                app,
            })
        }
        Refusal::InsufficientCredits { balance, required } => {
            /// Where to buy credits: the method that asks the backend for a credit-pack
            /// checkout link, and the link itself (`url`, added by `api::chat_error` when the
            /// backend gives one in time); nil without a backend.
            #[derive(Serialize)]
            struct Checkout {
                method: &'static str,
                params: serde_json::Value,
            }
            #[derive(Serialize)]
            struct D {
                balance: i64,
                required: i64,
                checkout: Option<Checkout>,
            }
            let checkout = backend
                .then(|| Checkout { method: "account.checkout_url", params: serde_json::json!({ "kind": "credits" }) });
            let how = if backend {
                "; buy credits with the link from `account.checkout_url {kind: \"credits\"}`"
            } else {
                ""
            };
            RpcError::new(
                ErrorCode::InsufficientCredits,
                format!("this call needs up to {required} credits and {balance} are available{how}"),
            )
            .with_data(&D { balance: *balance, required: *required, checkout })
        }
    }
}

/// Whether an account backend is configured (it decides the upgrade hint of `tier_required`).
pub(super) fn has_backend(state: &State) -> bool {
    state.policy.rules().account.url.is_some()
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
    let features = Features::default();
    let req = AdmitRequest {
        app: &app,
        targets: targets.iter().map(|t| (t.clone(), worst(state, t, 0, tokens))).collect(),
        features: &features,
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
