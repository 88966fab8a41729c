//! The wire format of design §7: a JSON array of CloudEvents 1.0, one per usage record.

use crate::usage_record::UsageRecord;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

pub const CONTENT_TYPE: &str = "application/cloudevents-batch+json";
pub const EVENT_TYPE: &str = "dev.llm-sidecar.usage.v1";
pub const SPEC_VERSION: &str = "1.0";
/// Hard limits of one batch (design §7).
pub const MAX_EVENTS: usize = 500;
pub const MAX_BYTES: usize = 1024 * 1024;

#[derive(Serialize)]
struct CloudEvent<'a> {
    specversion: &'static str,
    id: Uuid,
    source: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    subject: &'a str,
    time: String,
    datacontenttype: &'static str,
    data: &'a UsageRecord,
}

/// One request's worth of events. `id` is the `Idempotency-Key`; a retry of the batch sends the
/// same id and the same bytes.
#[derive(Debug, Clone)]
pub struct Batch {
    pub id: Uuid,
    pub ids: Vec<Uuid>,
    pub body: bytes::Bytes,
}

/// `source` of every event from this device.
pub fn source(device_id: Uuid) -> String {
    format!("llm-sidecar://{device_id}")
}

/// RFC 3339 UTC time with millisecond precision.
pub fn rfc3339_ms(ts_ms: i64) -> String {
    let t = crate::ledger::periods::datetime(ts_ms);
    let t = t.replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

/// Encodes as many of `records` (in order) as fit in `max_events` and `max_bytes`. Always takes
/// at least one record. Returns the batch and how many records it holds.
pub fn build(records: &[UsageRecord], source: &str, max_events: usize, max_bytes: usize) -> Batch {
    let mut body = Vec::with_capacity(records.len().min(max_events) * 700 + 2);
    body.push(b'[');
    let mut ids = Vec::new();
    for r in records.iter().take(max_events.max(1)) {
        let event = CloudEvent {
            specversion: SPEC_VERSION,
            id: r.id,
            source,
            kind: EVENT_TYPE,
            subject: &r.user,
            time: rfc3339_ms(r.ts),
            datacontenttype: "application/json",
            data: r,
        };
        let Ok(encoded) = serde_json::to_vec(&event) else { continue };
        // +1 for the separator or the closing bracket.
        if !ids.is_empty() && body.len() + 1 + encoded.len() + 1 > max_bytes {
            break;
        }
        if !ids.is_empty() {
            body.push(b',');
        }
        body.extend_from_slice(&encoded);
        ids.push(r.id);
    }
    body.push(b']');
    Batch { id: Uuid::now_v7(), ids, body: bytes::Bytes::from(body) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_the_design_fields() {
        let mut r = UsageRecord::new("app", "openai", "gpt-4o");
        r.user = "alice".into();
        r.ts = 1_700_000_000_123;
        let b = build(std::slice::from_ref(&r), "llm-sidecar://dev", 500, MAX_BYTES);
        let v: serde_json::Value = serde_json::from_slice(&b.body).expect("json");
        let e = &v[0];
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["id"], r.id.to_string());
        assert_eq!(e["source"], "llm-sidecar://dev");
        assert_eq!(e["type"], EVENT_TYPE);
        assert_eq!(e["subject"], "alice");
        assert_eq!(e["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(e["datacontenttype"], "application/json");
        let back: UsageRecord = serde_json::from_value(e["data"].clone()).expect("record");
        assert_eq!(back, r);
        assert_eq!(b.ids, vec![r.id]);
    }

    #[test]
    fn batches_respect_count_and_size() {
        let rs: Vec<UsageRecord> = (0..1200).map(|_| UsageRecord::new("a", "p", "m")).collect();
        let b = build(&rs, "s", MAX_EVENTS, MAX_BYTES);
        assert_eq!(b.ids.len(), 500);
        let small = build(&rs, "s", MAX_EVENTS, 4096);
        assert!(small.body.len() <= 4096, "{}", small.body.len());
        assert!(small.ids.len() > 1 && small.ids.len() < 500);
        let parsed: Vec<serde_json::Value> = serde_json::from_slice(&small.body).expect("json");
        assert_eq!(parsed.len(), small.ids.len());
        // Never empty, even when one event exceeds the limit.
        assert_eq!(build(&rs, "s", MAX_EVENTS, 10).ids.len(), 1);
    }
}
