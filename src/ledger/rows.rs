//! A usage record as a row of the `records` table, and back.
//!
//! Every field of [`UsageRecord`] is a column of its own (so `sqlite3` users can sum and group
//! them); enums are their snake_case names, booleans 0/1, the id its hyphenated lowercase text.
//! Token counts and durations are bounded by `validate` far below `i64::MAX`; a stored value that
//! does not fit its field (only damage or a foreign writer can cause it) is a `Corrupt` error.
//! Records that leave the ledger inline (outbox entries that outlive the history, dead letters)
//! are the record's JSON.

use super::LedgerError;
use crate::usage_record::{CallStatus, KeySource, UsageRecord};
use rusqlite::{Row, ToSql};
use uuid::Uuid;

/// The columns of `records`, in the order [`params`] binds and [`from_row`] reads them.
pub const COLUMNS: &str = "id, ts, app, user, provider, model, route, key_source, input_tokens, output_tokens, \
     cached_tokens, cache_write_tokens, reasoning_tokens, usage_estimated, cost_microusd, overage_microusd, \
     latency_ms, ttft_ms, status, error_code, attempts, source";
/// `?1, ..., ?22` for [`COLUMNS`].
pub const PLACEHOLDERS: &str =
    "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22";
/// Number of columns in [`COLUMNS`].
pub const WIDTH: usize = 22;

/// An id as stored.
pub fn id_text(id: &Uuid) -> String {
    id.hyphenated().to_string()
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn status_name(s: CallStatus) -> &'static str {
    match s {
        CallStatus::Ok => "ok",
        CallStatus::Error => "error",
        CallStatus::Cancelled => "cancelled",
    }
}

/// The values of [`COLUMNS`] for `r`.
pub fn params(r: &UsageRecord) -> [Box<dyn ToSql + '_>; WIDTH] {
    [
        Box::new(id_text(&r.id)),
        Box::new(r.ts),
        Box::new(r.app.as_str()),
        Box::new(r.user.as_str()),
        Box::new(r.provider.as_str()),
        Box::new(r.model.as_str()),
        Box::new(r.route.as_str()),
        Box::new(r.key_source.as_str()),
        Box::new(int(r.input_tokens)),
        Box::new(int(r.output_tokens)),
        Box::new(int(r.cached_tokens)),
        Box::new(int(r.cache_write_tokens)),
        Box::new(int(r.reasoning_tokens)),
        Box::new(r.usage_estimated),
        Box::new(r.cost_microusd),
        Box::new(r.overage_microusd),
        Box::new(int(r.latency_ms)),
        Box::new(r.ttft_ms.map(int)),
        Box::new(status_name(r.status)),
        Box::new(r.error_code.as_deref()),
        Box::new(r.attempts),
        Box::new(r.source.as_deref()),
    ]
}

/// A stored value of column `i` that does not fit its field.
fn corrupt(i: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        i,
        rusqlite::types::Type::Integer,
        format!("unreadable stored {what}").into(),
    )
}

fn unsigned(row: &Row<'_>, i: usize, what: &str) -> rusqlite::Result<u64> {
    u64::try_from(row.get::<_, i64>(i)?).map_err(|_| corrupt(i, what))
}

/// The record in columns `at..at + WIDTH` of `row` (selected as [`COLUMNS`]).
pub fn from_row(row: &Row<'_>, at: usize) -> rusqlite::Result<UsageRecord> {
    let id: String = row.get(at)?;
    let key_source: String = row.get(at + 7)?;
    let status: String = row.get(at + 18)?;
    Ok(UsageRecord {
        id: Uuid::parse_str(&id).map_err(|_| corrupt(at, "id"))?,
        ts: row.get(at + 1)?,
        app: row.get(at + 2)?,
        user: row.get(at + 3)?,
        provider: row.get(at + 4)?,
        model: row.get(at + 5)?,
        route: row.get(at + 6)?,
        key_source: match key_source.as_str() {
            "byok" => KeySource::Byok,
            "platform" => KeySource::Platform,
            "local" => KeySource::Local,
            _ => return Err(corrupt(at + 7, "key_source")),
        },
        input_tokens: unsigned(row, at + 8, "input_tokens")?,
        output_tokens: unsigned(row, at + 9, "output_tokens")?,
        cached_tokens: unsigned(row, at + 10, "cached_tokens")?,
        cache_write_tokens: unsigned(row, at + 11, "cache_write_tokens")?,
        reasoning_tokens: unsigned(row, at + 12, "reasoning_tokens")?,
        usage_estimated: row.get(at + 13)?,
        cost_microusd: row.get(at + 14)?,
        overage_microusd: row.get(at + 15)?,
        latency_ms: unsigned(row, at + 16, "latency_ms")?,
        ttft_ms: row
            .get::<_, Option<i64>>(at + 17)?
            .map(|v| u64::try_from(v).map_err(|_| corrupt(at + 17, "ttft_ms")))
            .transpose()?,
        status: match status.as_str() {
            "ok" => CallStatus::Ok,
            "error" => CallStatus::Error,
            "cancelled" => CallStatus::Cancelled,
            _ => return Err(corrupt(at + 18, "status")),
        },
        error_code: row.get(at + 19)?,
        attempts: row.get(at + 20)?,
        source: row.get(at + 21)?,
    })
}

/// The JSON an inline outbox entry or a dead letter carries.
pub fn to_json(r: &UsageRecord) -> Result<String, LedgerError> {
    serde_json::to_string(r).map_err(|e| LedgerError::Corrupt(format!("encoding a usage record: {e}")))
}

/// The record in inline JSON.
pub fn from_json(text: &str) -> Result<UsageRecord, LedgerError> {
    serde_json::from_str(text).map_err(|e| LedgerError::Corrupt(format!("stored usage record: {e}")))
}
