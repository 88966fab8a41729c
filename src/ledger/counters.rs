//! Period counters: running totals per (period, dimension, value), updated in the same
//! transaction as the record they count, so they always equal the sum of the records.
//!
//! Stored as little-endian 64-bit fields in a fixed order; a shorter value (written by an older
//! version) reads its missing fields as zero, a longer one (newer version) keeps working.

use super::keys::{counter_key, Dim, Period};
use crate::usage::{CallStatus, UsageRecord};
use serde::Serialize;

/// Totals for one group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counter {
    pub requests: u64,
    /// Calls whose status was not `ok` (errors and cancellations).
    pub failed: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_microusd: i64,
}

const FIELDS: usize = 8;
pub const ENCODED_LEN: usize = FIELDS * 8;

impl Counter {
    pub fn of(record: &UsageRecord) -> Counter {
        Counter {
            requests: 1,
            failed: u64::from(record.status != CallStatus::Ok),
            input_tokens: record.input_tokens,
            output_tokens: record.output_tokens,
            cached_tokens: record.cached_tokens,
            cache_write_tokens: record.cache_write_tokens,
            reasoning_tokens: record.reasoning_tokens,
            cost_microusd: record.cost_microusd,
        }
    }

    pub fn add(&mut self, o: &Counter) {
        self.requests = self.requests.saturating_add(o.requests);
        self.failed = self.failed.saturating_add(o.failed);
        self.input_tokens = self.input_tokens.saturating_add(o.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(o.output_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(o.cached_tokens);
        self.cache_write_tokens = self.cache_write_tokens.saturating_add(o.cache_write_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(o.reasoning_tokens);
        self.cost_microusd = self.cost_microusd.saturating_add(o.cost_microusd);
    }

    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    pub fn encode(&self) -> [u8; ENCODED_LEN] {
        let fields = [
            self.requests,
            self.failed,
            self.input_tokens,
            self.output_tokens,
            self.cached_tokens,
            self.cache_write_tokens,
            self.reasoning_tokens,
            self.cost_microusd as u64,
        ];
        let mut out = [0u8; ENCODED_LEN];
        for (chunk, f) in out.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&f.to_le_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Counter {
        let mut f = [0u64; FIELDS];
        for (slot, chunk) in f.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *slot = u64::from_le_bytes(b);
        }
        Counter {
            requests: f[0],
            failed: f[1],
            input_tokens: f[2],
            output_tokens: f[3],
            cached_tokens: f[4],
            cache_write_tokens: f[5],
            reasoning_tokens: f[6],
            cost_microusd: f[7] as i64,
        }
    }
}

/// Every counter key a record contributes to: each dimension, for its day and its month.
pub fn keys_for(record: &UsageRecord) -> Vec<Vec<u8>> {
    let model = format!("{}/{}", record.provider, record.model);
    let mut keys = Vec::with_capacity(Dim::ALL.len() * 2);
    for period in [Period::Day, Period::Month] {
        let label = period.label(record.ts);
        for dim in Dim::ALL {
            let value = match dim {
                Dim::Total => "",
                Dim::User => &record.user,
                Dim::App => &record.app,
                Dim::Provider => &record.provider,
                Dim::Model => &model,
                Dim::KeySource => record.key_source.as_str(),
            };
            keys.push(counter_key(period, dim, &label, value));
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_tolerates_other_lengths() {
        let c = Counter {
            requests: 3,
            failed: 1,
            input_tokens: 10,
            output_tokens: 20,
            cached_tokens: 4,
            cache_write_tokens: 2,
            reasoning_tokens: 5,
            cost_microusd: 1234,
        };
        assert_eq!(Counter::decode(&c.encode()), c);
        let short = Counter::decode(&c.encode()[..16]);
        assert_eq!((short.requests, short.failed, short.input_tokens), (3, 1, 0));
        let mut long = c.encode().to_vec();
        long.extend_from_slice(&[9; 8]);
        assert_eq!(Counter::decode(&long), c);
    }

    #[test]
    fn a_record_counts_in_twelve_groups() {
        let r = UsageRecord::new("app", "openai", "gpt-4o");
        let keys = keys_for(&r);
        assert_eq!(keys.len(), 12);
        let unique: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(unique.len(), 12);
    }
}
