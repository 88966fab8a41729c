//! Retry timing shared by the router (provider calls) and the sync worker (backend uploads):
//! full-jitter exponential backoff and the `Retry-After` parser.
//!
//! Invariants: nothing here panics on what a server sends (huge, negative, fractional, NaN or
//! garbage values are capped or refused) or on any attempt number (the arithmetic saturates);
//! every duration returned is at most the caller's cap, because the callers differ in how long
//! they may wait (router: `router.backoff_max_ms`, sync: `sync.backoff_max_ms`).

use std::time::{Duration, SystemTime};

/// The longest wait before retry number `attempt` (1 = the first retry):
/// `min(cap, base * 2^(attempt - 1))`, saturating. Attempt 0 counts as 1.
pub fn backoff_ceiling(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(31);
    base.saturating_mul(factor).min(cap)
}

/// Full-jitter exponential backoff: a uniformly random wait in
/// `[0, backoff_ceiling(base, cap, attempt)]`, in whole milliseconds.
pub fn full_jitter(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let ms = crate::clock::millis(backoff_ceiling(base, cap, attempt));
    Duration::from_millis(fastrand::u64(0..=ms))
}

/// Parses a `Retry-After` value: delay seconds (fractions accepted, as some providers send
/// them) or an HTTP date, counted from `now` (a date in the past means "now": zero). The result
/// is at most `cap`; anything else (negative, not a number, not a date) is `None`.
pub fn parse_retry_after(value: &str, now: SystemTime, cap: Duration) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return seconds(secs, cap);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO).min(cap))
}

/// A finite, non-negative number of seconds as a duration of at most `cap` (a value too large
/// for a `Duration` is the cap, not a panic); `None` for negative, NaN or infinite values.
pub fn seconds(secs: f64, cap: Duration) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0).then(|| Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX).min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn backoff_doubles_from_base_up_to_the_cap() {
        let (base, cap) = (Duration::from_millis(250), Duration::from_secs(8));
        assert_eq!(backoff_ceiling(base, cap, 0), base);
        assert_eq!(backoff_ceiling(base, cap, 1), base);
        assert_eq!(backoff_ceiling(base, cap, 2), Duration::from_millis(500));
        assert_eq!(backoff_ceiling(base, cap, 6), Duration::from_secs(8));
        assert_eq!(backoff_ceiling(base, cap, 7), cap);
        assert_eq!(backoff_ceiling(base, cap, u32::MAX), cap);
        assert_eq!(backoff_ceiling(Duration::MAX, Duration::MAX, u32::MAX), Duration::MAX);
        for attempt in [0, 1, 2, 5, 30, u32::MAX] {
            for _ in 0..50 {
                assert!(full_jitter(base, cap, attempt) <= backoff_ceiling(base, cap, attempt));
            }
        }
        assert_eq!(full_jitter(base, Duration::ZERO, 3), Duration::ZERO);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now, HOUR), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 7 ", now, HOUR), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("1.5", now, HOUR), Some(Duration::from_millis(1500)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&later, now, HOUR), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past, now, HOUR), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now, HOUR), None);
        assert_eq!(parse_retry_after("-1", now, HOUR), None);
        assert_eq!(parse_retry_after("NaN", now, HOUR), None);
        assert_eq!(parse_retry_after("inf", now, HOUR), None);
    }

    #[test]
    fn retry_after_is_capped_by_the_caller() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("999999", now, HOUR), Some(HOUR));
        assert_eq!(parse_retry_after("999999", now, Duration::MAX), Some(Duration::from_secs(999_999)));
        let far = httpdate::fmt_http_date(now + Duration::from_secs(86_400));
        assert_eq!(parse_retry_after(&far, now, HOUR), Some(HOUR));
        // Too large for a Duration: the cap, never a panic.
        assert_eq!(parse_retry_after("1e300", now, HOUR), Some(HOUR));
        assert_eq!(parse_retry_after("1e300", now, Duration::MAX), Some(Duration::MAX));
        assert_eq!(seconds(1e300, Duration::from_secs(5)), Some(Duration::from_secs(5)));
        assert_eq!(seconds(-0.5, Duration::MAX), None);
    }
}
