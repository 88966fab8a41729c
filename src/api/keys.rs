//! `keys.*`: store, list, remove and test provider keys. Results carry metadata only; a secret
//! goes in through `keys.set` and never comes back out.

use super::{ok, Call, Method};
use crate::rpc::{Encoded, ErrorCode, RpcError};
use crate::vault::probe::ProbeError;
use crate::vault::{KeyMeta, VaultError};
use age::secrecy::SecretString;
use rmpv::Value;
use serde::{Deserialize, Serialize};

/// Shape of a key's metadata in results.
macro_rules! key_meta {
    () => {
        "{id, provider, label, last4: str|nil, created_at: unix_ms, last_used: unix_ms|nil, status: unknown|valid|invalid}"
    };
}

pub(super) fn methods() -> Vec<Method> {
    vec![
        Method {
            name: "keys.set",
            params: "{provider: str, secret: str, label?: str (default \"default\"), force?: bool}",
            result: concat!("{key: ", key_meta!(), ", replaced: bool}"),
            summary: "Store a provider key in the vault; a key with the same provider and label is replaced. A provider that is neither built in nor configured is refused (invalid_params, data.known: [str]) unless `force`. Errors: vault_locked, invalid_params",
            kind: "request",
            handler: Some(|c| Box::pin(set(c))),
        },
        Method {
            name: "keys.list",
            params: "{provider?: str}",
            result: concat!("{keys: [", key_meta!(), "]}"),
            summary: "Metadata of the stored keys in the order they are tried (never the keys). Errors: vault_locked",
            kind: "request",
            handler: Some(|c| Box::pin(list(c))),
        },
        Method {
            name: "keys.remove",
            params: "{id: str}",
            result: concat!("{key: ", key_meta!(), "}"),
            summary: "Delete a key from the vault. Errors: key_missing (data.id), vault_locked",
            kind: "request",
            handler: Some(|c| Box::pin(remove(c))),
        },
        Method {
            name: "keys.test",
            params: "{id: str}",
            result: concat!("{key: ", key_meta!(), ", valid: bool, http_status: u16, latency_ms: u64}"),
            summary: "Check a key with a cheap authenticated provider call (list models) and record valid/invalid. Errors: key_missing, vault_locked, provider_error (provider unreachable or unexpected status), invalid_params (no check known for the provider)",
            kind: "request",
            handler: Some(|c| Box::pin(test(c))),
        },
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetParams {
    provider: String,
    /// Read as a raw value so that a wrongly typed secret is never quoted in an error.
    secret: Value,
    label: Option<String>,
    #[serde(default)]
    force: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListParams {
    provider: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdParams {
    id: String,
}

#[derive(Serialize)]
struct SetResult<'a> {
    key: &'a KeyMeta,
    replaced: bool,
}

#[derive(Serialize)]
struct ListResult {
    keys: Vec<KeyMeta>,
}

#[derive(Serialize)]
struct KeyResult<'a> {
    key: &'a KeyMeta,
}

#[derive(Serialize)]
struct TestResult<'a> {
    key: &'a KeyMeta,
    valid: bool,
    http_status: u16,
    latency_ms: u64,
}

async fn set(mut c: Call) -> Result<Encoded, RpcError> {
    let p: SetParams = c.params()?;
    let secret = secret_param(p.secret, "secret")?;
    if !p.force {
        known_provider(&c, &p.provider)?;
    }
    let vault = c.state.vault.clone();
    let (key, replaced) = blocking(move || vault.set(&p.provider, p.label.as_deref(), secret)).await?;
    ok(&SetResult { key: &key, replaced })
}

/// Refuses a provider that is neither built in, configured (`[providers.*]` or
/// `vault.probe_base_urls`), nor one of the daemon's own token slots: a typo would otherwise
/// store a key nothing ever uses.
fn known_provider(c: &Call, provider: &str) -> Result<(), RpcError> {
    let router = c.state.router();
    if router.providers().contains_key(provider)
        || crate::sync::VAULT_TOKEN_PROVIDERS.contains(&provider)
        || c.state.config().vault.probe_base_urls.contains_key(provider)
    {
        return Ok(());
    }
    #[derive(Serialize)]
    struct D<'a> {
        provider: &'a str,
        known: Vec<&'a str>,
    }
    let known: Vec<&str> = router.providers().keys().map(String::as_str).collect();
    Err(RpcError::invalid_params(format!(
        "unknown provider `{}`; known providers: {}. To store a key for a provider you will configure later, pass `force` (`llm-sidecar keys add --force`)",
        provider.chars().take(64).collect::<String>(),
        known.join(", ")
    ))
    .with_data(&D { provider, known }))
}

async fn list(mut c: Call) -> Result<Encoded, RpcError> {
    let p: ListParams = c.params()?;
    let keys = c.state.vault.list(p.provider.as_deref()).map_err(vault_error)?;
    ok(&ListResult { keys })
}

async fn remove(mut c: Call) -> Result<Encoded, RpcError> {
    let p: IdParams = c.params()?;
    let vault = c.state.vault.clone();
    let key = blocking(move || vault.remove(&p.id)).await?;
    ok(&KeyResult { key: &key })
}

async fn test(mut c: Call) -> Result<Encoded, RpcError> {
    let p: IdParams = c.params()?;
    let config = c.state.config();
    let router = c.state.router();
    let r = c.state.vault.test(&p.id, &config.vault.probe_base_urls, router.providers()).await.map_err(vault_error)?;
    ok(&TestResult {
        key: &r.key,
        valid: r.checked.valid,
        http_status: r.checked.http_status,
        latency_ms: r.checked.latency_ms,
    })
}

/// Runs a vault operation that writes files off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VaultError> + Send + 'static,
) -> Result<T, RpcError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RpcError::internal(format!("vault task failed: {e}")))?
        .map_err(vault_error)
}

/// Takes a secret param (a string) straight into a [`SecretString`]; the error for any other
/// type names the field but never shows the value.
pub(super) fn secret_param(v: Value, name: &str) -> Result<SecretString, RpcError> {
    match v {
        Value::String(s) => s
            .into_str()
            .map(SecretString::from)
            .ok_or_else(|| RpcError::invalid_params(format!("`{name}` must be valid UTF-8"))),
        _ => Err(RpcError::invalid_params(format!("`{name}` must be a string"))),
    }
}

/// The RPC form of a vault error: `vault_locked`, `unauthorized` (wrong passphrase),
/// `key_missing` (unknown id, in `data.id`), `invalid_params`, `provider_error`, else `internal`.
pub(super) fn vault_error(e: VaultError) -> RpcError {
    #[derive(Serialize)]
    struct State {
        state: &'static str,
    }
    #[derive(Serialize)]
    struct Id<'a> {
        id: &'a str,
    }
    #[derive(Serialize)]
    struct Provider<'a> {
        provider: &'a str,
        status: Option<u16>,
        attempts: u32,
    }
    let message = e.to_string();
    match &e {
        VaultError::Locked => RpcError::new(ErrorCode::VaultLocked, message).with_data(&State { state: "locked" }),
        VaultError::NotInitialized => {
            RpcError::new(ErrorCode::VaultLocked, message).with_data(&State { state: "uninitialized" })
        }
        VaultError::WrongPassphrase => RpcError::new(ErrorCode::Unauthorized, message),
        VaultError::KeyNotFound { id } => RpcError::new(ErrorCode::KeyMissing, message).with_data(&Id { id }),
        VaultError::DuplicateSecret { id } => RpcError::invalid_params(message).with_data(&Id { id }),
        VaultError::InvalidInput(_)
        | VaultError::WeakPassphrase
        | VaultError::PassphraseRequired
        | VaultError::PassphraseUnused
        | VaultError::Probe(ProbeError::UnknownProvider(_)) => RpcError::invalid_params(message),
        VaultError::Probe(ProbeError::Status { provider, status }) => RpcError::new(ErrorCode::ProviderError, message)
            .with_data(&Provider { provider, status: Some(*status), attempts: 1 }),
        VaultError::Probe(ProbeError::Network { provider, .. }) => RpcError::new(ErrorCode::ProviderError, message)
            .with_data(&Provider { provider, status: None, attempts: 1 }),
        _ => RpcError::internal(message),
    }
}
