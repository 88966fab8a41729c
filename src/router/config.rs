//! `[router]` (retries, deadline, cooldown, timeouts) and `[routes.<name>]` (ordered targets).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// `[router]`: how hard to try before giving up on a target or a call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Retries of the same target after a retryable failure (so `max_retries + 1` attempts).
    pub max_retries: u32,
    /// Full-jitter backoff: the n-th retry waits a random time in `[0, min(max, base * 2^n))`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// A `Retry-After` longer than this (or past the deadline) makes the router fall back instead.
    pub max_retry_after_ms: u64,
    /// Per-call budget for getting an answer started: retries, backoff and fallbacks stop when
    /// it is spent. (A stream that has started is then bounded by the idle timeout only.)
    pub deadline_ms: u64,
    /// Consecutive failed attempts after which a target is skipped for `cooldown_secs`.
    pub cooldown_failures: u32,
    pub cooldown_secs: u64,
    pub connect_timeout_ms: u64,
    /// From sending a request to its response head. Non-streaming calls get no head until the
    /// whole answer is ready, so slow (reasoning) models may need more.
    pub first_byte_timeout_ms: u64,
    /// Between two reads of a response body.
    pub idle_timeout_ms: u64,
    /// Idle pooled connections are closed after this long.
    pub pool_idle_secs: u64,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            max_retries: 2,
            backoff_base_ms: 250,
            backoff_max_ms: 8_000,
            max_retry_after_ms: 30_000,
            deadline_ms: 300_000,
            cooldown_failures: 3,
            cooldown_secs: 30,
            connect_timeout_ms: 10_000,
            first_byte_timeout_ms: 120_000,
            idle_timeout_ms: 120_000,
            pool_idle_secs: 90,
        }
    }
}

impl RouterConfig {
    pub fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// Checks ranges; returns the dotted key and the problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((format!("router.{k}"), m.to_string()));
        if self.max_retries > 10 {
            return bad("max_retries", "must be at most 10");
        }
        if self.backoff_base_ms == 0 || self.backoff_max_ms < self.backoff_base_ms {
            return bad(
                "backoff_max_ms",
                "backoff_base_ms must be at least 1 and backoff_max_ms at least backoff_base_ms",
            );
        }
        for (k, v) in [
            ("deadline_ms", self.deadline_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("first_byte_timeout_ms", self.first_byte_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ] {
            if v == 0 || v > 3_600_000 {
                return bad(k, "must be between 1 and 3600000 milliseconds");
            }
        }
        if self.cooldown_failures == 0 {
            return bad("cooldown_failures", "must be at least 1");
        }
        Ok(())
    }
}

/// `[routes.<name>]`: `targets = ["provider/model", ...]`, tried in order. A route with one
/// target is an alias.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    pub targets: Vec<String>,
}

pub type RoutesConfig = BTreeMap<String, RouteConfig>;
