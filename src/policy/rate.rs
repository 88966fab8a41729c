//! Per-minute request rate limits, keyed per user and per app (GCRA via `governor`).
//!
//! One keyed limiter per distinct `requests_per_minute` value, so a tier change applies the new
//! rate at once. A refused call consumes nothing.

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct RateLimits {
    limiters: Mutex<HashMap<u32, Arc<DefaultKeyedRateLimiter<String>>>>,
}

impl RateLimits {
    /// Takes one request for `user` and for `app` at `per_minute`, or returns how long to wait.
    pub fn check(&self, per_minute: u32, user: &str, app: &str) -> Result<(), u64> {
        let Some(n) = NonZeroU32::new(per_minute) else { return Ok(()) };
        let limiter = {
            let Ok(mut map) = self.limiters.lock() else { return Ok(()) };
            map.entry(per_minute).or_insert_with(|| Arc::new(RateLimiter::keyed(Quota::per_minute(n)))).clone()
        };
        let clock = DefaultClock::default();
        for key in [format!("user:{user}"), format!("app:{app}")] {
            if let Err(not_until) = limiter.check_key(&key) {
                let wait = not_until.wait_time_from(clock.now());
                return Err(crate::clock::millis(wait).max(1));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn burst_then_retry_after() {
        let r = RateLimits::default();
        for _ in 0..3 {
            assert!(r.check(3, "u", "a").is_ok());
        }
        let wait = r.check(3, "u", "a").unwrap_err();
        assert!(wait > 0 && wait <= 20_000, "{wait}");
        assert!(r.check(100, "u", "a").is_ok(), "another rate is another limiter");
    }
}
