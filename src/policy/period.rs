//! The clock and the quota period: UTC calendar months, or anchored to the entitlement's
//! `period_start`/`period_end`.
//!
//! The clock is the system clock, except in debug builds where `LLM_SIDECAR_FAKE_NOW` (Unix ms
//! or RFC 3339) sets the start time (the fake clock then advances in real time), so tests can
//! move across a period boundary over the socket. Release builds ignore the variable.

use time::{Date, Month, OffsetDateTime, Time};

/// Wall-clock time in Unix milliseconds.
#[derive(Debug, Clone)]
pub struct Clock {
    /// `fake start ms - real start ms` when faked.
    offset_ms: Option<i64>,
}

impl Clock {
    pub fn system() -> Clock {
        Clock { offset_ms: None }
    }

    /// The system clock, or the fake one in debug builds when `LLM_SIDECAR_FAKE_NOW` is set.
    pub fn from_env() -> Clock {
        #[cfg(debug_assertions)]
        if let Some(start) = std::env::var("LLM_SIDECAR_FAKE_NOW").ok().and_then(|v| parse_time(&v)) {
            tracing::warn!(fake_now_ms = start, "using a fake clock (LLM_SIDECAR_FAKE_NOW, debug build)");
            return Clock { offset_ms: Some(start - crate::clock::now_ms()) };
        }
        Clock::system()
    }

    pub fn now_ms(&self) -> i64 {
        crate::clock::now_ms() + self.offset_ms.unwrap_or(0)
    }

    pub fn is_fake(&self) -> bool {
        self.offset_ms.is_some()
    }
}

/// Unix ms or RFC 3339.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(ms) = s.trim().parse::<i64>() {
        return Some(ms);
    }
    let dt = OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(dt.unix_timestamp_nanos() / 1_000_000).ok()
}

/// A quota period, `[start_ms, end_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub start_ms: i64,
    pub end_ms: i64,
    /// It is exactly one UTC calendar month (so the ledger's month counters apply).
    pub calendar: bool,
}

impl Bounds {
    /// The UTC calendar month containing `now_ms`.
    pub fn calendar_month(now_ms: i64) -> Bounds {
        let dt = OffsetDateTime::from_unix_timestamp(now_ms.div_euclid(1000)).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let (y, m) = (dt.year(), dt.month());
        let (ny, nm) = if m == Month::December { (y + 1, Month::January) } else { (y, m.next()) };
        let ms = |y: i32, m: Month| {
            Date::from_calendar_date(y, m, 1)
                .map(|d| d.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp() * 1000)
                .unwrap_or(0)
        };
        Bounds { start_ms: ms(y, m), end_ms: ms(ny, nm), calendar: true }
    }

    /// `anchored`: the entitlement's period if `now_ms` is inside it, else the calendar month.
    pub fn anchored(now_ms: i64, start_ms: i64, end_ms: i64) -> Bounds {
        if start_ms <= now_ms && now_ms < end_ms {
            Bounds { start_ms, end_ms, calendar: false }
        } else {
            Bounds::calendar_month(now_ms)
        }
    }

    /// The ledger's label of the month (only meaningful when `calendar`).
    pub fn month_label(&self) -> String {
        crate::ledger::Period::Month.label(self.start_ms)
    }

    /// RFC 3339 of a Unix ms time.
    pub fn rfc3339(ms: i64) -> String {
        OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
            .ok()
            .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default()
    }

    /// `used` extrapolated linearly to the end of the period.
    pub fn project(&self, now_ms: i64, used: u64) -> u64 {
        let elapsed = (now_ms - self.start_ms).max(1) as u128;
        let total = (self.end_ms - self.start_ms).max(1) as u128;
        u64::try_from(u128::from(used) * total / elapsed.min(total)).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn calendar_months_roll_over_in_utc() {
        let dec = parse_time("2025-12-31T23:59:59Z").unwrap();
        let b = Bounds::calendar_month(dec);
        assert_eq!(Bounds::rfc3339(b.start_ms), "2025-12-01T00:00:00Z");
        assert_eq!(Bounds::rfc3339(b.end_ms), "2026-01-01T00:00:00Z");
        assert_eq!(b.month_label(), "2025-12");
        let jan = Bounds::calendar_month(dec + 1000);
        assert_eq!(jan.start_ms, b.end_ms);
        let a = Bounds::anchored(dec, dec - 10, dec + 10);
        assert!(!a.calendar);
        assert_eq!(Bounds::anchored(dec + 20, dec - 10, dec + 10), Bounds::calendar_month(dec + 20));
        assert_eq!(b.project(b.start_ms + (b.end_ms - b.start_ms) / 2, 10), 20);
    }
}
