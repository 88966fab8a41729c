//! Period counters: running totals per (period, dimension, value), updated in the same
//! transaction as the records they count, so they always equal the sum of the records.
//!
//! A commit round adds up the deltas of its records per counter row in memory and writes each row
//! once (an upsert), however many records it holds. Rows live in the `counters` table (see
//! `schema`), keyed by period (`day`/`month`), label (`YYYY-MM-DD`/`YYYY-MM`), dimension and value.

use super::periods::{Dim, Period};
use crate::usage_record::{CallStatus, UsageRecord};
use serde::Serialize;

/// Totals for one group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counter {
    pub requests: u64,
    /// Calls whose status was not `ok` (errors and cancellations).
    pub failed: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_microusd: i64,
}

impl Counter {
    pub fn of(record: &UsageRecord) -> Counter {
        Counter {
            requests: 1,
            failed: u64::from(record.status != CallStatus::Ok),
            input_tokens: record.input_tokens,
            output_tokens: record.output_tokens,
            cached_tokens: record.cached_tokens,
            cache_write_tokens: record.cache_write_tokens,
            reasoning_tokens: record.reasoning_tokens,
            cost_microusd: record.cost_microusd,
        }
    }

    pub fn add(&mut self, o: &Counter) {
        self.requests = self.requests.saturating_add(o.requests);
        self.failed = self.failed.saturating_add(o.failed);
        self.input_tokens = self.input_tokens.saturating_add(o.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(o.output_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(o.cached_tokens);
        self.cache_write_tokens = self.cache_write_tokens.saturating_add(o.cache_write_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(o.reasoning_tokens);
        self.cost_microusd = self.cost_microusd.saturating_add(o.cost_microusd);
    }

    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// The fields of `c` as stored, in the column order of `counters` (requests, failed,
/// input_tokens, output_tokens, cached_tokens, cache_write_tokens, reasoning_tokens,
/// cost_microusd).
pub fn fields(c: &Counter) -> [i64; 8] {
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    [
        i(c.requests),
        i(c.failed),
        i(c.input_tokens),
        i(c.output_tokens),
        i(c.cached_tokens),
        i(c.cache_write_tokens),
        i(c.reasoning_tokens),
        c.cost_microusd,
    ]
}

/// The counter in columns `at..at + 8` of `row` (in [`fields`] order).
pub fn from_row(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Counter> {
    let u = |i: usize| -> rusqlite::Result<u64> { Ok(u64::try_from(row.get::<_, i64>(at + i)?).unwrap_or(0)) };
    Ok(Counter {
        requests: u(0)?,
        failed: u(1)?,
        input_tokens: u(2)?,
        output_tokens: u(3)?,
        cached_tokens: u(4)?,
        cache_write_tokens: u(5)?,
        reasoning_tokens: u(6)?,
        cost_microusd: row.get(at + 7)?,
    })
}

/// The periods a record counts towards (its day and its month), with their labels.
pub fn periods_of(record: &UsageRecord) -> [(Period, String); 2] {
    [(Period::Day, Period::Day.label(record.ts)), (Period::Month, Period::Month.label(record.ts))]
}

/// The groups a record counts in, one per dimension.
pub fn groups_of(record: &UsageRecord) -> Vec<(Dim, String)> {
    Dim::ALL
        .into_iter()
        .map(|dim| {
            let value = match dim {
                Dim::Total => String::new(),
                Dim::User => record.user.clone(),
                Dim::App => record.app.clone(),
                Dim::Provider => record.provider.clone(),
                Dim::Model => format!("{}/{}", record.provider, record.model),
                Dim::KeySource => record.key_source.as_str().to_string(),
            };
            (dim, value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_counts_once_per_dimension_in_its_day_and_month() {
        let r = UsageRecord::new("app", "openai", "gpt-4o");
        let groups = groups_of(&r);
        assert_eq!(groups.len(), 6);
        assert!(groups.contains(&(Dim::Model, "openai/gpt-4o".to_string())));
        let [(d, day), (m, month)] = periods_of(&r);
        assert_eq!((d, m), (Period::Day, Period::Month));
        assert!(day.starts_with(&month));
        let c = Counter::of(&r);
        assert_eq!(fields(&c), [1, 0, 0, 0, 0, 0, 0, 0]);
    }
}
