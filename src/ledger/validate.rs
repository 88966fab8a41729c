//! What a usage record must satisfy before the ledger accepts it (chat records, `usage.record`
//! and imports alike): sane ranges, so one bad record cannot poison the counters or a bill.

use super::periods::id_ms;
use crate::usage_record::UsageRecord;

/// Largest token count accepted in any one field of one record.
pub const MAX_TOKENS: u64 = 1_000_000_000;
/// Largest cost of one record: $10,000.
pub const MAX_COST_MICROUSD: i64 = 10_000_000_000;
/// Oldest timestamp accepted: 2020-01-01T00:00:00Z.
pub const MIN_TS_MS: i64 = 1_577_836_800_000;
/// How far in the future a timestamp may be (clock skew).
pub const MAX_FUTURE_MS: i64 = 24 * 3_600_000;
/// How far a record's `ts` may be from the time in its id (keeps time-range scans exact).
pub const MAX_ID_SKEW_MS: i64 = 24 * 3_600_000;
const MAX_DURATION_MS: u64 = 24 * 3_600_000;
const MAX_ATTEMPTS: u32 = 1000;

/// Why a record was refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRecord(pub String);

fn text(field: &str, value: &str, min: usize, max: usize) -> Result<(), InvalidRecord> {
    let n = value.chars().count();
    if n < min || n > max || value.chars().any(char::is_control) {
        let what = if min > 0 { format!("{min}-{max}") } else { format!("at most {max}") };
        return Err(InvalidRecord(format!("`{field}` must be {what} printable characters")));
    }
    Ok(())
}

/// Checks one record against the ledger's limits.
pub fn validate(r: &UsageRecord, now_ms: i64) -> Result<(), InvalidRecord> {
    if r.id.get_version_num() != 7 {
        return Err(InvalidRecord("`id` must be a UUIDv7".into()));
    }
    if r.ts < MIN_TS_MS || r.ts > now_ms.saturating_add(MAX_FUTURE_MS) {
        return Err(InvalidRecord("`ts` must be a Unix time in milliseconds between 2020 and now".into()));
    }
    if (id_ms(&r.id) - r.ts).abs() > MAX_ID_SKEW_MS {
        return Err(InvalidRecord("`id` must be a UUIDv7 made within a day of `ts`".into()));
    }
    text("app", &r.app, 1, 64)?;
    text("user", &r.user, 1, 128)?;
    text("provider", &r.provider, 1, 64)?;
    text("model", &r.model, 1, 256)?;
    text("route", &r.route, 0, 256)?;
    if let Some(source) = &r.source {
        text("source", source, 1, 256)?;
    }
    if let Some(code) = &r.error_code {
        text("error_code", code, 1, 64)?;
    }
    for (name, v) in [
        ("input_tokens", r.input_tokens),
        ("output_tokens", r.output_tokens),
        ("cached_tokens", r.cached_tokens),
        ("cache_write_tokens", r.cache_write_tokens),
        ("reasoning_tokens", r.reasoning_tokens),
    ] {
        if v > MAX_TOKENS {
            return Err(InvalidRecord(format!("`{name}` must be at most {MAX_TOKENS}")));
        }
    }
    for (name, v) in [("cost_microusd", r.cost_microusd), ("overage_microusd", r.overage_microusd)] {
        if !(0..=MAX_COST_MICROUSD).contains(&v) {
            return Err(InvalidRecord(format!("`{name}` must be between 0 and {MAX_COST_MICROUSD} (USD 10,000)")));
        }
    }
    if r.latency_ms > MAX_DURATION_MS || r.ttft_ms.is_some_and(|t| t > MAX_DURATION_MS) {
        return Err(InvalidRecord("`latency_ms` and `ttft_ms` must be at most one day".into()));
    }
    if r.attempts > MAX_ATTEMPTS {
        return Err(InvalidRecord(format!("`attempts` must be at most {MAX_ATTEMPTS}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::now_ms;

    #[test]
    fn accepts_a_normal_record_and_names_the_bad_field() {
        let good = UsageRecord::new("app", "openai", "gpt-4o");
        assert_eq!(validate(&good, now_ms()), Ok(()));
        type Mutation = fn(&mut UsageRecord);
        let cases: Vec<(&str, Mutation)> = vec![
            ("input_tokens", |r| r.input_tokens = MAX_TOKENS + 1),
            ("cost_microusd", |r| r.cost_microusd = -1),
            ("cost_microusd", |r| r.cost_microusd = MAX_COST_MICROUSD + 1),
            ("app", |r| r.app = String::new()),
            ("model", |r| r.model = "a\nb".into()),
            ("ts", |r| r.ts = 0),
            ("id", |r| r.id = uuid::Uuid::new_v4()),
            ("attempts", |r| r.attempts = 5000),
        ];
        for (field, mutate) in cases {
            let mut r = good.clone();
            mutate(&mut r);
            let e = validate(&r, now_ms()).expect_err(field);
            assert!(e.0.contains(field), "{field}: {e}");
        }
    }
}
