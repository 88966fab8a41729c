//! Retry timing shared by the router (provider calls) and the sync worker (backend uploads):
//! the `Retry-After` parser.
//!
//! Invariants: nothing here panics on what a server sends (huge, negative, fractional, NaN or
//! garbage values are capped or refused); every duration returned is at most the caller's cap,
//! because the callers differ in how long a server may make them wait.

use std::time::{Duration, SystemTime};

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
