//! Per-minute request rate limits, keyed per user and per app: a sliding window log per key.
//!
//! Invariants:
//! - `requests_per_minute = N` admits at most N calls per key in ANY rolling 60 s window (each
//!   key keeps the times of its admissions in the last 60 s; a call is admitted only if fewer
//!   than N are there) — no burst-then-refill that would let 2N through in one minute;
//! - a refused call consumes nothing, for any of its keys, and its `retry_after_ms` is exact:
//!   the moment the oldest admission in the window leaves it (never 0);
//! - one log per (rate, key), so a tier change applies its new rate at once; logs that emptied
//!   are dropped now and then, so memory follows the keys active in the last minute (at most N
//!   times per key).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Length of the window, in milliseconds.
pub const WINDOW_MS: u64 = 60_000;
/// Every this many checks, empty logs are dropped.
const SWEEP_EVERY: u64 = 4096;

#[derive(Debug, Default)]
pub struct RateLimits {
    /// Admission times (monotonic ms) per (rate, key), oldest first.
    logs: Mutex<HashMap<(u32, String), VecDeque<u64>>>,
    checks: AtomicU64,
}

/// Milliseconds on a monotonic clock (since the first call).
fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl RateLimits {
    /// Takes one request for `user` and for `app` at `per_minute` (0: unlimited), or returns
    /// how many milliseconds to wait.
    pub fn check(&self, per_minute: u32, user: &str, app: &str) -> Result<(), u64> {
        self.check_at(per_minute, &[format!("user:{user}"), format!("app:{app}")], monotonic_ms())
    }

    /// [`RateLimits::check`] for `keys` at time `now` (monotonic ms; tests drive it).
    fn check_at(&self, per_minute: u32, keys: &[String], now: u64) -> Result<(), u64> {
        if per_minute == 0 {
            return Ok(());
        }
        let limit = per_minute as usize;
        let Ok(mut logs) = self.logs.lock() else { return Ok(()) };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            logs.retain(|_, log| log.back().is_some_and(|&last| last + WINDOW_MS > now));
        }
        let mut wait = 0;
        for key in keys {
            let log = logs.entry((per_minute, key.clone())).or_default();
            while log.front().is_some_and(|&t| t + WINDOW_MS <= now) {
                log.pop_front();
            }
            if log.len() >= limit {
                // Admissions leave the window oldest first; the one that makes room is this one.
                let frees = log[log.len() - limit];
                wait = wait.max((frees + WINDOW_MS).saturating_sub(now).max(1));
            }
        }
        if wait > 0 {
            return Err(wait);
        }
        for key in keys {
            logs.entry((per_minute, key.clone())).or_default().push_back(now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn keys() -> Vec<String> {
        vec!["user:u".into(), "app:a".into()]
    }

    #[test]
    fn burst_then_retry_after() {
        let r = RateLimits::default();
        for _ in 0..3 {
            assert!(r.check(3, "u", "a").is_ok());
        }
        let wait = r.check(3, "u", "a").unwrap_err();
        assert!(wait > 59_000 && wait <= 60_000, "{wait}");
        assert!(r.check(100, "u", "a").is_ok(), "another rate is another log");
        assert!(r.check(0, "u", "a").is_ok(), "0 is unlimited");
    }

    /// A 200-call burst, then sustained load (a call every 100 ms for 62 s) at 100/minute:
    /// no rolling 60 s window ever holds more than 100 admissions, and each refusal's
    /// `retry_after_ms` is exactly when the next call gets in.
    #[test]
    fn no_rolling_minute_holds_more_than_the_limit() {
        let r = RateLimits::default();
        let mut admitted: Vec<u64> = Vec::new();
        let start = 1_000_000;
        for _ in 0..200 {
            if r.check_at(100, &keys(), start).is_ok() {
                admitted.push(start);
            }
        }
        assert_eq!(admitted.len(), 100, "the burst stops at the limit");
        let mut t = start;
        while t < start + 62_000 {
            t += 100;
            match r.check_at(100, &keys(), t) {
                Ok(()) => admitted.push(t),
                Err(wait) => {
                    assert!(wait >= 1);
                    // Exact: just before the wait it is still refused, at it admitted.
                    if wait > 1 {
                        assert!(RateLimits::check_at(&r, 100, &keys(), t + wait - 1).is_err());
                    }
                }
            }
        }
        for (i, &a) in admitted.iter().enumerate() {
            let in_window = admitted[i..].iter().take_while(|&&b| b < a + WINDOW_MS).count();
            assert!(in_window <= 100, "{in_window} admissions in the minute from {a}");
        }
        // After the first minute the sustained load gets its 100 again.
        assert!(admitted.iter().filter(|&&a| a >= start + WINDOW_MS).count() >= 15);
    }

    #[test]
    fn retry_after_is_exact_and_a_refusal_consumes_nothing() {
        let r = RateLimits::default();
        assert!(r.check_at(2, &keys(), 0).is_ok());
        assert!(r.check_at(2, &keys(), 10_000).is_ok());
        assert_eq!(r.check_at(2, &keys(), 30_000), Err(30_000));
        assert_eq!(r.check_at(2, &keys(), 59_999), Err(1));
        assert!(r.check_at(2, &keys(), 60_000).is_ok());
        assert_eq!(r.check_at(2, &keys(), 60_001), Err(9_999));
        // A full app log refuses without using up the user's room.
        let other_app = vec!["user:u".to_string(), "app:b".to_string()];
        let s = RateLimits::default();
        assert!(s.check_at(1, &keys(), 0).is_ok());
        assert!(s.check_at(1, &other_app, 1).is_err(), "the user's log is full");
        assert!(s.check_at(1, &["user:v".to_string(), "app:a".to_string()], 2).is_err());
        assert!(s.check_at(1, &["user:v".to_string(), "app:c".to_string()], 3).is_ok());
    }
}
