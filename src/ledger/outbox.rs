//! Outbox segments: the records of one commit round, waiting for the sync backend.
//!
//! Writing one outbox entry per round instead of one per record halves the sled writes of a
//! commit (sled inserts dominate its cost). A segment is keyed by an 8-byte big-endian sequence
//! number (so segments keep commit order) and holds entries sorted by record id, each encoded as
//! `id (16 bytes) | length (u32 LE) | record JSON`.
//!
//! An entry of length 0 is a *reference*: its record is the one stored under the same id in the
//! `records` tree (no record is empty JSON). A commit writes references, so a record's bytes are
//! written once, not twice; entries that must outlive the history (a `clear` of the records, a
//! requeue from the dead letters) carry the record inline. Entries leave a segment when the
//! backend accepted or refused them; an emptied segment is removed.

use uuid::Uuid;

/// Largest number of records in one segment (a bigger round writes several).
pub const MAX_ENTRIES: usize = 1024;

/// Where one queued record sits: its segment and its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Queued {
    pub seq: u64,
    pub id: Uuid,
}

pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub fn key_seq(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}

/// Encodes entries (which must already be sorted by id).
pub fn encode<'a>(entries: impl IntoIterator<Item = (&'a [u8; 16], &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, value) in entries {
        out.extend_from_slice(id);
        out.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// Encodes references (ids sorted) to records stored in the `records` tree.
pub fn encode_refs<'a>(ids: impl IntoIterator<Item = &'a [u8; 16]>) -> Vec<u8> {
    encode(ids.into_iter().map(|id| (id, &[][..])))
}

/// True if the entry's record lives in the `records` tree rather than inline.
pub fn is_ref(value: &[u8]) -> bool {
    value.is_empty()
}

/// Decodes a segment into `(id, record bytes)` pairs (empty bytes: a reference, see
/// [`is_ref`]); `None` if it is malformed.
pub fn decode(mut v: &[u8]) -> Option<Vec<([u8; 16], &[u8])>> {
    let mut out = Vec::new();
    while !v.is_empty() {
        let id: [u8; 16] = v.get(..16)?.try_into().ok()?;
        let len = u32::from_le_bytes(v.get(16..20)?.try_into().ok()?) as usize;
        let value = v.get(20..20 + len)?;
        out.push((id, value));
        v = &v[20 + len..];
    }
    Some(out)
}

/// Number of entries in a segment (0 if malformed).
pub fn count(v: &[u8]) -> u64 {
    decode(v).map_or(0, |e| e.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_round_trip_and_reject_garbage() {
        let a = [1u8; 16];
        let b = [2u8; 16];
        let seg = encode([(&a, &b"{\"x\":1}"[..]), (&b, &b""[..])]);
        let back = decode(&seg).expect("valid");
        assert_eq!(back, vec![(a, &b"{\"x\":1}"[..]), (b, &b""[..])]);
        assert_eq!(count(&seg), 2);
        assert!(decode(&seg[..seg.len() - 3]).is_none());
        assert_eq!(decode(&[]).map(|v| v.len()), Some(0));
        assert_eq!(key_seq(&seq_key(42)), Some(42));
        let refs = encode_refs([&a, &b]);
        assert_eq!(refs.len(), 40);
        let back = decode(&refs).expect("valid");
        assert!(back.iter().all(|(_, v)| is_ref(v)));
        assert_eq!(back.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![a, b]);
    }
}
