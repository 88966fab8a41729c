//! Retry timing: full-jitter exponential backoff and `Retry-After`.

use std::time::{Duration, SystemTime};

/// Longest `Retry-After` honoured; a larger value is capped (a broken header must not stall
/// sync for days).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Full-jitter exponential backoff: the n-th retry waits a random time in
/// `[0, min(max, initial * 2^(n-1))]`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    /// `None` unless `0 < initial <= max`.
    pub fn new(initial: Duration, max: Duration) -> Option<Backoff> {
        (!initial.is_zero() && initial <= max).then_some(Backoff { initial, max })
    }

    /// Like [`Backoff::new`], but corrects nonsense (a zero `initial`, `max` below `initial`)
    /// instead of refusing it; config validation reports such values first.
    pub fn clamped(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.max(Duration::from_millis(1));
        Backoff { initial, max: max.max(initial) }
    }

    /// The ceiling for retry number `attempt` (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1).min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// A random delay for retry number `attempt`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(fastrand::u64(0..=ms))
    }
}

/// Parses a `Retry-After` value: delay seconds or an HTTP date. Capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let d = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(d.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_cap_and_delay_stays_below() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300)).expect("valid");
        assert_eq!(b.ceiling(1), Duration::from_secs(1));
        assert_eq!(b.ceiling(2), Duration::from_secs(2));
        assert_eq!(b.ceiling(9), Duration::from_secs(256));
        assert_eq!(b.ceiling(10), Duration::from_secs(300));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(300));
        for attempt in 1..20 {
            assert!(b.delay(attempt) <= b.ceiling(attempt));
        }
        assert!(Backoff::new(Duration::ZERO, Duration::from_secs(1)).is_none());
        assert!(Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).is_none());
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
