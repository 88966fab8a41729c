//! The usage record: one row per metered call (design §5). Shared by `providers`/`router` (which
//! produce the numbers), `ledger` (which stores them), `sync` (which ships them) and `policy`
//! (which counts them).
//!
//! Money is integer micro-dollars (`1 USD = 1_000_000`); token counts are unsigned. `id` is a
//! UUIDv7 made here (never a provider's id; [`id_from_ms`] for a record stamped with another time
//! than now), so records sort by time and serve as CloudEvent ids.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where the key of a call came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// The user's own key from the vault.
    #[default]
    Byok,
    /// A platform key (e.g. from an environment variable named in config).
    Platform,
    /// No key needed (local models such as Ollama).
    Local,
}

impl KeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Byok => "byok",
            KeySource::Platform => "platform",
            KeySource::Local => "local",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    #[default]
    Ok,
    Error,
    Cancelled,
}

/// Token counts of one call. `input` counts every prompt token the provider billed (including
/// cached ones); `cached` is the part read from cache; `output` includes `reasoning`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenUsage {
    pub input: u64,
    pub output: u64,
    pub cached: u64,
    pub cache_write: u64,
    pub reasoning: u64,
    /// True when the provider reported nothing and the numbers are the daemon's estimate.
    pub estimated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UsageRecord {
    pub id: Uuid,
    /// Unix time in milliseconds (UTC) when the call finished.
    pub ts: i64,
    pub app: String,
    pub user: String,
    pub provider: String,
    pub model: String,
    /// The route or alias the app asked for (`fast`, `openai/gpt-4o-mini`, ...).
    pub route: String,
    pub key_source: KeySource,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    #[serde(default)]
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub usage_estimated: bool,
    pub cost_microusd: i64,
    /// Part of `cost_microusd`-style charges billed as tier overage (0 when within the quota).
    #[serde(default)]
    pub overage_microusd: i64,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    pub status: CallStatus,
    pub error_code: Option<String>,
    pub attempts: u32,
    /// The CloudEvents `source` of the device the record was made on, when that is not this
    /// device (an imported record keeps its original device's source, so a backend that
    /// deduplicates on source + id never counts it twice). `None`: made here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl UsageRecord {
    /// A new record with a fresh time-ordered id and the current time.
    pub fn new(app: impl Into<String>, provider: impl Into<String>, model: impl Into<String>) -> UsageRecord {
        UsageRecord {
            id: Uuid::now_v7(),
            ts: crate::clock::now_ms(),
            app: app.into(),
            user: "local".into(),
            provider: provider.into(),
            model: model.into(),
            route: String::new(),
            key_source: KeySource::default(),
            input_tokens: 0,
            output_tokens: 0,
            cached_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            usage_estimated: false,
            cost_microusd: 0,
            overage_microusd: 0,
            latency_ms: 0,
            ttft_ms: None,
            status: CallStatus::Ok,
            error_code: None,
            attempts: 1,
            source: None,
        }
    }

    pub fn set_tokens(&mut self, u: &TokenUsage) {
        self.input_tokens = u.input;
        self.output_tokens = u.output;
        self.cached_tokens = u.cached;
        self.cache_write_tokens = u.cache_write;
        self.reasoning_tokens = u.reasoning;
        self.usage_estimated = u.estimated;
    }

    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// A fresh UUIDv7 for a record whose time is `ms` (Unix milliseconds) rather than now: an app's
/// own `ts`, or the policy's fake clock. Ids stay time-ordered like [`Uuid::now_v7`]'s; a time
/// before 1970 counts as 1970.
pub fn id_from_ms(ms: i64) -> Uuid {
    let ms = u64::try_from(ms).unwrap_or(0);
    let nanos = u32::try_from(ms % 1000 * 1_000_000).unwrap_or(0);
    Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_from_ms_carries_the_millisecond_and_sorts_by_it() {
        let ms = 1_700_000_000_123;
        let id = id_from_ms(ms);
        assert_eq!(id.get_version_num(), 7);
        let (secs, nanos) = id.get_timestamp().expect("v7 has a timestamp").to_unix();
        assert_eq!((secs, nanos), (1_700_000_000, 123_000_000));
        assert!(id_from_ms(ms + 1) > id);
        assert!(id_from_ms(ms - 1) < id);
        assert_eq!(id_from_ms(-5).get_timestamp().map(|t| t.to_unix()), Some((0, 0)));
    }
}
