//! `sync.status`, `sync.now`, `sync.dead_letters` and `sync.requeue`: what the usage sync is
//! doing, "send everything now", and the records held back (with why) and sending them again.

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
            result: "{enabled, state: disabled|idle|sending|retrying|paused|misconfigured, endpoint, source, subject, pending, oldest_pending_age_ms, dead_letters, last_attempt_at_ms, last_success_at_ms, last_error: {at_ms, status, message}|nil, next_attempt_at_ms, failures, sent_total, batches_total, recent_dead_letters: [{id, batch_id, status, reason, body, at_ms}]}",
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
        Method {
            name: "sync.dead_letters",
            params: "{limit?: int (1-1000, default 100)}",
            result: "{dead_letters: [{id, batch_id, status, reason: rejected|too_old|future|unreadable, body, at_ms, record}]}",
            summary: "Records the backend refused or sync held back, newest first, with the status and error body",
            kind: "request",
            handler: Some(|c| Box::pin(dead_letters(c))),
        },
        Method {
            name: "sync.requeue",
            params: "{ids?: [str]}",
            result: "{requeued}",
            summary: "Move dead letters (all, or these ids) back to the outbox, to be sent again",
            kind: "request",
            handler: Some(|c| Box::pin(requeue(c))),
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
    body: Option<String>,
    at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<crate::usage_record::UsageRecord>,
}

impl DeadLetterOut {
    fn of(d: crate::ledger::DeadLetter, with_record: bool) -> DeadLetterOut {
        DeadLetterOut {
            id: d.record.id.to_string(),
            batch_id: d.batch_id,
            status: d.status,
            reason: d.reason,
            body: d.body,
            at_ms: d.at_ms,
            record: with_record.then_some(d.record),
        }
    }
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
            .map(|d| DeadLetterOut::of(d, false))
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DeadLettersParams {
    limit: Option<usize>,
}

#[derive(Serialize)]
struct DeadLettersResult {
    dead_letters: Vec<DeadLetterOut>,
}

async fn dead_letters(mut c: Call) -> Result<Encoded, RpcError> {
    let p: DeadLettersParams = c.params()?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(RpcError::invalid_params("`limit` must be 1-1000"));
    }
    let ledger = c.state.ledger.clone();
    let found = tokio::task::spawn_blocking(move || ledger.dead_letters(limit))
        .await
        .map_err(|e| RpcError::internal(e.to_string()))?
        .map_err(|e| RpcError::internal(e.to_string()))?;
    ok(&DeadLettersResult { dead_letters: found.into_iter().map(|d| DeadLetterOut::of(d, true)).collect() })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RequeueParams {
    ids: Option<Vec<String>>,
}

#[derive(Serialize)]
struct RequeueResult {
    requeued: u64,
}

async fn requeue(mut c: Call) -> Result<Encoded, RpcError> {
    let p: RequeueParams = c.params()?;
    let requeued = match p.ids {
        None => c.state.ledger.requeue_dead_letters().await,
        Some(ids) => {
            let ids = ids
                .iter()
                .map(|s| uuid::Uuid::parse_str(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| RpcError::invalid_params("`ids` must be record ids (UUIDs)"))?;
            c.state.ledger.requeue(&ids).await
        }
    }
    .map_err(|e| RpcError::internal(e.to_string()))?;
    ok(&RequeueResult { requeued })
}
