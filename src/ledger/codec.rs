//! How a usage record is stored: the value in `records`, and an inline outbox entry.
//!
//! Format: one version byte, [`V1`], then the record as a MessagePack array of its fields in
//! declaration order (`rmp_serde::to_vec`). It is about a fifth of the record's JSON, and a
//! sled leaf is copied and logged whole on every write, so the size is most of a commit's cost.
//! Ledgers written before it hold JSON objects, which start with `{`; both are read.
//!
//! Invariant: the array is positional, so [`UsageRecord`] fields are never reordered or
//! removed; a new field goes at the end with `#[serde(default)]`, and older values (one element
//! short) still decode. Anything that leaves the ledger (sync, export, dead letters, RPC results)
//! is JSON made from the decoded record, never these bytes.

use super::LedgerError;
use crate::usage_record::UsageRecord;

/// The first byte of a version-1 value.
pub const V1: u8 = 1;

/// The stored bytes of `r`.
pub fn encode(r: &UsageRecord) -> Result<Vec<u8>, LedgerError> {
    let mut out = Vec::with_capacity(128);
    out.push(V1);
    rmp_serde::encode::write(&mut out, r).map_err(|e| LedgerError::Corrupt(format!("encoding a usage record: {e}")))?;
    Ok(out)
}

/// The record in stored bytes of either format.
pub fn decode(v: &[u8]) -> Result<UsageRecord, LedgerError> {
    match v.split_first() {
        Some((&V1, rest)) => {
            rmp_serde::from_slice(rest).map_err(|e| LedgerError::Corrupt(format!("usage record: {e}")))
        }
        Some((b'{', _)) => serde_json::from_slice(v).map_err(|e| LedgerError::Corrupt(format!("usage record: {e}"))),
        _ => Err(LedgerError::Corrupt("usage record in an unknown format".into())),
    }
}

/// The record in stored bytes as JSON (what dead letters carry).
pub fn to_json(v: &[u8]) -> Result<Vec<u8>, LedgerError> {
    serde_json::to_vec(&decode(v)?).map_err(|e| LedgerError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record() -> UsageRecord {
        let mut r = UsageRecord::new("app \"quoted\"", "openai", "gpt-4o-mini");
        r.input_tokens = u64::MAX;
        r.cost_microusd = -5;
        r.ttft_ms = Some(12);
        r.error_code = Some("timeout".into());
        r
    }

    #[test]
    fn round_trips_and_is_smaller_than_json() {
        let r = record();
        let stored = encode(&r).unwrap();
        assert_eq!(stored[0], V1);
        assert_eq!(decode(&stored).unwrap(), r);
        let json = serde_json::to_vec(&r).unwrap();
        assert!(stored.len() * 2 < json.len(), "{} vs {} bytes", stored.len(), json.len());
        assert_eq!(serde_json::from_slice::<UsageRecord>(&to_json(&stored).unwrap()).unwrap(), r);
    }

    #[test]
    fn reads_records_stored_as_json() {
        let r = record();
        assert_eq!(decode(&serde_json::to_vec(&r).unwrap()).unwrap(), r);
    }

    /// The rule for new fields holds with this encoding: a value written before a field was
    /// appended (with `#[serde(default)]`) still decodes.
    #[test]
    fn a_field_appended_with_a_default_reads_older_values() {
        #[derive(serde::Serialize)]
        struct Before {
            a: u32,
            b: String,
        }
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct After {
            a: u32,
            b: String,
            #[serde(default)]
            c: u64,
        }
        let old = rmp_serde::to_vec(&Before { a: 1, b: "x".into() }).unwrap();
        assert_eq!(rmp_serde::from_slice::<After>(&old).unwrap(), After { a: 1, b: "x".into(), c: 0 });
    }

    #[test]
    fn rejects_damage() {
        let stored = encode(&record()).unwrap();
        for bad in [&stored[..stored.len() - 1], &[][..], &[7, 1, 2][..], &b"{\"id\":"[..]] {
            assert!(matches!(decode(bad), Err(LedgerError::Corrupt(_))), "{bad:?}");
        }
    }
}
