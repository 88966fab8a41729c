//! The account: the entitlement token (kept in the vault as the secret of provider
//! [`VAULT_PROVIDER`], never returned) and the backend at `account.url`.
//!
//! Backend contract (docs/policy.md): `GET {url}/entitlement` with `Authorization: Bearer
//! <token>` → `{token?, usage?: {tokens, requests, cost_microusd, period_start}, credits?:
//! {balance, as_of?, kind?, reference?}}` (period_start and as_of in Unix seconds); `POST {url}/checkout` `{tier?}` and `POST {url}/portal` `{}` → `{url}`.
//! Offline, the last verified token holds until its `exp`. The backend is reached only through
//! [`client`], which follows no redirect (the token must not travel to another host).

use super::{BackendUsage, Entitlement, EntitlementError, Policy};
use crate::keystore::KeyStore;
use crate::vault::Vault;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest wait for a connection to the account backend (each request also has a 15 s limit).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP client for the account backend: [`crate::providers::transport::builder`] (rustls,
/// our user agent, no redirects, so the token never reaches another host).
pub fn client() -> Result<reqwest::Client, AccountError> {
    crate::providers::transport::builder(CONNECT_TIMEOUT)
        .build()
        .map_err(|e| AccountError::Backend(format!("cannot build the HTTP client: {}", e.without_url())))
}

/// The vault "provider" under which the entitlement token is stored.
pub const VAULT_PROVIDER: &str = "llm-sidecar-account";
const LABEL: &str = "entitlement";

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(transparent)]
    Token(#[from] EntitlementError),
    #[error("the vault is locked; unlock it with `llm-sidecar vault unlock`")]
    Locked,
    #[error("cannot store the entitlement token: {0}")]
    Store(String),
    #[error("no account backend is configured (account.url)")]
    NoBackend,
    #[error("not logged in")]
    NotLoggedIn,
    #[error("the account backend: {0}")]
    Backend(String),
    /// The backend's fresh token failed verification; its usage was applied, the current token
    /// is kept.
    #[error("the account backend sent a token that was refused ({0}); the current token is kept")]
    FreshTokenRefused(EntitlementError),
}

#[derive(Deserialize)]
struct EntitlementReply {
    token: Option<String>,
    usage: Option<UsageReply>,
    credits: Option<CreditsReply>,
}

/// `credits` of the `/entitlement` reply: the balance counting every credit event the backend
/// received, and what changed it last.
#[derive(Deserialize)]
struct CreditsReply {
    #[serde(flatten)]
    raw: super::entitlement::RawCredits,
    kind: Option<String>,
    reference: Option<String>,
}

#[derive(Deserialize)]
struct UsageReply {
    #[serde(default)]
    tokens: u64,
    #[serde(default)]
    requests: u64,
    #[serde(default)]
    cost_microusd: i64,
    period_start: i64,
}

#[derive(Deserialize)]
struct UrlReply {
    url: String,
}

/// Verifies `token` (signature, algorithm, claims, expiry, known tier) without storing it.
pub fn check(policy: &Policy, token: &str) -> Result<Entitlement, EntitlementError> {
    let e = policy.rules().verifier.verify(token)?;
    e.check_times(policy.clock.now_ms() / 1000)?;
    if policy.enabled() && !policy.rules().tiers.contains_key(&e.tier) {
        return Err(EntitlementError::UnknownTier(e.tier));
    }
    Ok(e)
}

/// `account.login`: verifies and stores the token, and makes its tier active (and its credit
/// balance, if it carries one).
pub async fn login(policy: &Policy, vault: &Vault, token: &str) -> Result<Entitlement, AccountError> {
    let e = check(policy, token)?;
    store(vault, token)?;
    install(policy, e.clone()).await;
    Ok(e)
}

/// Makes `e` the entitlement in force and takes in the credit balance it carries.
async fn install(policy: &Policy, e: Entitlement) {
    let credits = e.credits;
    policy.set_entitlement(Some(e));
    if let Some(c) = credits {
        policy
            .observe_credits(super::credits::Reported {
                balance: c.balance,
                as_of: c.as_of,
                kind: None,
                reference: None,
            })
            .await;
    }
}

fn store(vault: &Vault, token: &str) -> Result<(), AccountError> {
    let secret = SecretString::from(token.trim().to_string());
    vault.set(VAULT_PROVIDER, Some(LABEL), secret).map(|_| ()).map_err(vault_error)
}

fn vault_error(e: crate::vault::VaultError) -> AccountError {
    match e {
        crate::vault::VaultError::Locked => AccountError::Locked,
        other => AccountError::Store(other.to_string()),
    }
}

/// `account.logout`: forgets the token (vault and memory); the default tier applies again.
pub fn logout(policy: &Policy, vault: &Vault) -> Result<bool, AccountError> {
    let metas = vault.list(Some(VAULT_PROVIDER)).map_err(vault_error)?;
    for m in &metas {
        vault.remove(&m.id).map_err(|e| AccountError::Store(e.to_string()))?;
    }
    let had = policy.entitlement().is_some() || !metas.is_empty();
    policy.set_entitlement(None);
    policy.set_backend_usage(None);
    Ok(had)
}

/// The stored token, if the vault is open and holds one.
fn stored(vault: &Vault) -> Option<SecretString> {
    vault.keys_for_background(VAULT_PROVIDER).ok()?.into_iter().next().map(|k| k.secret)
}

/// Loads the stored token into the policy (at start and after an unlock). An expired or no
/// longer valid token is ignored (the default tier applies).
pub async fn load(policy: &Policy, vault: &Vault) {
    if let Some(t) = stored(vault) {
        match policy.rules().verifier.verify(t.expose_secret()) {
            Ok(e) => install(policy, e).await,
            Err(e) => tracing::warn!("stored entitlement token not usable: {e}"),
        }
    }
}

/// `account.refresh` (and each poll): asks the backend for a fresh token and the period's usage.
pub async fn refresh(policy: &Policy, vault: &Vault, http: &reqwest::Client) -> Result<(), AccountError> {
    let url = policy.rules().account.url.clone().ok_or(AccountError::NoBackend)?;
    let token = stored(vault).ok_or(AccountError::NotLoggedIn)?;
    let req = http
        .get(format!("{}/entitlement", url.trim_end_matches('/')))
        .bearer_auth(token.expose_secret())
        .timeout(Duration::from_secs(15));
    let reply: EntitlementReply = send_json(req).await?;
    // The usage is applied whatever becomes of the token that came with it.
    if let Some(u) = reply.usage {
        policy.set_backend_usage(Some(BackendUsage {
            used: super::Amount { tokens: u.tokens, requests: u.requests, cost_microusd: u.cost_microusd },
            period_start_ms: u.period_start.saturating_mul(1000),
            fetched_at_ms: policy.clock.now_ms(),
        }));
    }
    // A fresh token (below) may carry an older balance than the reply's: the later `as_of` wins.
    if let Some(c) = reply.credits {
        let balance = c.raw.balance().map_err(|e| AccountError::Backend(format!("credits: {e}")))?;
        let kind = c.kind.as_deref().and_then(crate::ledger::credits::CreditKind::parse);
        let as_of = c.raw.as_of.unwrap_or(policy.clock.now_ms() / 1000);
        policy.observe_credits(super::credits::Reported { balance, as_of, kind, reference: c.reference }).await;
    }
    if let Some(new) = reply.token.filter(|t| t.trim() != token.expose_secret()) {
        match login(policy, vault, &new).await {
            Err(AccountError::Token(e)) => {
                tracing::warn!("the account backend sent a token that was refused ({e}); the current one is kept");
                return Err(AccountError::FreshTokenRefused(e));
            }
            other => {
                other?;
            }
        }
    }
    Ok(())
}

/// `account.checkout_url` / `account.portal_url`: a link from the backend to open in a browser
/// (`POST {url}/{kind}` with `body`: `{tier?}` for an upgrade, `{kind: "credits", pack?}` for
/// a credit pack, `{}` for the portal).
pub async fn link(
    policy: &Policy,
    vault: &Vault,
    http: &reqwest::Client,
    kind: &str,
    body: serde_json::Value,
) -> Result<String, AccountError> {
    let url = policy.rules().account.url.clone().ok_or(AccountError::NoBackend)?;
    let mut req = http.post(format!("{}/{kind}", url.trim_end_matches('/'))).timeout(Duration::from_secs(15));
    if let Some(t) = stored(vault) {
        req = req.bearer_auth(t.expose_secret());
    }
    let reply: UrlReply = send_json(req.json(&body)).await?;
    Ok(reply.url)
}

/// Sends `req` and reads a JSON reply; errors never carry the URL or the token.
async fn send_json<T: serde::de::DeserializeOwned>(req: reqwest::RequestBuilder) -> Result<T, AccountError> {
    req.send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| AccountError::Backend(e.without_url().to_string()))?
        .json()
        .await
        .map_err(|e| AccountError::Backend(format!("unreadable reply: {}", e.without_url())))
}

/// Background task: loads the stored token, then every `account.poll_secs` re-checks expiry
/// (emitting `tier.changed` on fallback) and refreshes from the backend if one is configured.
pub async fn run(policy: Arc<Policy>, vault: Arc<Vault>, stop: CancellationToken) {
    let http = client().inspect_err(|e| tracing::error!("account refresh disabled: {e}")).ok();
    loop {
        if policy.entitlement().is_none() {
            load(&policy, &vault).await; // at start, and after a passphrase vault was unlocked
        }
        policy.tier();
        if let Some(http) = http.as_ref().filter(|_| policy.rules().account.url.is_some() && stored(&vault).is_some()) {
            if let Err(e) = refresh(&policy, &vault, http).await {
                tracing::info!("entitlement refresh failed (the current token holds until it expires): {e}");
            }
        }
        // Read each round: a config reload may change it.
        let every = Duration::from_secs(policy.rules().account.poll_secs.max(1));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
