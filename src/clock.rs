//! The system clock as the daemon reads it: Unix time in milliseconds (UTC).
//!
//! One function so every timestamp (usage records, key metadata, sync progress, policy periods)
//! comes from the same reading; [`millis`] is the one conversion of a duration to a millisecond
//! count. Invariant: it never panics; a clock set before 1970 reads as 0
//! and one beyond `i64::MAX` ms saturates. `policy::Clock` adds the debug-build fake offset on
//! top of this.

/// Current Unix time in milliseconds.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// A duration in whole milliseconds, saturating (for `latency_ms`, `ms` and similar fields).
pub fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_milliseconds_since_the_epoch() {
        let a = now_ms();
        // 2023-11-14 is long past; ms, not seconds or ns.
        assert!(a > 1_700_000_000_000 && a < 100_000_000_000_000, "{a}");
        assert!(now_ms() >= a);
    }
}
