//! Byte layouts of the ledger's keys, and the UTC periods a record counts towards.
//!
//! - records / dead letters: the 16 id bytes of a UUIDv7, so keys sort by time;
//! - counters: `kind label`, one entry per period, where `kind` is `d` (day) or `m` (month) and
//!   `label` is `YYYY-MM-DD` or `YYYY-MM` (fixed width, so ranges of periods are ranges of keys).
//!   The entry holds every group's counter for that period (see `counters`).

use time::OffsetDateTime;
use uuid::Uuid;

/// Calendar periods (UTC) that counters are kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Day,
    Month,
}

impl Period {
    fn tag(self) -> u8 {
        match self {
            Period::Day => b'd',
            Period::Month => b'm',
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

    /// Stable one-byte code used on disk.
    pub fn code(self) -> u8 {
        match self {
            Dim::Total => 0,
            Dim::User => 1,
            Dim::App => 2,
            Dim::Provider => 3,
            Dim::Model => 4,
            Dim::KeySource => 5,
        }
    }

    pub fn from_code(c: u8) -> Option<Dim> {
        Dim::ALL.into_iter().find(|d| d.code() == c)
    }
}

/// Key of the counters of one period.
pub fn period_key(period: Period, label: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + label.len());
    k.push(period.tag());
    k.extend_from_slice(label.as_bytes());
    k
}

/// The keys of periods `from..=to` (labels).
pub fn period_range(period: Period, from: &str, to: &str) -> std::ops::RangeInclusive<Vec<u8>> {
    period_key(period, from)..=period_key(period, to)
}

/// The label of a period key.
pub fn key_label(key: &[u8]) -> Option<String> {
    std::str::from_utf8(key.get(1..)?).ok().map(str::to_string)
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
    fn period_keys_sort_by_period() {
        let a = period_key(Period::Day, "2024-01-02");
        let b = period_key(Period::Day, "2024-01-03");
        assert!(a < b);
        assert!(period_range(Period::Day, "2024-01-01", "2024-01-02").contains(&a));
        assert!(!period_range(Period::Day, "2024-01-01", "2024-01-02").contains(&b));
        assert!(!period_range(Period::Month, "2024-01", "2024-12").contains(&a));
        assert_eq!(key_label(&a).as_deref(), Some("2024-01-02"));
        for d in Dim::ALL {
            assert_eq!(Dim::from_code(d.code()), Some(d));
        }
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
