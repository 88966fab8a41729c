//! `vault.*`: status, unlock and lock of the key vault. `vault.status` never counts as activity,
//! so polling it does not keep the vault from auto-locking.

use super::keys::{secret_param, vault_error};
use super::{ok, Call, Method};
use crate::rpc::{Encoded, RpcError};
use crate::vault::LockReason;
use rmpv::Value;
use serde::Deserialize;

const STATUS: &str = "{mode: identity|passphrase, state: uninitialized|locked|unlocked, locked: bool, keys: u64|nil, auto_lock_secs, lock_in_secs: u64|nil, vault_file, identity_file}";

pub(super) fn methods() -> Vec<Method> {
    vec![
        Method {
            name: "vault.status",
            params: "{}",
            result: STATUS,
            summary: "Whether the vault is locked, its mode and files; does not re-arm the idle auto-lock",
            kind: "request",
            handler: Some(|c| Box::pin(status(c))),
        },
        Method {
            name: "vault.unlock",
            params: "{passphrase?: str}  (passphrase mode: required; identity mode: omit)",
            result: STATUS,
            summary: "Unlock the vault (the first unlock of a passphrase vault sets the passphrase, min 8 chars). Errors: unauthorized (wrong passphrase), invalid_params",
            kind: "request",
            handler: Some(|c| Box::pin(unlock(c))),
        },
        Method {
            name: "vault.lock",
            params: "{}",
            result: STATUS,
            summary: "Lock the vault now: keys leave memory and calls needing one fail with vault_locked",
            kind: "request",
            handler: Some(|c| Box::pin(lock(c))),
        },
    ]
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NoParams {}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UnlockParams {
    /// Raw value so that a wrongly typed passphrase is never quoted in an error.
    passphrase: Option<Value>,
}

async fn status(mut c: Call) -> Result<Encoded, RpcError> {
    let _: NoParams = c.params()?;
    ok(&c.state.vault.status())
}

async fn unlock(mut c: Call) -> Result<Encoded, RpcError> {
    let p: UnlockParams = c.params()?;
    let passphrase = p.passphrase.filter(|v| !v.is_nil()).map(|v| secret_param(v, "passphrase")).transpose()?;
    let status = c.state.vault.unlock(passphrase).await.map_err(vault_error)?;
    ok(&status)
}

async fn lock(mut c: Call) -> Result<Encoded, RpcError> {
    let _: NoParams = c.params()?;
    ok(&c.state.vault.lock(LockReason::Manual))
}
