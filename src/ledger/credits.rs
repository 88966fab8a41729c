//! The credit audit log: every change of the prepaid credit balance, in the ledger's
//! `credit_transactions` table, and the last balance the backend reported (in `meta`).
//!
//! Invariants:
//! - a call's deduction is written in the same transaction as the call's usage records (see
//!   [`super::Ledger::commit_call`]), so a record and its deduction are durable together or not
//!   at all, and become visible to [`super::Ledger::consistent`] readers at the same moment;
//! - a deduction has `credits < 0`; grants, purchases, adjustments and refunds seen from the
//!   backend carry the backend's `reference` and are audit entries only: the backend's balance
//!   already counts them;
//! - ids are UUIDv7 (time-ordered); writing an id that is stored already changes nothing;
//! - a deduction is sent to the sync backend in the same batch as the usage record it paid for
//!   (as a `dev.llm-sidecar.credits.v1` event whose id is the transaction's), and is marked
//!   acknowledged (`synced_ms`) in the same transaction that removes that record from the outbox.

use super::rows::id_text;
use super::LedgerError;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The `meta` key of the last backend balance.
pub const BACKEND_KEY: &str = "credits_backend";

/// What changed the balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditKind {
    /// A call's charge (negative).
    Deduction,
    /// Credits the backend granted (a plan's allowance, a promotion).
    Grant,
    /// A credit pack bought.
    Purchase,
    /// Any other change the backend made (positive or negative).
    Adjustment,
    /// Credits given back.
    Refund,
}

impl CreditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CreditKind::Deduction => "deduction",
            CreditKind::Grant => "grant",
            CreditKind::Purchase => "purchase",
            CreditKind::Adjustment => "adjustment",
            CreditKind::Refund => "refund",
        }
    }

    pub fn parse(s: &str) -> Option<CreditKind> {
        Some(match s {
            "deduction" => CreditKind::Deduction,
            "grant" => CreditKind::Grant,
            "purchase" => CreditKind::Purchase,
            "adjustment" => CreditKind::Adjustment,
            "refund" => CreditKind::Refund,
            _ => return None,
        })
    }
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditTx {
    pub id: Uuid,
    /// Unix milliseconds.
    pub ts: i64,
    pub kind: CreditKind,
    /// Signed change of the balance (a deduction is negative).
    pub credits: i64,
    /// The usage record a deduction paid for.
    pub record_id: Option<Uuid>,
    /// The provider cost the deduction was priced from (micro-dollars).
    pub cost_microusd: Option<i64>,
    /// How a deduction was priced: `markup` or `fixed`.
    pub basis: Option<String>,
    /// The backend's reference of a change it made.
    pub reference: Option<String>,
    /// When the backend acknowledged a deduction (Unix ms; `None`: not yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_ms: Option<i64>,
}

/// The last balance the backend reported, and when this daemon received it (Unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendBalance {
    pub balance: i64,
    /// The backend's time of that balance (Unix seconds).
    pub as_of: i64,
    pub fetched_at_ms: i64,
}

const COLUMNS: &str = "id, ts, kind, credits, record_id, cost_microusd, basis, reference";
/// What reads select: the written columns and `synced_ms`.
const READ: &str = "id, ts, kind, credits, record_id, cost_microusd, basis, reference, synced_ms";

/// Inserts `tx` unless its id is stored.
pub(super) fn insert(conn: &Connection, tx: &CreditTx) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!(
        "INSERT OR IGNORE INTO credit_transactions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
    ))?
    .execute(params![
        id_text(&tx.id),
        tx.ts,
        tx.kind.as_str(),
        tx.credits,
        tx.record_id.as_ref().map(id_text),
        tx.cost_microusd,
        tx.basis,
        tx.reference
    ])
    .map(drop)
}

pub(super) fn set_backend(conn: &Connection, b: &BackendBalance) -> Result<(), LedgerError> {
    let json = serde_json::to_string(b).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
    conn.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")
        .and_then(|mut s| s.execute(params![BACKEND_KEY, json]))
        .map_err(LedgerError::storage)
        .map(drop)
}

pub(super) fn backend(conn: &Connection) -> Result<Option<BackendBalance>, LedgerError> {
    let text: Option<String> = conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")
        .and_then(|mut s| s.query_row([BACKEND_KEY], |r| r.get(0)).optional())
        .map_err(LedgerError::storage)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| LedgerError::Corrupt(format!("{BACKEND_KEY}: {e}")))).transpose()
}

/// Credits deducted locally that the backend's balance (received at `fetched_at_ms`) does not
/// count: every deduction the backend had not acknowledged by then (`synced_ms` unset or later),
/// as a positive number.
pub(super) fn unacknowledged(conn: &Connection, fetched_at_ms: i64) -> Result<i64, LedgerError> {
    conn.prepare_cached(
        "SELECT COALESCE(SUM(-credits), 0) FROM credit_transactions \
         WHERE kind = 'deduction' AND (synced_ms IS NULL OR synced_ms > ?1)",
    )
    .and_then(|mut s| s.query_row([fetched_at_ms], |r| r.get(0)))
    .map_err(LedgerError::storage)
}

/// Credits deducted at or after `since_ms` (a positive number).
pub(super) fn deducted_since(conn: &Connection, since_ms: i64) -> Result<i64, LedgerError> {
    conn.prepare_cached(
        "SELECT COALESCE(SUM(-credits), 0) FROM credit_transactions WHERE kind = 'deduction' AND ts >= ?1",
    )
    .and_then(|mut s| s.query_row([since_ms], |r| r.get(0)))
    .map_err(LedgerError::storage)
}

/// The deductions that paid for `record`, oldest first.
pub(super) fn for_record(conn: &Connection, record: &Uuid) -> Result<Vec<CreditTx>, LedgerError> {
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {READ} FROM credit_transactions WHERE record_id = ?1 ORDER BY id"))
        .map_err(LedgerError::storage)?;
    let rows = stmt.query_map([id_text(record)], from_row).map_err(LedgerError::storage)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(LedgerError::storage)
}

/// Marks the deductions of `record` acknowledged by the backend at `at_ms` (its batch was).
pub(super) fn acknowledge(conn: &Connection, record: &Uuid, at_ms: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "UPDATE credit_transactions SET synced_ms = ?2 WHERE record_id = ?1 AND kind = 'deduction' AND synced_ms IS NULL",
    )?
    .execute(params![id_text(record), at_ms])
}

/// Up to `limit` entries at or after `since_ms`, newest first.
pub(super) fn list(conn: &Connection, since_ms: Option<i64>, limit: usize) -> Result<Vec<CreditTx>, LedgerError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {READ} FROM credit_transactions WHERE (?1 IS NULL OR ts >= ?1) ORDER BY id DESC LIMIT ?2"
        ))
        .map_err(LedgerError::storage)?;
    let rows = stmt
        .query_map(params![since_ms, i64::try_from(limit).unwrap_or(i64::MAX)], from_row)
        .map_err(LedgerError::storage)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(LedgerError::storage)
}

fn uuid(text: Option<String>, at: usize) -> rusqlite::Result<Option<Uuid>> {
    text.map(|t| {
        Uuid::parse_str(&t)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(at, rusqlite::types::Type::Text, Box::new(e)))
    })
    .transpose()
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<CreditTx> {
    let kind: String = row.get(2)?;
    let kind = CreditKind::parse(&kind).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            2,
            rusqlite::types::Type::Text,
            format!("unknown credit transaction kind `{kind}`").into(),
        )
    })?;
    Ok(CreditTx {
        id: uuid(row.get(0)?, 0)?.unwrap_or_default(),
        ts: row.get(1)?,
        kind,
        credits: row.get(3)?,
        record_id: uuid(row.get(4)?, 4)?,
        cost_microusd: row.get(5)?,
        basis: row.get(6)?,
        reference: row.get(7)?,
        synced_ms: row.get(8)?,
    })
}
