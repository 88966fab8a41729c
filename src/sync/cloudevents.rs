//! The wire format of design §7: a JSON array of CloudEvents 1.0, one per usage record, each
//! followed by one `dev.llm-sidecar.credits.v1` event per prepaid-credit deduction that paid for
//! it (id = the transaction's id, `data` = the transaction), so a record and its deductions
//! travel, are retried and are acknowledged together.
//!
//! Each event's `source` is the record's own (the device it was made on: an imported record
//! keeps its original device's), `subject` the customer this installation bills to (see
//! `sync::Subject`), and the extension attribute `deviceid` the id of the device that made the
//! record. A batch can be split (when a backend refuses it whole) without re-encoding: [`split`]
//! returns each event's exact bytes.

use crate::ledger::credits::CreditTx;
use crate::usage_record::UsageRecord;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

pub const CONTENT_TYPE: &str = "application/cloudevents-batch+json";
pub const EVENT_TYPE: &str = "dev.llm-sidecar.usage.v1";
/// The type of a credit deduction's event.
pub const CREDITS_EVENT_TYPE: &str = "dev.llm-sidecar.credits.v1";
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
    /// CloudEvents extension attribute (lowercase letters and digits only): the device the
    /// record was made on.
    deviceid: &'a str,
    data: Data<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Usage(&'a UsageRecord),
    Credits(&'a CreditTx),
}

/// The deductions that paid for each record, by record id.
pub type Deductions = std::collections::HashMap<Uuid, Vec<CreditTx>>;

/// The prefix of every llm-sidecar `source`; the rest is the device id.
pub const SOURCE_PREFIX: &str = "llm-sidecar://";

/// What the events of one batch share: this device's source and the subject to bill.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    /// `source` of records made on this device.
    pub source: &'a str,
    pub subject: &'a str,
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
    format!("{SOURCE_PREFIX}{device_id}")
}

/// The device part of a `source` (the whole source when it is not an llm-sidecar one).
pub fn device_of(source: &str) -> &str {
    source.strip_prefix(SOURCE_PREFIX).unwrap_or(source)
}

/// RFC 3339 UTC time with millisecond precision.
pub fn rfc3339_ms(ts_ms: i64) -> String {
    let t = crate::ledger::periods::datetime(ts_ms);
    let t = t.replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

/// Encodes as many of `records` (in order), each with its `deductions`, as fit in `max_events`
/// events and `max_bytes`. Always takes at least one record. `ids` are the records'.
pub fn build(
    records: &[UsageRecord],
    deductions: &Deductions,
    sender: Sender<'_>,
    max_events: usize,
    max_bytes: usize,
) -> Batch {
    let mut body = Vec::with_capacity(records.len().min(max_events) * 700 + 2);
    body.push(b'[');
    let mut ids = Vec::new();
    let mut events = 0usize;
    for r in records {
        let source = r.source.as_deref().unwrap_or(sender.source);
        let event = |id: Uuid, kind: &'static str, ts: i64, data: Data<'_>| {
            serde_json::to_vec(&CloudEvent {
                specversion: SPEC_VERSION,
                id,
                source,
                kind,
                subject: sender.subject,
                time: rfc3339_ms(ts),
                datacontenttype: "application/json",
                deviceid: device_of(source),
                data,
            })
        };
        let Ok(mut group) = event(r.id, EVENT_TYPE, r.ts, Data::Usage(r)) else { continue };
        let credits = deductions.get(&r.id).map(Vec::as_slice).unwrap_or_default();
        for tx in credits {
            let Ok(e) = event(tx.id, CREDITS_EVENT_TYPE, tx.ts, Data::Credits(tx)) else { continue };
            group.push(b',');
            group.extend_from_slice(&e);
        }
        let n = 1 + credits.len();
        // +1 for the separator or the closing bracket.
        if !ids.is_empty() && (events + n > max_events.max(1) || body.len() + 1 + group.len() + 1 > max_bytes) {
            break;
        }
        if !ids.is_empty() {
            body.push(b',');
        }
        body.extend_from_slice(&group);
        ids.push(r.id);
        events += n;
    }
    body.push(b']');
    Batch { id: Uuid::now_v7(), ids, body: bytes::Bytes::from(body) }
}

/// Whether `event` (one element's bytes from [`split`]) is a credit deduction's event, i.e.
/// belongs to the usage event before it.
pub fn is_credits_event(event: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
    }
    serde_json::from_slice::<Kind<'_>>(event).is_ok_and(|k| k.kind == CREDITS_EVENT_TYPE)
}

/// The events of a batch body grouped by usage record (each usage event with the credit events
/// after it), or `None` if the body is not such an array.
pub fn groups(body: &[u8]) -> Option<Vec<Vec<&[u8]>>> {
    let mut out: Vec<Vec<&[u8]>> = Vec::new();
    for e in split(body)? {
        match out.last_mut() {
            Some(g) if is_credits_event(e) => g.push(e),
            _ if is_credits_event(e) => return None,
            _ => out.push(vec![e]),
        }
    }
    Some(out)
}

/// The exact bytes of each element of a JSON array `body` (as [`build`] writes it), or `None`
/// if it is not one. Splitting a refused batch this way keeps every event byte for byte.
pub fn split(body: &[u8]) -> Option<Vec<&[u8]>> {
    let inner = body.trim_ascii().strip_prefix(b"[")?.strip_suffix(b"]")?;
    let mut parts = Vec::new();
    let (mut depth, mut in_string, mut escaped, mut start) = (0usize, false, false, 0usize);
    for (i, &b) in inner.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.checked_sub(1)?,
            b',' if depth == 0 => {
                parts.push(inner[start..i].trim_ascii());
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 || in_string {
        return None;
    }
    let last = inner[start..].trim_ascii();
    if !last.is_empty() {
        parts.push(last);
    }
    (!parts.iter().any(|p| p.is_empty())).then_some(parts)
}

/// A JSON array of `events` (each one element's bytes, from [`split`]).
pub fn join(events: &[&[u8]]) -> bytes::Bytes {
    let mut body = Vec::with_capacity(events.iter().map(|e| e.len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(e);
    }
    body.push(b']');
    bytes::Bytes::from(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_the_design_fields() {
        let mut r = UsageRecord::new("app", "openai", "gpt-4o");
        r.user = "alice".into();
        r.ts = 1_700_000_000_123;
        let mut imported = r.clone();
        imported.id = Uuid::now_v7();
        imported.source = Some("llm-sidecar://other".into());
        let sender = Sender { source: "llm-sidecar://dev", subject: "cus_42" };
        let b = build(&[r.clone(), imported], &Deductions::new(), sender, 500, MAX_BYTES);
        let v: serde_json::Value = serde_json::from_slice(&b.body).expect("json");
        let e = &v[0];
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["id"], r.id.to_string());
        assert_eq!(e["source"], "llm-sidecar://dev");
        assert_eq!(e["type"], EVENT_TYPE);
        assert_eq!(e["subject"], "cus_42", "the subject is the customer, not the record's user");
        assert_eq!(e["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(e["datacontenttype"], "application/json");
        assert_eq!(e["deviceid"], "dev");
        let back: UsageRecord = serde_json::from_value(e["data"].clone()).expect("record");
        assert_eq!(back, r);
        assert_eq!((v[1]["source"].as_str(), v[1]["deviceid"].as_str()), (Some("llm-sidecar://other"), Some("other")));
        assert_eq!(b.ids.len(), 2);
    }

    #[test]
    fn split_keeps_each_event_byte_for_byte() {
        let mut rs: Vec<UsageRecord> = (0..5).map(|_| UsageRecord::new("a", "p", "m")).collect();
        rs[2].route = "tricky \\\" ] } , [ {".into();
        let b = build(&rs, &Deductions::new(), Sender { source: "s", subject: "u" }, 500, MAX_BYTES);
        let parts = split(&b.body).expect("an array");
        assert_eq!(parts.len(), 5);
        assert_eq!(join(&parts), b.body);
        let left = join(&parts[..2]);
        let v: Vec<serde_json::Value> = serde_json::from_slice(&left).expect("json");
        assert_eq!(v[1]["id"], rs[1].id.to_string());
        assert_eq!(split(b"[]").map(|p| p.len()), Some(0));
        assert!(split(b"[{\"a\":1},").is_none());
        assert!(split(b"{}").is_none());
    }

    #[test]
    fn batches_respect_count_and_size() {
        let rs: Vec<UsageRecord> = (0..1200).map(|_| UsageRecord::new("a", "p", "m")).collect();
        let sender = Sender { source: "s", subject: "u" };
        let b = build(&rs, &Deductions::new(), sender, MAX_EVENTS, MAX_BYTES);
        assert_eq!(b.ids.len(), 500);
        let small = build(&rs, &Deductions::new(), sender, MAX_EVENTS, 4096);
        assert!(small.body.len() <= 4096, "{}", small.body.len());
        assert!(small.ids.len() > 1 && small.ids.len() < 500);
        let parsed: Vec<serde_json::Value> = serde_json::from_slice(&small.body).expect("json");
        assert_eq!(parsed.len(), small.ids.len());
        // Never empty, even when one event exceeds the limit.
        assert_eq!(build(&rs, &Deductions::new(), sender, MAX_EVENTS, 10).ids.len(), 1);
    }

    #[test]
    fn deductions_follow_their_record_and_count_as_events() {
        let rs: Vec<UsageRecord> = (0..4).map(|_| UsageRecord::new("a", "p", "m")).collect();
        let tx = |r: &UsageRecord, credits| CreditTx {
            id: Uuid::now_v7(),
            ts: r.ts,
            kind: crate::ledger::credits::CreditKind::Deduction,
            credits,
            record_id: Some(r.id),
            cost_microusd: Some(6),
            basis: Some("markup".into()),
            reference: None,
            synced_ms: None,
        };
        let mut d = Deductions::new();
        d.insert(rs[1].id, vec![tx(&rs[1], -3)]);
        d.insert(rs[2].id, vec![tx(&rs[2], -1), tx(&rs[2], -2)]);
        let sender = Sender { source: "llm-sidecar://dev", subject: "cus" };
        let b = build(&rs, &d, sender, 500, MAX_BYTES);
        let v: Vec<serde_json::Value> = serde_json::from_slice(&b.body).expect("json");
        let kinds: Vec<&str> = v.iter().map(|e| e["type"].as_str().expect("a type")).collect();
        use CREDITS_EVENT_TYPE as C;
        assert_eq!(kinds, [EVENT_TYPE, EVENT_TYPE, C, EVENT_TYPE, C, C, EVENT_TYPE]);
        assert_eq!(v[2]["id"], d[&rs[1].id][0].id.to_string());
        assert_eq!(
            (v[2]["data"]["credits"].as_i64(), v[2]["data"]["record_id"].as_str()),
            (Some(-3), Some(rs[1].id.to_string().as_str()))
        );
        assert_eq!(v[2]["subject"], "cus");
        let g = groups(&b.body).expect("groups");
        assert_eq!(g.iter().map(Vec::len).collect::<Vec<_>>(), [1, 2, 3, 1]);
        // max_events counts the credit events: a record never leaves its deductions behind.
        let small = build(&rs, &d, sender, 3, MAX_BYTES);
        assert_eq!(small.ids, [rs[0].id, rs[1].id]);
        assert!(groups(br#"[{"type":"dev.llm-sidecar.credits.v1"}]"#).is_none(), "a credit event alone");
    }
}
