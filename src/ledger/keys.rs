//! Byte layouts of the ledger's keys, and the UTC periods a record counts towards.
//!
//! - records / outbox / dead letters: the 16 id bytes of a UUIDv7, so keys sort by time;
//! - counters: `kind 0 dim 0 period 0 value`, where `kind` is `d` (day) or `m` (month), `period`
//!   is `YYYY-MM-DD` or `YYYY-MM` (fixed width, so ranges of periods are ranges of keys) and
//!   `value` the grouped value (a NUL in it is replaced, so the separator stays unambiguous).

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// A counter key.
pub fn counter_key(period: Period, dim: Dim, label: &str, value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + dim.name().len() + label.len() + value.len());
    k.push(period.tag());
    k.push(0);
    k.extend_from_slice(dim.name().as_bytes());
    k.push(0);
    k.extend_from_slice(label.as_bytes());
    k.push(0);
    if value.contains('\0') {
        k.extend_from_slice(value.replace('\0', "\u{fffd}").as_bytes());
    } else {
        k.extend_from_slice(value.as_bytes());
    }
    k
}

/// The key range holding every counter of `dim` for periods `from..=to` (labels).
pub fn counter_range(period: Period, dim: Dim, from: &str, to: &str) -> (Vec<u8>, Vec<u8>) {
    let start = counter_key(period, dim, from, "");
    let mut end = counter_key(period, dim, to, "");
    end.pop(); // drop the trailing separator: `to` followed by 0x01 bounds every value of `to`
    end.push(1);
    (start, end)
}

/// Splits a counter key into `(period label, value)`.
pub fn split_counter_key(key: &[u8]) -> Option<(String, String)> {
    let mut parts = key.splitn(4, |b| *b == 0);
    let _kind = parts.next()?;
    let _dim = parts.next()?;
    let label = std::str::from_utf8(parts.next()?).ok()?.to_string();
    let value = String::from_utf8_lossy(parts.next()?).into_owned();
    Some((label, value))
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
    fn counter_keys_sort_by_period_and_split_back() {
        let a = counter_key(Period::Day, Dim::App, "2024-01-02", "zed");
        let b = counter_key(Period::Day, Dim::App, "2024-01-03", "aaa");
        assert!(a < b);
        let (lo, hi) = counter_range(Period::Day, Dim::App, "2024-01-02", "2024-01-02");
        assert!(lo <= a && a < hi);
        assert!(b >= hi);
        let other_dim = counter_key(Period::Day, Dim::Model, "2024-01-02", "x");
        assert!(!(lo <= other_dim && other_dim < hi));
        assert_eq!(split_counter_key(&a), Some(("2024-01-02".into(), "zed".into())));
        let nul = counter_key(Period::Month, Dim::Model, "2024-01", "a\0b");
        assert_eq!(split_counter_key(&nul).map(|(_, v)| v), Some("a\u{fffd}b".into()));
    }

    #[test]
    fn id_bounds_bracket_v7_ids() {
        let id = Uuid::now_v7();
        let ms = id_ms(&id);
        assert!((ms - crate::usage::now_ms()).abs() < 5_000);
        assert!(id_bound(ms, 0) <= *id.as_bytes());
        assert!(id_bound(ms, 0xff) >= *id.as_bytes());
        assert!(id_bound(ms + 1, 0) > *id.as_bytes());
    }
}
