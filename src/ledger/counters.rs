//! Period counters: running totals per (period, dimension, value), updated in the same
//! transaction as the record they count, so they always equal the sum of the records.
//!
//! One sled entry per period ([`Groups`]) holds the counter of every group of that period, so a
//! commit round writes two counter entries (its day and its month) however many groups it
//! touches. A [`Counter`] is stored as little-endian 64-bit fields in a fixed order, behind its
//! length: a shorter one (written by an older version) reads its missing fields as zero, a
//! longer one (newer version) keeps working.

use super::key_layout::{period_key, Dim, Period};
use crate::usage_record::{CallStatus, UsageRecord};
use serde::Serialize;
use std::collections::BTreeMap;

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

/// The counters of one period: `(dimension, value) → Counter`.
pub type Groups = BTreeMap<(Dim, String), Counter>;

/// Encodes as repeated `dim (u8) | value length (u16 LE) | value | counter length (u8) | counter`.
pub fn encode_groups(groups: &Groups) -> Vec<u8> {
    let mut out = Vec::with_capacity(groups.len() * (ENCODED_LEN + 24));
    for ((dim, value), c) in groups {
        let v = &value.as_bytes()[..value.len().min(u16::MAX as usize)];
        out.push(dim.code());
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        out.extend_from_slice(v);
        out.push(ENCODED_LEN as u8);
        out.extend_from_slice(&c.encode());
    }
    out
}

/// Decodes [`encode_groups`]; `None` if malformed. Unknown dimensions are skipped.
pub fn decode_groups(mut v: &[u8]) -> Option<Groups> {
    let mut out = Groups::new();
    while !v.is_empty() {
        let code = *v.first()?;
        let len = u16::from_le_bytes(v.get(1..3)?.try_into().ok()?) as usize;
        let value = std::str::from_utf8(v.get(3..3 + len)?).ok()?.to_string();
        let clen = *v.get(3 + len)? as usize;
        let counter = Counter::decode(v.get(4 + len..4 + len + clen)?);
        if let Some(dim) = Dim::from_code(code) {
            out.insert((dim, value), counter);
        }
        v = &v[4 + len + clen..];
    }
    Some(out)
}

/// The period keys a record counts towards (its day and its month).
pub fn periods_of(record: &UsageRecord) -> [Vec<u8>; 2] {
    [period_key(Period::Day, &Period::Day.label(record.ts)), period_key(Period::Month, &Period::Month.label(record.ts))]
}

/// The groups a record counts in, one per dimension.
pub fn groups_of(record: &UsageRecord) -> Vec<(Dim, String)> {
    Dim::ALL
        .into_iter()
        .map(|dim| {
            let value = match dim {
                Dim::Total => String::new(),
                Dim::User => record.user.clone(),
                Dim::App => record.app.clone(),
                Dim::Provider => record.provider.clone(),
                Dim::Model => format!("{}/{}", record.provider, record.model),
                Dim::KeySource => record.key_source.as_str().to_string(),
            };
            (dim, value)
        })
        .collect()
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
    fn groups_round_trip() {
        let r = UsageRecord::new("app", "openai", "gpt-4o");
        let mut g = Groups::new();
        for key in groups_of(&r) {
            g.entry(key).or_default().add(&Counter::of(&r));
        }
        assert_eq!(g.len(), 6);
        assert_eq!(g[&(Dim::Model, "openai/gpt-4o".to_string())].requests, 1);
        let bytes = encode_groups(&g);
        assert_eq!(decode_groups(&bytes), Some(g));
        assert!(decode_groups(&bytes[..bytes.len() - 1]).is_none());
        assert_eq!(periods_of(&r)[0][0], b'd');
    }
}
