//! `account.*`: log in with an entitlement token, log out, status, refresh from the backend, and
//! checkout / billing-portal links. The token itself is never returned.

use super::{ok, Call, Method};
use crate::policy::account::{self as acct, AccountError};
use crate::policy::{Bounds, EntitlementError};
use crate::rpc::{Encoded, ErrorCode, RpcError};
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;

/// One client for the account methods, built on first use (`policy::account::client`).
static HTTP: LazyLock<Result<reqwest::Client, String>> = LazyLock::new(|| acct::client().map_err(|e| e.to_string()));

/// The longest an `insufficient_credits` refusal waits for the backend's checkout link.
pub(super) const CHECKOUT_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Puts the backend's credit-pack checkout link into `data.checkout.url` of an
/// `insufficient_credits` error (left out if the backend does not answer in [`CHECKOUT_WAIT`]).
pub(super) async fn add_credits_checkout(state: &crate::state::State, err: &mut RpcError) {
    let Ok(http) = http() else { return };
    let body = serde_json::json!({ "kind": "credits" });
    let link = acct::link(&state.policy, &state.vault, http, "checkout", body);
    let url = match tokio::time::timeout(CHECKOUT_WAIT, link).await {
        Ok(Ok(url)) => url,
        Ok(Err(e)) => {
            tracing::info!("no credit checkout link for the refusal: {e}");
            return;
        }
        Err(_) => {
            tracing::info!("no credit checkout link for the refusal: the backend did not answer in time");
            return;
        }
    };
    let rmpv::Value::Map(data) = &mut err.data else { return };
    if let Some((_, rmpv::Value::Map(checkout))) = data.iter_mut().find(|(k, _)| k.as_str() == Some("checkout")) {
        checkout.push((rmpv::Value::from("url"), rmpv::Value::from(url)));
    }
}

fn http() -> Result<&'static reqwest::Client, RpcError> {
    HTTP.as_ref().map_err(|e| RpcError::internal(e.clone()))
}

pub(super) fn methods() -> Vec<Method> {
    let m = |name, params, result, summary, handler| Method { name, params, result, summary, kind: "request", handler };
    vec![
        m(
            "account.login",
            "{token: str}",
            "{logged_in, sub, tier, period_start, period_end, expires_at}",
            "Verify and store a signed entitlement token (JWT); its tier becomes active",
            Some(|c| Box::pin(login(c))),
        ),
        m("account.logout", "{}", "{logged_out: bool, tier}", "Forget the entitlement token; the default tier applies", Some(|c| Box::pin(logout(c)))),
        m(
            "account.status",
            "{}",
            "{logged_in, sub?, tier, tier_source, period_start?, period_end?, expires_at?, backend_url?, backend_usage?: {tokens, requests, cost_microusd, period_start, fetched_at}}",
            "The entitlement in force and the backend's last usage report",
            Some(|c| Box::pin(status(c))),
        ),
        m("account.refresh", "{}", "(as account.status)", "Ask the backend for a fresh token and this period's usage now", Some(|c| Box::pin(refresh(c)))),
        m("account.checkout_url", "{tier?: str, kind?: \"tier\" | \"credits\", pack?: str}", "{url}", "A checkout link from the backend, to open in a browser: an upgrade to `tier`, or (kind \"credits\") a credit pack", Some(|c| Box::pin(checkout(c)))),
        m("account.portal_url", "{}", "{url}", "A billing-portal link from the backend, to open in a browser", Some(|c| Box::pin(portal(c)))),
    ]
}

/// The stable `reason` of a refused token.
fn reason(t: &EntitlementError) -> &'static str {
    match t {
        EntitlementError::BadSignature => "bad_signature",
        EntitlementError::Expired => "expired",
        EntitlementError::WrongAlgorithm(_) => "wrong_algorithm",
        EntitlementError::MissingClaim(_) => "missing_claim",
        EntitlementError::UnknownTier(_) => "unknown_tier",
        EntitlementError::TooLarge(_) => "too_large",
        EntitlementError::NotYetValid => "not_yet_valid",
        EntitlementError::IssuedInFuture => "issued_in_future",
        EntitlementError::WrongIssuer => "wrong_issuer",
        EntitlementError::WrongAudience => "wrong_audience",
        EntitlementError::BadLimit(..) => "bad_limit",
        EntitlementError::BadCredits => "bad_credits",
        EntitlementError::Malformed(_) | EntitlementError::NoKey => "malformed",
    }
}

fn error(e: AccountError) -> RpcError {
    #[derive(Serialize)]
    struct D {
        reason: &'static str,
        /// The current token was kept (a refused fresh token from the backend).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        kept_current: bool,
    }
    match e {
        AccountError::Token(EntitlementError::NoKey) | AccountError::NoBackend => {
            RpcError::new(ErrorCode::InvalidRequest, e.to_string())
        }
        AccountError::Token(t) => RpcError::new(ErrorCode::Unauthorized, t.to_string())
            .with_data(&D { reason: reason(&t), kept_current: false }),
        AccountError::FreshTokenRefused(ref t) => {
            let data = D { reason: reason(t), kept_current: true };
            RpcError::new(ErrorCode::Unauthorized, e.to_string()).with_data(&data)
        }
        AccountError::Locked => RpcError::new(ErrorCode::VaultLocked, e.to_string()),
        AccountError::NotLoggedIn => RpcError::new(ErrorCode::Unauthorized, e.to_string()),
        AccountError::Store(_) | AccountError::Backend(_) => RpcError::internal(e.to_string()),
    }
}

fn ts(s: i64) -> String {
    Bounds::rfc3339(s.saturating_mul(1000))
}

#[derive(Serialize)]
struct Status {
    logged_in: bool,
    sub: Option<String>,
    tier: Option<String>,
    tier_source: &'static str,
    period_start: Option<String>,
    period_end: Option<String>,
    expires_at: Option<String>,
    backend_url: Option<String>,
    backend_usage: Option<BackendOut>,
}

#[derive(Serialize)]
struct BackendOut {
    tokens: u64,
    requests: u64,
    cost_microusd: i64,
    period_start: String,
    fetched_at: String,
}

fn current(c: &Call) -> Status {
    let p = &c.state.policy;
    let e = p.entitlement();
    let tier = p.tier();
    Status {
        logged_in: e.is_some(),
        sub: e.as_ref().map(|e| e.sub.clone()),
        tier_source: if e.as_ref().is_some_and(|e| Some(&e.tier) == tier.as_ref()) { "entitlement" } else { "config" },
        tier,
        period_start: e.as_ref().map(|e| ts(e.period_start)),
        period_end: e.as_ref().map(|e| ts(e.period_end)),
        expires_at: e.as_ref().map(|e| ts(e.exp)),
        backend_url: p.rules().account.url.clone(),
        backend_usage: p.backend_usage().map(|b| BackendOut {
            tokens: b.used.tokens,
            requests: b.used.requests,
            cost_microusd: b.used.cost_microusd,
            period_start: Bounds::rfc3339(b.period_start_ms),
            fetched_at: Bounds::rfc3339(b.fetched_at_ms),
        }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginParams {
    token: String,
}

async fn login(mut c: Call) -> Result<Encoded, RpcError> {
    let p: LoginParams = c.params()?;
    acct::login(&c.state.policy, &c.state.vault, &p.token).await.map_err(error)?;
    // The entitlement token is also the sync credential: a paused sync may resume now.
    c.state.sync.credentials_changed();
    ok(&current(&c))
}

async fn logout(c: Call) -> Result<Encoded, RpcError> {
    let had = acct::logout(&c.state.policy, &c.state.vault).map_err(error)?;
    #[derive(Serialize)]
    struct R {
        logged_out: bool,
        tier: Option<String>,
    }
    ok(&R { logged_out: had, tier: c.state.policy.tier() })
}

async fn status(c: Call) -> Result<Encoded, RpcError> {
    ok(&current(&c))
}

async fn refresh(c: Call) -> Result<Encoded, RpcError> {
    acct::refresh(&c.state.policy, &c.state.vault, http()?).await.map_err(error)?;
    c.state.sync.credentials_changed();
    ok(&current(&c))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CheckoutParams {
    tier: Option<String>,
    /// `tier` (an upgrade, the default) or `credits` (a credit pack).
    kind: Option<String>,
    /// The credit pack to buy (the backend's name for it).
    pack: Option<String>,
}

#[derive(Serialize)]
struct Url {
    url: String,
}

async fn checkout(mut c: Call) -> Result<Encoded, RpcError> {
    let p: CheckoutParams = c.params()?;
    let body = match p.kind.as_deref() {
        None | Some("tier") => match p.tier {
            Some(t) => serde_json::json!({ "tier": t }),
            None => serde_json::json!({}),
        },
        Some("credits") => match p.pack {
            Some(pack) => serde_json::json!({ "kind": "credits", "pack": pack }),
            None => serde_json::json!({ "kind": "credits" }),
        },
        Some(other) => {
            return Err(RpcError::invalid_params(format!("`kind` must be \"tier\" or \"credits\", not `{other}`")))
        }
    };
    let url = acct::link(&c.state.policy, &c.state.vault, http()?, "checkout", body).await.map_err(error)?;
    ok(&Url { url })
}

async fn portal(c: Call) -> Result<Encoded, RpcError> {
    let url =
        acct::link(&c.state.policy, &c.state.vault, http()?, "portal", serde_json::json!({})).await.map_err(error)?;
    ok(&Url { url })
}
