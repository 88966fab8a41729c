//! `apps.*`: the apps that call the daemon over HTTP with an app token. `apps.add` is the only
//! result that ever carries a token (once); the ledger keeps only its hash.

use super::{ok, Call, Method};
use crate::clock::now_ms;
use crate::ledger::{Dim, LedgerError, Period};
use crate::rpc::{Encoded, RpcError};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

pub(super) fn methods() -> Vec<Method> {
    vec![
        Method {
            name: "apps.add",
            params: "{name: str (1-64 printable chars)}",
            result: "{name, token: str}",
            summary: "Make an app and its token (`lsk_...`), shown only in this result: the daemon stores a hash of it. Errors: invalid_params (bad name, or the name exists: data.name)",
            kind: "request",
            handler: Some(|c| Box::pin(add(c))),
        },
        Method {
            name: "apps.list",
            params: "{}",
            result: "{apps: [{name, created: rfc3339, last_used: rfc3339|nil, calls_this_month: u64}]}",
            summary: "Every app by name, with its calls this UTC month (never a token); last_used is kept to the minute",
            kind: "request",
            handler: Some(|c| Box::pin(list(c))),
        },
        Method {
            name: "apps.remove",
            params: "{name: str}",
            result: "{removed: bool}",
            summary: "Remove an app: its token stops working at once; its usage history stays. `removed` is false if there was no such app",
            kind: "request",
            handler: Some(|c| Box::pin(remove(c))),
        },
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameParams {
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NoParams {}

#[derive(Serialize)]
struct AddResult<'a> {
    name: &'a str,
    token: &'a str,
}

#[derive(Serialize)]
struct AppOut {
    name: String,
    created: String,
    last_used: Option<String>,
    calls_this_month: u64,
}

#[derive(Serialize)]
struct ListResult {
    apps: Vec<AppOut>,
}

#[derive(Serialize)]
struct RemoveResult {
    removed: bool,
}

async fn add(mut c: Call) -> Result<Encoded, RpcError> {
    let p: NameParams = c.params()?;
    let (app, token) = c.state.ledger.create_app(&p.name).await.map_err(app_error)?;
    tracing::info!(app = %app.name, "app added");
    ok(&AddResult { name: &app.name, token: token.expose_secret() })
}

async fn list(mut c: Call) -> Result<Encoded, RpcError> {
    let _: NoParams = c.params()?;
    let ledger = &c.state.ledger;
    let apps = ledger.apps().map_err(app_error)?;
    let month = Period::Month.label(now_ms());
    let calls: HashMap<String, u64> = ledger
        .counters(Period::Month, Dim::App, &month, &month)
        .map_err(app_error)?
        .into_iter()
        .map(|r| (r.key, r.counter.requests))
        .collect();
    let apps = apps
        .into_iter()
        .map(|a| AppOut {
            calls_this_month: calls.get(&a.name).copied().unwrap_or(0),
            created: rfc3339(a.created_ms),
            last_used: a.last_used_ms.map(rfc3339),
            name: a.name,
        })
        .collect();
    ok(&ListResult { apps })
}

async fn remove(mut c: Call) -> Result<Encoded, RpcError> {
    let p: NameParams = c.params()?;
    let removed = c.state.ledger.remove_app(&p.name).await.map_err(app_error)?;
    if removed {
        tracing::info!(app = %p.name, "app removed");
    }
    ok(&RemoveResult { removed })
}

/// RFC 3339 (UTC, to the millisecond) of a Unix ms time.
fn rfc3339(ms: i64) -> String {
    let t = crate::ledger::periods::datetime(ms);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn app_error(e: LedgerError) -> RpcError {
    #[derive(Serialize)]
    struct Name<'a> {
        name: &'a str,
    }
    match &e {
        LedgerError::AppExists(name) => RpcError::invalid_params(e.to_string()).with_data(&Name { name }),
        LedgerError::InvalidAppName => RpcError::invalid_params(e.to_string()),
        _ => RpcError::internal(e.to_string()),
    }
}
