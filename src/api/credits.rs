//! `credits.balance` and `credits.transactions`: the prepaid credit balance and its audit log
//! (see `policy::credits` and `ledger::credits`).

use super::{ok, Call, Method};
use crate::rpc::{Encoded, RpcError};
use serde::{Deserialize, Serialize};

/// Most transactions one `credits.transactions` answers.
const MAX_LIMIT: usize = 1000;

pub(super) fn methods() -> Vec<Method> {
    vec![
        Method {
            name: "credits.balance",
            params: "{}",
            result: "{tier, uses: never|after_quota|always, balance, reserved, available, backend_balance, as_of, unacknowledged, low_balance, price: {basis: markup|fixed, markup, unit_microusd, per_request, per_1k_tokens} | nil, valid_until, deducted_last_7_days, days_left}",
            summary: "The prepaid credit balance (the backend's less local deductions it has not counted), what running calls hold, how the tier prices calls, and the days left at the last week's rate",
            kind: "request",
            handler: Some(|c| Box::pin(balance(c))),
        },
        Method {
            name: "credits.transactions",
            params: "{since?: i64 (Unix ms), limit?: u32 (<= 1000, default 100)}",
            result: "{transactions: [{id, ts, kind: deduction|grant|purchase|adjustment|refund, credits, record_id, cost_microusd, basis, reference, synced_ms}]}",
            summary: "The credit audit log, newest first: every deduction (with the usage record it paid for) and every change seen from the backend",
            kind: "request",
            handler: Some(|c| Box::pin(transactions(c))),
        },
    ]
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NoParams {}

async fn balance(mut c: Call) -> Result<Encoded, RpcError> {
    let _: NoParams = c.params()?;
    ok(&c.state.policy.credit_status())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TxParams {
    since: Option<i64>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct TxResult {
    transactions: Vec<TxView>,
}

/// A transaction on the wire (ids as text).
#[derive(Serialize)]
struct TxView {
    id: String,
    ts: i64,
    kind: &'static str,
    credits: i64,
    record_id: Option<String>,
    cost_microusd: Option<i64>,
    basis: Option<String>,
    reference: Option<String>,
    /// When the sync backend acknowledged a deduction (Unix ms), nil until then.
    synced_ms: Option<i64>,
}

impl From<crate::ledger::credits::CreditTx> for TxView {
    fn from(t: crate::ledger::credits::CreditTx) -> TxView {
        TxView {
            id: t.id.to_string(),
            ts: t.ts,
            kind: t.kind.as_str(),
            credits: t.credits,
            record_id: t.record_id.map(|r| r.to_string()),
            cost_microusd: t.cost_microusd,
            basis: t.basis,
            reference: t.reference,
            synced_ms: t.synced_ms,
        }
    }
}

async fn transactions(mut c: Call) -> Result<Encoded, RpcError> {
    let p: TxParams = c.params()?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(RpcError::invalid_params(format!("`limit` must be from 1 to {MAX_LIMIT}")));
    }
    let transactions = c
        .state
        .ledger
        .credit_transactions(p.since, limit)
        .map_err(|e| RpcError::internal(format!("cannot read the credit log: {e}")))?;
    ok(&TxResult { transactions: transactions.into_iter().map(TxView::from).collect() })
}
