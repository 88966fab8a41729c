//! Retry timing of the sync worker: its backoff settings (computed by the shared
//! [`crate::retry::full_jitter`]) and the cap on a backend's `Retry-After` (parsed by
//! [`crate::retry::parse_retry_after`]).

use std::time::Duration;

/// Longest `Retry-After` honoured from the usage backend; a larger value is capped (a broken
/// header must not stall sync for days).
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
        crate::retry::backoff_ceiling(self.initial, self.max, attempt)
    }

    /// A random delay for retry number `attempt` ([`crate::retry::full_jitter`]).
    pub fn delay(&self, attempt: u32) -> Duration {
        crate::retry::full_jitter(self.initial, self.max, attempt)
    }
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
}
