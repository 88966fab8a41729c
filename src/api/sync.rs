//! `sync.status` and `sync.now`: what the usage sync is doing, and "send everything now".

use super::{ok, Call, Method};
use crate::rpc::{Encoded, RpcError};
use crate::sync::{SyncError, SyncStatus};
use serde::{Deserialize, Serialize};

/// Dead letters listed in `sync.status`.
const RECENT_DEAD_LETTERS: usize = 10;

pub(super) fn methods() -> Vec<Method> {
    vec![
        Method {
            name: "sync.status",
            params: "{}",
            result: "{enabled, state: disabled|idle|sending|retrying|paused, endpoint, source, pending, oldest_pending_age_ms, dead_letters, last_attempt_at_ms, last_success_at_ms, last_error: {at_ms, status, message}|nil, next_attempt_at_ms, failures, sent_total, batches_total, recent_dead_letters: [{id, batch_id, status, reason, at_ms}]}",
            summary: "State of the usage sync: queue size and age, last success and error, next attempt, dead letters",
            kind: "request",
            handler: Some(|c| Box::pin(status(c))),
        },
        Method {
            name: "sync.now",
            params: "{retry_dead_letters?: bool}",
            result: "{state, sent, dead_lettered, requeued, pending, error: {at_ms, status, message}|nil}",
            summary: "Send every waiting usage record now (skips any backoff wait or pause) and report the outcome",
            kind: "request",
            handler: Some(|c| Box::pin(now(c))),
        },
    ]
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NoParams {}

#[derive(Serialize)]
struct DeadLetterOut {
    id: String,
    batch_id: String,
    status: Option<u16>,
    reason: String,
    at_ms: i64,
}

#[derive(Serialize)]
struct StatusResult {
    #[serde(flatten)]
    status: SyncStatus,
    recent_dead_letters: Vec<DeadLetterOut>,
}

async fn status(mut c: Call) -> Result<Encoded, RpcError> {
    let _: NoParams = c.params()?;
    let status = c.state.sync.status();
    let recent_dead_letters = if status.dead_letters > 0 {
        c.state
            .ledger
            .dead_letters(RECENT_DEAD_LETTERS)
            .map_err(|e| RpcError::internal(e.to_string()))?
            .into_iter()
            .map(|d| DeadLetterOut {
                id: d.record.id.to_string(),
                batch_id: d.batch_id,
                status: d.status,
                reason: d.reason,
                at_ms: d.at_ms,
            })
            .collect()
    } else {
        Vec::new()
    };
    ok(&StatusResult { status, recent_dead_letters })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NowParams {
    retry_dead_letters: Option<bool>,
}

async fn now(mut c: Call) -> Result<Encoded, RpcError> {
    let p: NowParams = c.params()?;
    match c.state.sync.now(p.retry_dead_letters.unwrap_or(false)).await {
        Ok(report) => ok(&report),
        Err(e @ SyncError::Disabled) => Err(RpcError::invalid_request(e.to_string())),
        Err(e @ SyncError::NotRunning) => Err(RpcError::internal(e.to_string())),
    }
}
