//! `usage.summary` arithmetic: counter rows grouped, totalled, and the current month projected
//! to its end. Reads only the period counters (never scans records).

use super::periods::{datetime, Dim, Period};
use super::{Counter, CounterRow, Ledger, LedgerError};
use time::{Date, Month};

/// Totals of one group over the whole requested range.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub key: String,
    pub counter: Counter,
}

/// Month-to-date usage extrapolated linearly to the end of the month (UTC).
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    /// `YYYY-MM`.
    pub month: String,
    pub month_to_date: Counter,
    /// Part of the month that has passed, 0..=1.
    pub elapsed_fraction: f64,
    pub requests: u64,
    pub total_tokens: u64,
    pub cost_microusd: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub from: String,
    pub to: String,
    /// One row per (period, group), in period order.
    pub rows: Vec<CounterRow>,
    /// One entry per group over the whole range, most expensive first.
    pub groups: Vec<Group>,
    pub totals: Counter,
    pub projection: Projection,
}

/// Why a period label was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` must be a {what} such as {example}")]
pub struct BadPeriod {
    pub field: &'static str,
    pub what: &'static str,
    pub example: &'static str,
}

impl Period {
    /// Checks a label (`YYYY-MM-DD` for days, `YYYY-MM` for months) and returns it normalised.
    pub fn parse_label(self, field: &'static str, s: &str) -> Result<String, BadPeriod> {
        let bad = || match self {
            Period::Day => BadPeriod { field, what: "day (YYYY-MM-DD)", example: "2025-01-31" },
            Period::Month => BadPeriod { field, what: "month (YYYY-MM)", example: "2025-01" },
        };
        let parts: Vec<&str> = s.split('-').collect();
        let num = |p: &str, len: usize| {
            (p.len() == len && p.bytes().all(|b| b.is_ascii_digit())).then(|| p.parse::<u32>().ok()).flatten()
        };
        let (y, m, d) = match (self, parts.as_slice()) {
            (Period::Day, [y, m, d]) => (num(y, 4), num(m, 2), num(d, 2)),
            (Period::Month, [y, m]) => (num(y, 4), num(m, 2), Some(1)),
            _ => return Err(bad()),
        };
        let (Some(y), Some(m), Some(d)) = (y, m, d) else { return Err(bad()) };
        let month = u8::try_from(m).ok().and_then(|m| Month::try_from(m).ok()).ok_or_else(bad)?;
        let date =
            Date::from_calendar_date(i32::try_from(y).map_err(|_| bad())?, month, u8::try_from(d).map_err(|_| bad())?)
                .map_err(|_| bad())?;
        Ok(match self {
            Period::Day => format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day()),
            Period::Month => format!("{:04}-{:02}", date.year(), u8::from(date.month())),
        })
    }
}

/// Linear projection of the month containing `now_ms` from its month-to-date total.
pub fn project(month_to_date: Counter, now_ms: i64) -> (String, f64, Counter) {
    let now = datetime(now_ms);
    let start = now.replace_day(1).map(|d| d.replace_time(time::Time::MIDNIGHT)).unwrap_or(now);
    let days = now.month().length(now.year());
    let month_ms = i64::from(days) * 86_400_000;
    let start_ms = i64::try_from(start.unix_timestamp_nanos() / 1_000_000).unwrap_or(now_ms);
    // At least an hour of history, so the first minutes of a month do not explode the figure.
    let elapsed = (now_ms - start_ms).clamp(3_600_000, month_ms);
    let fraction = elapsed as f64 / month_ms as f64;
    let scale = |v: u64| -> u64 { ((v as f64) / fraction).round() as u64 };
    let projected = Counter {
        requests: scale(month_to_date.requests),
        input_tokens: scale(month_to_date.input_tokens),
        output_tokens: scale(month_to_date.output_tokens),
        cost_microusd: ((month_to_date.cost_microusd as f64) / fraction).round() as i64,
        ..Counter::default()
    };
    (Period::Month.label(now_ms), (now_ms - start_ms).clamp(0, month_ms) as f64 / month_ms as f64, projected)
}

impl Ledger {
    /// Usage of periods `from..=to` grouped by `dim`, with totals and the month-end projection.
    pub fn summary(&self, period: Period, dim: Dim, from: &str, to: &str, now_ms: i64) -> Result<Summary, LedgerError> {
        let rows = self.counters(period, dim, from, to)?;
        let mut groups: Vec<Group> = Vec::new();
        let mut index = std::collections::HashMap::new();
        for row in &rows {
            let i = *index.entry(row.key.clone()).or_insert_with(|| {
                groups.push(Group { key: row.key.clone(), counter: Counter::default() });
                groups.len() - 1
            });
            groups[i].counter.add(&row.counter);
        }
        groups.sort_by(|a, b| {
            b.counter
                .cost_microusd
                .cmp(&a.counter.cost_microusd)
                .then(b.counter.total_tokens().cmp(&a.counter.total_tokens()))
                .then(a.key.cmp(&b.key))
        });
        let mut totals = Counter::default();
        for row in self.counters(period, Dim::Total, from, to)? {
            totals.add(&row.counter);
        }
        let month = Period::Month.label(now_ms);
        let mtd =
            self.counters(Period::Month, Dim::Total, &month, &month)?.first().map(|r| r.counter).unwrap_or_default();
        let (month, elapsed_fraction, projected) = project(mtd, now_ms);
        Ok(Summary {
            from: from.to_string(),
            to: to.to_string(),
            rows,
            groups,
            totals,
            projection: Projection {
                month,
                month_to_date: mtd,
                elapsed_fraction,
                requests: projected.requests,
                total_tokens: projected.total_tokens(),
                cost_microusd: projected.cost_microusd,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_checked() {
        assert_eq!(Period::Day.parse_label("from", "2024-02-29").as_deref(), Ok("2024-02-29"));
        assert!(Period::Day.parse_label("from", "2023-02-29").is_err());
        assert!(Period::Day.parse_label("from", "2024-2-01").is_err());
        assert_eq!(Period::Month.parse_label("to", "2024-12").as_deref(), Ok("2024-12"));
        let e = Period::Month.parse_label("to", "2024-13").expect_err("month 13");
        assert!(e.to_string().contains("`to`"), "{e}");
    }

    #[test]
    fn projection_is_linear_in_the_month() {
        // 2024-04-11T00:00:00Z: 10 of 30 days have passed.
        let now = 1_712_793_600_000;
        let mtd =
            Counter { requests: 10, input_tokens: 100, output_tokens: 50, cost_microusd: 1_000, ..Counter::default() };
        let (month, fraction, p) = project(mtd, now);
        assert_eq!(month, "2024-04");
        assert!((fraction - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!((p.requests, p.total_tokens(), p.cost_microusd), (30, 450, 3_000));
    }
}
