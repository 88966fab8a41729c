//! The UTC periods a record counts towards, the dimensions counters group by, and the time in a
//! UUIDv7 record id (ids sort by creation time, so a time range is an id range).
//!
//! Labels are fixed width (`YYYY-MM-DD`, `YYYY-MM`), so ranges of periods are ranges of labels;
//! the names of periods and dimensions are what the `counters` table stores.

use time::OffsetDateTime;
use uuid::Uuid;

/// Calendar periods (UTC) that counters are kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Day,
    Month,
}

impl Period {
    /// As stored in `counters.period`.
    pub fn name(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    /// The period containing `ts_ms`, as `YYYY-MM-DD` or `YYYY-MM`.
    pub fn label(self, ts_ms: i64) -> String {
        let dt = datetime(ts_ms);
        match self {
            Period::Day => format!("{:04}-{:02}-{:02}", dt.year(), u8::from(dt.month()), dt.day()),
            Period::Month => format!("{:04}-{:02}", dt.year(), u8::from(dt.month())),
        }
    }
}

/// What a counter is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    /// Everything (one counter per period).
    Total,
    User,
    App,
    Provider,
    /// `provider/model`.
    Model,
    KeySource,
}

impl Dim {
    pub const ALL: [Dim; 6] = [Dim::Total, Dim::User, Dim::App, Dim::Provider, Dim::Model, Dim::KeySource];

    pub fn name(self) -> &'static str {
        match self {
            Dim::Total => "total",
            Dim::User => "user",
            Dim::App => "app",
            Dim::Provider => "provider",
            Dim::Model => "model",
            Dim::KeySource => "key_source",
        }
    }
}

/// Unix milliseconds encoded in a UUIDv7 (its first 48 bits).
pub fn id_ms(id: &Uuid) -> i64 {
    let b = id.as_bytes();
    let mut ms: i64 = 0;
    for byte in &b[..6] {
        ms = (ms << 8) | i64::from(*byte);
    }
    ms
}

/// The smallest (`fill = 0x00`) or largest (`fill = 0xff`) id key a UUIDv7 made at `ms` can have.
pub fn id_bound(ms: i64, fill: u8) -> [u8; 16] {
    let mut k = [fill; 16];
    let ms = ms.clamp(0, (1 << 48) - 1);
    for (i, slot) in k.iter_mut().take(6).enumerate() {
        *slot = ((ms >> (8 * (5 - i))) & 0xff) as u8;
    }
    k
}

pub fn datetime(ts_ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts_ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_labels_are_utc() {
        // 2024-02-29T23:59:59.999Z and one millisecond later.
        let ts = 1_709_251_199_999;
        assert_eq!(Period::Day.label(ts), "2024-02-29");
        assert_eq!(Period::Month.label(ts), "2024-02");
        assert_eq!(Period::Day.label(ts + 1), "2024-03-01");
        assert_eq!(Period::Month.label(ts + 1), "2024-03");
    }

    #[test]
    fn labels_sort_by_time_and_names_are_distinct() {
        assert!(Period::Day.label(1_704_153_600_000) < Period::Day.label(1_704_240_000_000));
        let names: std::collections::HashSet<_> = Dim::ALL.iter().map(|d| d.name()).collect();
        assert_eq!(names.len(), Dim::ALL.len());
    }

    #[test]
    fn id_bounds_bracket_v7_ids() {
        let id = Uuid::now_v7();
        let ms = id_ms(&id);
        assert!((ms - crate::clock::now_ms()).abs() < 5_000);
        assert!(id_bound(ms, 0) <= *id.as_bytes());
        assert!(id_bound(ms, 0xff) >= *id.as_bytes());
        assert!(id_bound(ms + 1, 0) > *id.as_bytes());
    }
}
