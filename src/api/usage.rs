//! `usage.*`: meter a call an app made itself, and read, export, import or clear the ledger.
//!
//! Every write is durable before it is answered (the ledger's group commit). Numbers from the
//! peer are checked here for type and sign (`invalid_params`, naming the field) and by
//! `ledger::validate` for range.

use super::{ok, Call, Method};
use crate::clock::now_ms;
use crate::ledger::{Dim, LedgerError, Period, RecordQuery};
use crate::rpc::{Encoded, RpcError};
use crate::usage_record::{CallStatus, KeySource, UsageRecord};
use rmpv::Value;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Format name and version of `usage.export` / `usage.import` (docs/usage-sync.md).
pub const EXPORT_FORMAT: &str = "llm-sidecar.usage";
pub const EXPORT_VERSION: u32 = 1;
const MAX_PAGE: usize = 1000;
const MAX_EXPORT_PAGE: usize = 5000;
const MAX_IMPORT: usize = 5000;

pub(super) fn methods() -> Vec<Method> {
    vec![
        Method {
            name: "usage.record",
            params: "{provider: str, model: str, input_tokens?: int, output_tokens?: int, cached_tokens?: int, cache_write_tokens?: int, reasoning_tokens?: int, cost_microusd?: int | cost_usd?: float, app?: str, user?: str, route?: str, key_source?: byok|platform|local, status?: ok|error|cancelled, error_code?: str, latency_ms?: int, ttft_ms?: int, attempts?: int, usage_estimated?: bool, ts?: int (ms), id?: str (UUIDv7, makes retries idempotent)}",
            result: "{id, duplicate: bool, cost_microusd}",
            summary: "Meter a call the app made itself; durable before the answer",
            kind: "request",
            handler: Some(|c| Box::pin(record(c))),
        },
        Method {
            name: "usage.summary",
            params: "{period?: day|month, group_by?: provider|model|app|key_source|user, from?: str, to?: str}",
            result: "{period, group_by, from, to, rows: [{period, key, ...totals}], groups: [{key, ...totals}], totals, projected_month_end}",
            summary: "Usage per day or month grouped by a dimension, with totals and a projected month-end figure",
            kind: "request",
            handler: Some(|c| Box::pin(summary(c))),
        },
        Method {
            name: "usage.records",
            params: "{from?: int ms | str, to?: int ms | str, app?: str, provider?: str, model?: str, cursor?: str, limit?: int (<= 1000), order?: desc|asc}",
            result: "{records: [UsageRecord], next_cursor: str|nil}",
            summary: "Usage records, newest first, filtered and paged",
            kind: "request",
            handler: Some(|c| Box::pin(records(c))),
        },
        Method {
            name: "usage.export",
            params: "{from?: int ms | str, to?: int ms | str, cursor?: str, limit?: int (<= 5000)}",
            result: "{format, version, device_id, exported_at_ms, records: [UsageRecord], next_cursor: str|nil}",
            summary: "One page of records (oldest first) in the versioned export format",
            kind: "request",
            handler: Some(|c| Box::pin(export(c))),
        },
        Method {
            name: "usage.import",
            params: "{format: str, version: int, records: [UsageRecord] (<= 5000)}",
            result: "{imported, duplicates}",
            summary: "Import exported records; idempotent by record id (all records are checked first)",
            kind: "request",
            handler: Some(|c| Box::pin(import(c))),
        },
        Method {
            name: "usage.clear",
            params: "{force?: bool}",
            result: "{records_removed, outbox_removed, dead_letters_removed, pending_kept}",
            summary: "Remove the local usage history; records not yet synced are kept unless force",
            kind: "request",
            handler: Some(|c| Box::pin(clear(c))),
        },
    ]
}

/// A number as a peer may send it (int or float); checked by [`whole`].
#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
enum Num {
    U(u64),
    I(i64),
    F(f64),
}

fn whole(field: &str, n: Option<Num>, max: u64) -> Result<u64, RpcError> {
    let bad = |what: &str| RpcError::invalid_params(format!("`{field}` {what}"));
    let v = match n {
        None => return Ok(0),
        Some(Num::U(u)) => u,
        Some(Num::I(i)) => u64::try_from(i).map_err(|_| bad("must not be negative"))?,
        Some(Num::F(f)) if !f.is_finite() => return Err(bad("must be a finite number")),
        Some(Num::F(f)) if f < 0.0 => return Err(bad("must not be negative")),
        Some(Num::F(f)) if f.fract() != 0.0 => return Err(bad("must be a whole number")),
        Some(Num::F(f)) if f > max as f64 => return Err(bad(&format!("must be at most {max}"))),
        Some(Num::F(f)) => f as u64,
    };
    if v > max {
        return Err(bad(&format!("must be at most {max}")));
    }
    Ok(v)
}

/// Reads a snake_case choice (`"byok"`, `"day"`, ...) into its enum. (Unit variants are sent as
/// strings, which the MessagePack value deserializer does not map to enums itself.)
fn choice<T: serde::de::DeserializeOwned>(field: &str, v: Option<String>) -> Result<Option<T>, RpcError> {
    v.map(|s| {
        serde_json::from_value(serde_json::Value::String(s))
            .map_err(|e| RpcError::invalid_params(format!("`{field}`: {e}")))
    })
    .transpose()
}

fn ledger_error(e: LedgerError) -> RpcError {
    match e {
        LedgerError::Invalid(e) => RpcError::invalid_params(e.to_string()),
        other => {
            tracing::error!("usage ledger: {other}");
            RpcError::internal(other.to_string())
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordParams {
    provider: String,
    model: String,
    id: Option<String>,
    ts: Option<Num>,
    app: Option<String>,
    user: Option<String>,
    route: Option<String>,
    key_source: Option<String>,
    input_tokens: Option<Num>,
    output_tokens: Option<Num>,
    cached_tokens: Option<Num>,
    cache_write_tokens: Option<Num>,
    reasoning_tokens: Option<Num>,
    usage_estimated: Option<bool>,
    cost_microusd: Option<Num>,
    cost_usd: Option<Num>,
    latency_ms: Option<Num>,
    ttft_ms: Option<Num>,
    status: Option<String>,
    error_code: Option<String>,
    attempts: Option<Num>,
}

#[derive(Serialize)]
struct RecordResult {
    id: String,
    duplicate: bool,
    cost_microusd: i64,
}

/// Builds the record an app described; range checks are left to `ledger::validate`.
fn build_record(p: RecordParams, conn_app: String) -> Result<UsageRecord, RpcError> {
    use crate::ledger::validate::{MAX_COST_MICROUSD, MAX_TOKENS};
    let big = u64::MAX >> 1;
    let ts = match p.ts {
        Some(_) => i64::try_from(whole("ts", p.ts, big)?).unwrap_or(i64::MAX),
        None => now_ms(),
    };
    let id = match &p.id {
        Some(s) => Uuid::parse_str(s).map_err(|_| RpcError::invalid_params("`id` must be a UUID string"))?,
        None if p.ts.is_some() => crate::usage_record::id_from_ms(ts),
        None => Uuid::now_v7(),
    };
    let cost_microusd = match (p.cost_microusd, p.cost_usd) {
        (Some(_), Some(_)) => {
            return Err(RpcError::invalid_params("give either `cost_microusd` or `cost_usd`, not both"))
        }
        (Some(n), None) => whole("cost_microusd", Some(n), MAX_COST_MICROUSD as u64)?,
        (None, Some(Num::F(f))) => {
            if !f.is_finite() || f < 0.0 {
                return Err(RpcError::invalid_params("`cost_usd` must be a finite, non-negative number"));
            }
            let micro = (f * 1_000_000.0).round();
            if micro > MAX_COST_MICROUSD as f64 {
                return Err(RpcError::invalid_params("`cost_usd` must be at most 10000"));
            }
            micro as u64
        }
        (None, Some(n)) => whole("cost_usd", Some(n), 10_000)?.saturating_mul(1_000_000),
        (None, None) => 0,
    };
    let mut r = UsageRecord::new(p.app.unwrap_or(conn_app), p.provider, p.model);
    r.id = id;
    r.ts = ts;
    if let Some(u) = p.user {
        r.user = u;
    }
    r.route = p.route.unwrap_or_default();
    r.key_source = choice::<KeySource>("key_source", p.key_source)?.unwrap_or_default();
    r.input_tokens = whole("input_tokens", p.input_tokens, MAX_TOKENS)?;
    r.output_tokens = whole("output_tokens", p.output_tokens, MAX_TOKENS)?;
    r.cached_tokens = whole("cached_tokens", p.cached_tokens, MAX_TOKENS)?;
    r.cache_write_tokens = whole("cache_write_tokens", p.cache_write_tokens, MAX_TOKENS)?;
    r.reasoning_tokens = whole("reasoning_tokens", p.reasoning_tokens, MAX_TOKENS)?;
    r.usage_estimated = p.usage_estimated.unwrap_or(false);
    r.cost_microusd = i64::try_from(cost_microusd).unwrap_or(i64::MAX);
    r.latency_ms = whole("latency_ms", p.latency_ms, big)?;
    r.ttft_ms = match p.ttft_ms {
        Some(n) => Some(whole("ttft_ms", Some(n), big)?),
        None => None,
    };
    r.status = choice::<CallStatus>("status", p.status)?.unwrap_or_default();
    r.error_code = p.error_code;
    r.attempts = match p.attempts {
        Some(n) => u32::try_from(whole("attempts", Some(n), u64::from(u32::MAX))?).unwrap_or(u32::MAX),
        None => 1,
    };
    Ok(r)
}

async fn record(mut c: Call) -> Result<Encoded, RpcError> {
    let p: RecordParams = c.params()?;
    let r = build_record(p, c.conn.app())?;
    let outcome = c.state.ledger.commit(&r).await.map_err(ledger_error)?;
    ok(&RecordResult {
        id: r.id.to_string(),
        duplicate: outcome == crate::ledger::Committed::Duplicate,
        cost_microusd: r.cost_microusd,
    })
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum PeriodParam {
    Day,
    #[default]
    Month,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum GroupBy {
    #[default]
    Provider,
    Model,
    App,
    KeySource,
    User,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SummaryParams {
    period: Option<String>,
    group_by: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

#[derive(Serialize)]
struct Totals {
    requests: u64,
    failed: u64,
    input_tokens: u64,
    output_tokens: u64,
    cached_tokens: u64,
    cache_write_tokens: u64,
    reasoning_tokens: u64,
    total_tokens: u64,
    cost_microusd: i64,
}

impl From<&crate::ledger::Counter> for Totals {
    fn from(c: &crate::ledger::Counter) -> Self {
        Totals {
            requests: c.requests,
            failed: c.failed,
            input_tokens: c.input_tokens,
            output_tokens: c.output_tokens,
            cached_tokens: c.cached_tokens,
            cache_write_tokens: c.cache_write_tokens,
            reasoning_tokens: c.reasoning_tokens,
            total_tokens: c.total_tokens(),
            cost_microusd: c.cost_microusd,
        }
    }
}

#[derive(Serialize)]
struct SummaryRow {
    period: String,
    key: String,
    #[serde(flatten)]
    totals: Totals,
}

#[derive(Serialize)]
struct SummaryGroup {
    key: String,
    #[serde(flatten)]
    totals: Totals,
}

#[derive(Serialize)]
struct ProjectionOut {
    month: String,
    elapsed_fraction: f64,
    month_to_date: Totals,
    requests: u64,
    total_tokens: u64,
    cost_microusd: i64,
}

#[derive(Serialize)]
struct SummaryResult {
    period: &'static str,
    group_by: &'static str,
    from: String,
    to: String,
    rows: Vec<SummaryRow>,
    groups: Vec<SummaryGroup>,
    totals: Totals,
    projected_month_end: ProjectionOut,
}

async fn summary(mut c: Call) -> Result<Encoded, RpcError> {
    let p: SummaryParams = c.params()?;
    let (period, period_name) = match choice::<PeriodParam>("period", p.period)?.unwrap_or_default() {
        PeriodParam::Day => (Period::Day, "day"),
        PeriodParam::Month => (Period::Month, "month"),
    };
    let dim = match choice::<GroupBy>("group_by", p.group_by)?.unwrap_or_default() {
        GroupBy::Provider => Dim::Provider,
        GroupBy::Model => Dim::Model,
        GroupBy::App => Dim::App,
        GroupBy::KeySource => Dim::KeySource,
        GroupBy::User => Dim::User,
    };
    let now = now_ms();
    let current = period.label(now);
    let label = |field: &'static str, v: Option<String>| match v {
        Some(s) => period.parse_label(field, &s).map_err(|e| RpcError::invalid_params(e.to_string())),
        None => Ok(current.clone()),
    };
    let from = label("from", p.from)?;
    let to = label("to", p.to)?;
    if from > to {
        return Err(RpcError::invalid_params("`from` must not be after `to`"));
    }
    let s = c.state.ledger.summary(period, dim, &from, &to, now).map_err(ledger_error)?;
    ok(&SummaryResult {
        period: period_name,
        group_by: dim.name(),
        from: s.from,
        to: s.to,
        rows: s
            .rows
            .iter()
            .map(|r| SummaryRow { period: r.period.clone(), key: r.key.clone(), totals: (&r.counter).into() })
            .collect(),
        groups: s.groups.iter().map(|g| SummaryGroup { key: g.key.clone(), totals: (&g.counter).into() }).collect(),
        totals: (&s.totals).into(),
        projected_month_end: ProjectionOut {
            month: s.projection.month,
            elapsed_fraction: s.projection.elapsed_fraction,
            month_to_date: (&s.projection.month_to_date).into(),
            requests: s.projection.requests,
            total_tokens: s.projection.total_tokens,
            cost_microusd: s.projection.cost_microusd,
        },
    })
}

/// A time bound: Unix milliseconds, an RFC 3339 time, or a `YYYY-MM-DD` date (midnight UTC).
#[derive(Deserialize)]
#[serde(untagged)]
enum TimeArg {
    Ms(i64),
    Text(String),
}

fn time_arg(field: &str, t: Option<TimeArg>) -> Result<Option<i64>, RpcError> {
    use time::format_description::well_known::Rfc3339;
    let bad =
        || RpcError::invalid_params(format!("`{field}` must be Unix milliseconds, an RFC 3339 time or YYYY-MM-DD"));
    match t {
        None => Ok(None),
        Some(TimeArg::Ms(ms)) => Ok(Some(ms)),
        Some(TimeArg::Text(s)) => {
            if let Ok(t) = time::OffsetDateTime::parse(&s, &Rfc3339) {
                return Ok(Some(i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad())?));
            }
            let day = Period::Day.parse_label("from", &s).map_err(|_| bad())?;
            let date = time::Date::parse(&day, time::macros::format_description!("[year]-[month]-[day]"))
                .map_err(|_| bad())?;
            Ok(Some(date.midnight().assume_utc().unix_timestamp() * 1000))
        }
    }
}

fn cursor_arg(cursor: Option<String>) -> Result<Option<Uuid>, RpcError> {
    cursor
        .map(|c| {
            Uuid::parse_str(&c)
                .map_err(|_| RpcError::invalid_params("`cursor` must be a `next_cursor` from an earlier page"))
        })
        .transpose()
}

/// A record as a map with its id as a string.
fn record_value(r: &UsageRecord) -> Value {
    serde_json::to_value(r).map(|j| crate::rpc::json_to_value(&j)).unwrap_or(Value::Nil)
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Order {
    #[default]
    Desc,
    Asc,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RecordsParams {
    from: Option<TimeArg>,
    to: Option<TimeArg>,
    app: Option<String>,
    provider: Option<String>,
    model: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
    order: Option<String>,
}

fn page_result(records: &[UsageRecord], next: Option<Uuid>, extra: Vec<(Value, Value)>) -> Encoded {
    let mut map = extra;
    map.push((Value::from("records"), Value::Array(records.iter().map(record_value).collect())));
    map.push((Value::from("next_cursor"), next.map_or(Value::Nil, |n| Value::from(n.to_string()))));
    Encoded::value(&Value::Map(map))
}

async fn records(mut c: Call) -> Result<Encoded, RpcError> {
    let p: RecordsParams = c.params()?;
    let limit = p.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(RpcError::invalid_params(format!("`limit` must be 1-{MAX_PAGE}")));
    }
    let q = RecordQuery {
        from_ms: time_arg("from", p.from)?,
        to_ms: time_arg("to", p.to)?,
        app: p.app,
        provider: p.provider,
        model: p.model,
        after: cursor_arg(p.cursor)?,
        limit,
        ascending: choice::<Order>("order", p.order)?.unwrap_or_default() == Order::Asc,
    };
    let ledger = c.state.ledger.clone();
    let page = tokio::task::spawn_blocking(move || ledger.records(&q))
        .await
        .map_err(|e| RpcError::internal(e.to_string()))?
        .map_err(ledger_error)?;
    Ok(page_result(&page.records, page.next, Vec::new()))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ExportParams {
    from: Option<TimeArg>,
    to: Option<TimeArg>,
    cursor: Option<String>,
    limit: Option<usize>,
}

async fn export(mut c: Call) -> Result<Encoded, RpcError> {
    let p: ExportParams = c.params()?;
    let limit = p.limit.unwrap_or(MAX_PAGE);
    if limit == 0 || limit > MAX_EXPORT_PAGE {
        return Err(RpcError::invalid_params(format!("`limit` must be 1-{MAX_EXPORT_PAGE}")));
    }
    let q = RecordQuery {
        from_ms: time_arg("from", p.from)?,
        to_ms: time_arg("to", p.to)?,
        after: cursor_arg(p.cursor)?,
        limit,
        ascending: true,
        ..RecordQuery::default()
    };
    let ledger = c.state.ledger.clone();
    let page = tokio::task::spawn_blocking(move || ledger.records(&q))
        .await
        .map_err(|e| RpcError::internal(e.to_string()))?
        .map_err(ledger_error)?;
    let header = vec![
        (Value::from("format"), Value::from(EXPORT_FORMAT)),
        (Value::from("version"), Value::from(EXPORT_VERSION)),
        (Value::from("device_id"), Value::from(c.state.ledger.device_id().to_string())),
        (Value::from("exported_at_ms"), Value::from(now_ms())),
    ];
    // Provenance: each record names the device it was made on and whether the backend has it.
    let ids: Vec<Uuid> = page.records.iter().map(|r| r.id).collect();
    let ledger = c.state.ledger.clone();
    let unsynced = tokio::task::spawn_blocking(move || ledger.unsynced(&ids))
        .await
        .map_err(|e| RpcError::internal(e.to_string()))?
        .map_err(ledger_error)?;
    let own = crate::sync::cloudevents::source(c.state.ledger.device_id());
    let records = page
        .records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.source.get_or_insert_with(|| own.clone());
            let mut v = record_value(&r);
            if let Value::Map(m) = &mut v {
                m.push((Value::from("synced"), Value::from(!unsynced.contains(&r.id))));
            }
            v
        })
        .collect();
    let mut map = header;
    map.push((Value::from("records"), Value::Array(records)));
    map.push((Value::from("next_cursor"), page.next.map_or(Value::Nil, |n| Value::from(n.to_string()))));
    Ok(Encoded::value(&Value::Map(map)))
}

/// Other fields (an export page's `device_id`, `exported_at_ms`, `next_cursor`) are ignored, so a
/// page from `usage.export` can be passed back as it is.
#[derive(Deserialize)]
struct ImportParams {
    format: String,
    version: u32,
    records: Vec<Value>,
}

#[derive(Serialize)]
struct ImportResult {
    imported: u64,
    duplicates: u64,
}

async fn import(mut c: Call) -> Result<Encoded, RpcError> {
    let p: ImportParams = c.params()?;
    if p.format != EXPORT_FORMAT {
        return Err(RpcError::invalid_params(format!("`format` must be `{EXPORT_FORMAT}`")));
    }
    if p.version == 0 || p.version > EXPORT_VERSION {
        return Err(RpcError::invalid_params(format!(
            "export version {} is not supported (this daemon reads versions 1-{EXPORT_VERSION})",
            p.version
        )));
    }
    if p.records.len() > MAX_IMPORT {
        return Err(RpcError::invalid_params(format!("at most {MAX_IMPORT} records per call")));
    }
    let own = crate::sync::cloudevents::source(c.state.ledger.device_id());
    let mut records = Vec::with_capacity(p.records.len());
    let mut queue = Vec::with_capacity(p.records.len());
    for (i, v) in p.records.into_iter().enumerate() {
        let json = crate::rpc::value_to_json(&v);
        let synced = match json.get("synced") {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(_) => return Err(RpcError::invalid_params(format!("record {i}: `synced` must be a boolean"))),
        };
        let mut r: UsageRecord =
            serde_json::from_value(json).map_err(|e| RpcError::invalid_params(format!("record {i}: {e}")))?;
        if let Some(src) = &r.source {
            if *src == own {
                r.source = None;
            }
        }
        records.push(r);
        queue.push(!synced);
    }
    let flags = c.state.ledger.import(&records, &queue).await.map_err(ledger_error)?;
    let imported = flags.iter().filter(|n| **n).count() as u64;
    ok(&ImportResult { imported, duplicates: flags.len() as u64 - imported })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ClearParams {
    force: Option<bool>,
}

#[derive(Serialize)]
struct ClearResult {
    records_removed: u64,
    outbox_removed: u64,
    dead_letters_removed: u64,
    /// Records not yet synced that were kept (they will still be sent).
    pending_kept: u64,
}

async fn clear(mut c: Call) -> Result<Encoded, RpcError> {
    let p: ClearParams = c.params()?;
    let cleared = c.state.ledger.clear(p.force.unwrap_or(false)).await.map_err(ledger_error)?;
    let counts = c.state.ledger.counts();
    ok(&ClearResult {
        records_removed: cleared.records,
        outbox_removed: cleared.outbox,
        dead_letters_removed: cleared.dead_letters,
        pending_kept: counts.outbox + counts.dead,
    })
}
