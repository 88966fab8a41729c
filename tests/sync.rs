//! Usage sync against a local collector: batches, headers, CloudEvent fields (subject,
//! deviceid, provenance), retries with backoff and Retry-After, lost responses, poisoned batches
//! split until the refused record is found, pause on 401 and on a wrong URL, the age window,
//! and stable batch identity across a SIGKILL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::collector::{Collector, Fault};
use common::{field, params, record_many, wait_until, Daemon};
use rmpv::Value;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const TOKEN: &str = "sync-token-5d1c8e0f-never-logged";

/// Sync config that only flushes on `sync.now` (or at start), with fast retries. Requests time
/// out after 10 s unless `extra` says otherwise (loaded CI machines are slow).
fn config(url: &str, extra: &str) -> String {
    let timeout = if extra.contains("timeout_secs") { "" } else { "timeout_secs = 10\n" };
    format!(
        "[sync]\nurl = \"{url}\"\ninterval_secs = 3600\nflush_threshold = 1000000\nbackoff_initial_ms = 50\n\
         backoff_max_ms = 200\n{timeout}{extra}"
    )
}

fn start(url: &str, extra: &str) -> Daemon {
    let extra =
        if extra.contains("token_") { extra.to_string() } else { format!("token_env = \"SYNC_TOKEN\"\n{extra}") };
    Daemon::start_with(&config(url, &extra), &[("SYNC_TOKEN", TOKEN)])
}

fn u(v: &Value, name: &str) -> u64 {
    field(v, name).as_u64().unwrap_or_else(|| panic!("`{name}` is not an integer in {v}"))
}

fn s<'a>(v: &'a Value, name: &str) -> &'a str {
    field(v, name).as_str().unwrap_or_else(|| panic!("`{name}` is not a string in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_carry_design_headers_and_cloudevent_fields() {
    let col = Collector::start().await;
    col.require_token(Some(TOKEN));
    let d = start(&col.url, "subject = \"cus_test_42\"\n");
    let c = d.client().await;
    c.call("daemon.hello", params(&[("app", "writer".into())])).await.unwrap();
    let ids = record_many(&c, 1203, "writer").await;
    let before = c.call("sync.status", vec![]).await.unwrap();
    assert_eq!(u(&before, "pending"), 1203);
    assert!(field(&before, "oldest_pending_age_ms").as_u64().is_some());
    let report = c.call("sync.now", vec![]).await.unwrap();
    assert_eq!((u(&report, "sent"), u(&report, "pending")), (1203, 0), "{report}");
    assert_eq!(s(&report, "state"), "idle");
    assert!(field(&report, "error").is_nil());

    assert_eq!(col.ids(), ids.iter().cloned().collect::<HashSet<_>>());
    assert_eq!(col.duplicate_events(), 0);
    let reqs = col.requests();
    assert_eq!(reqs.iter().map(|r| r.events).collect::<Vec<_>>(), vec![500, 500, 203]);
    let mut keys = HashSet::new();
    for r in &reqs {
        assert_eq!(r.content_type.as_deref(), Some("application/cloudevents-batch+json"));
        assert_eq!(r.authorization.as_deref(), Some(format!("Bearer {TOKEN}").as_str()));
        assert!(r.bytes <= 1024 * 1024);
        let key = r.idempotency_key.clone().expect("Idempotency-Key");
        uuid::Uuid::parse_str(&key).expect("batch id is a UUID");
        assert!(keys.insert(key), "each batch has its own key");
    }

    // One event in full: the design's fields, and the record as data.
    let status = c.call("sync.status", vec![]).await.unwrap();
    let source = s(&status, "source").to_string();
    assert!(source.starts_with("llm-sidecar://"), "{source}");
    let records = c.call("usage.records", params(&[("limit", 1.into())])).await.unwrap();
    let rec = &field(&records, "records").as_array().unwrap()[0];
    let e = col.event(s(rec, "id")).expect("event stored");
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["id"], s(rec, "id"));
    assert_eq!(e["source"], source.as_str());
    assert_eq!(e["type"], "dev.llm-sidecar.usage.v1");
    assert_eq!(e["subject"], "cus_test_42", "the subject is the configured customer, not the record's user");
    assert_eq!(s(&status, "subject"), "cus_test_42");
    assert_eq!(e["deviceid"].as_str(), source.strip_prefix("llm-sidecar://"));
    assert_eq!(e["datacontenttype"], "application/json");
    let time = e["time"].as_str().unwrap();
    let parsed = time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).unwrap();
    assert_eq!(parsed.unix_timestamp_nanos() / 1_000_000, i128::from(field(rec, "ts").as_i64().unwrap()));
    assert_eq!(e["data"]["id"], s(rec, "id"));
    assert_eq!(e["data"]["app"], "writer");
    assert_eq!(e["data"]["model"], "gpt-4o-mini");
    assert_eq!(e["data"]["cost_microusd"], 10);
    assert_eq!(e["data"]["key_source"], "byok");

    let after = c.call("sync.status", vec![]).await.unwrap();
    assert_eq!((u(&after, "pending"), u(&after, "sent_total"), u(&after, "batches_total")), (0, 1203, 3));
    assert!(field(&after, "last_success_at_ms").as_i64().is_some());
    assert!(!d.logs().contains(TOKEN), "the token leaked into the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_through_faults_with_one_idempotency_key() {
    let col = Collector::start().await;
    for f in [
        Fault::Status(500),
        Fault::Status(503),
        Fault::Reset,
        Fault::Hang(Duration::from_secs(6)),
        Fault::CommitThenReset,
        Fault::CommitThenHang(Duration::from_secs(6)),
        Fault::RetryAfter { status: 429, secs: 1 },
    ] {
        col.push_fault(f);
    }
    let d = start(&col.url, "timeout_secs = 2\n");
    let c = d.client().await;
    let ids = record_many(&c, 40, "app").await;
    let report = c.call("sync.now", vec![]).await.unwrap();
    assert_eq!(s(&report, "state"), "retrying", "{report}");
    assert_eq!(field(field(&report, "error"), "status").as_u64(), Some(500));
    let st = c.call("sync.status", vec![]).await.unwrap();
    assert!(u(&st, "failures") >= 1);
    assert!(field(&st, "next_attempt_at_ms").as_i64().is_some() || s(&st, "state") != "retrying");

    // The outbox empties at the last ack's commit; the worker goes idle once it has that ack's
    // answer, a moment later (a status read in between says `sending` with nothing pending).
    let settled = |v: &Value| u(v, "pending") == 0 && s(v, "state") == "idle";
    wait_until(&c, "sync.status", Duration::from_secs(30), settled).await;
    assert_eq!(col.ids(), ids.iter().cloned().collect::<HashSet<_>>(), "every record exactly once");
    let reqs = col.requests();
    assert_eq!(reqs.len(), 8, "7 faults then success: {reqs:?}");
    let key = reqs[0].idempotency_key.clone();
    assert!(reqs.iter().all(|r| r.idempotency_key == key), "a retried batch keeps its key");
    // Both "committed but lost" answers were replayed from the key, not stored twice.
    assert_eq!(col.replayed_batches(), 2);
    assert_eq!(col.duplicate_events(), 0);
    // Retry-After: 1 was honoured.
    let gap = reqs[7].at.duration_since(reqs[6].at);
    assert!(gap >= Duration::from_millis(990), "retried after {gap:?} despite Retry-After: 1");
    assert!(d.logs().contains("retrying in"));
}

/// Records `(model, ts)` one by one (in order, so their queue order is known); returns the ids.
async fn record_models(c: &llm_sidecar::rpc::Client, rows: &[(&str, Option<i64>)]) -> Vec<String> {
    let mut ids = Vec::new();
    for (model, ts) in rows {
        let mut p = vec![("provider", "openai".into()), ("model", (*model).into()), ("input_tokens", 5u64.into())];
        if let Some(ts) = ts {
            p.push(("ts", (*ts).into()));
        }
        let r = c.call("usage.record", params(&p)).await.unwrap();
        ids.push(s(&r, "id").to_string());
    }
    ids
}

/// OpenMeter refuses a whole batch for one bad event: the worker splits it until the event that
/// fails alone is found; only that one becomes a dead letter (with the backend's status and
/// body), every other record is delivered exactly once, and after a fix it can be requeued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_record_is_isolated_and_alone_dead_lettered() {
    let col = Collector::start().await;
    col.poison_model(Some("poison"));
    let d = start(&col.url, "");
    let c = d.client().await;
    let mut rows = vec![("gpt-4o-mini", None); 40];
    rows[27] = ("poison", None);
    let ids = record_models(&c, &rows).await;
    let report = c.call("sync.now", vec![]).await.unwrap();
    assert_eq!((u(&report, "dead_lettered"), u(&report, "sent"), u(&report, "pending")), (1, 39, 0), "{report}");
    let good: HashSet<String> = ids.iter().enumerate().filter(|(i, _)| *i != 27).map(|(_, id)| id.clone()).collect();
    assert_eq!(col.ids(), good, "every good record delivered");
    assert_eq!(col.duplicate_events(), 0, "and each once");
    let reqs = col.requests();
    // 40 → 20 → 10 → 5 → 3 → 2 → 1: a refused half is split again, its sibling accepted.
    assert!(reqs.len() <= 2 * 7, "{} requests", reqs.len());
    let keys: HashSet<_> = reqs.iter().map(|r| r.idempotency_key.clone()).collect();
    assert_eq!(keys.len(), reqs.len(), "every half has its own Idempotency-Key");

    let st = c.call("sync.status", vec![]).await.unwrap();
    assert_eq!(u(&st, "dead_letters"), 1);
    let dead = field(&st, "recent_dead_letters").as_array().unwrap();
    assert_eq!(s(&dead[0], "id"), ids[27]);
    assert_eq!((s(&dead[0], "reason"), field(&dead[0], "status").as_u64()), ("rejected", Some(400)));
    assert!(s(&dead[0], "body").contains("unknown meter"), "{}", dead[0]);
    let listed = c.call("sync.dead_letters", vec![]).await.unwrap();
    let listed = field(&listed, "dead_letters").as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(s(field(&listed[0], "record"), "model"), "poison");
    let (_, out, _) = d.cli(&["sync", "status"], None);
    assert!(out.contains("rejected HTTP 400") && out.contains("unknown meter"), "{out}");

    // Fixed on the backend side: requeue that record and it goes through.
    col.poison_model(None);
    let rq = c.call("sync.requeue", params(&[("ids", Value::Array(vec![ids[27].as_str().into()]))])).await.unwrap();
    assert_eq!(u(&rq, "requeued"), 1);
    let again = c.call("sync.now", vec![]).await.unwrap();
    assert_eq!((u(&again, "sent"), u(&again, "dead_lettered")), (1, 0), "{again}");
    assert_eq!(col.ids(), ids.iter().cloned().collect::<HashSet<_>>());
    assert_eq!(u(&c.call("sync.status", vec![]).await.unwrap(), "dead_letters"), 0);
}

/// A wrong URL (404/405/410, a redirect) pauses sync as misconfigured: nothing is
/// dead-lettered, an event says so, and `sync.now` tries again once it is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_url_pauses_as_misconfigured_and_dead_letters_nothing() {
    let col = Collector::start().await;
    for code in [404, 308, 405, 410] {
        col.push_fault(Fault::Status(code));
    }
    let d = start(&col.url, "batch_max_events = 10\n");
    let c = d.client().await;
    let events = d.client().await;
    events.call("events.subscribe", params(&[("kinds", Value::Array(vec!["sync.paused".into()]))])).await.unwrap();
    let mut notes = events.take_notifications().unwrap();
    let ids = record_many(&c, 15, "app").await;
    let report = c.call("sync.now", vec![]).await.unwrap();
    assert_eq!(s(&report, "state"), "misconfigured", "{report}");
    assert_eq!((u(&report, "dead_lettered"), u(&report, "pending")), (0, 15), "{report}");
    let (_, args) = tokio::time::timeout(Duration::from_secs(5), notes.recv()).await.unwrap().unwrap();
    assert_eq!(field(&args[0], "kind").as_str(), Some("sync.paused"));
    assert_eq!(
        (field(&args[0], "reason").as_str(), field(&args[0], "status").as_u64()),
        (Some("misconfigured"), Some(404))
    );
    let st = c.call("sync.status", vec![]).await.unwrap();
    assert_eq!((s(&st, "state"), u(&st, "dead_letters")), ("misconfigured", 0));
    let (_, out, _) = d.cli(&["sync", "status"], None);
    assert!(out.contains("misconfigured") && out.contains("[sync] url"), "{out}");
    // It does not retry on its own.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(col.requests().len(), 1);
    // A redirect, 405 and 410 are the same.
    for code in [308, 405, 410] {
        let report = c.call("sync.now", vec![]).await.unwrap();
        assert_eq!((s(&report, "state"), u(&report, "dead_lettered")), ("misconfigured", 0), "{report}");
        assert_eq!(field(field(&report, "error"), "status").as_u64(), Some(code));
    }
    // Fixed: everything goes, with the same batch ids it was first sent under.
    let report = c.call("sync.now", vec![]).await.unwrap();
    assert_eq!((s(&report, "state"), u(&report, "sent"), u(&report, "pending")), ("idle", 15, 0), "{report}");
    assert_eq!(col.ids(), ids.into_iter().collect::<HashSet<_>>());
    let reqs = col.requests();
    assert_eq!(reqs[0].idempotency_key, reqs[4].idempotency_key);
    assert_eq!(reqs[0].body, reqs[4].body);
}

/// A 422 for a batch whose records are all fine on their own (a transient refusal, or a batch
/// too big for the backend): the halves go through and nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_whose_halves_pass_loses_nothing() {
    let col = Collector::start().await;
    col.push_fault(Fault::Status(422));
    let d = start(&col.url, "batch_max_events = 10\n");
    let c = d.client().await;
    let ids = record_many(&c, 15, "app").await;
    let report = c.call("sync.now", vec![]).await.unwrap();
    assert_eq!((u(&report, "dead_lettered"), u(&report, "sent"), u(&report, "pending")), (0, 15, 0), "{report}");
    assert_eq!(col.ids(), ids.into_iter().collect::<HashSet<_>>());
    let reqs = col.requests();
    // The refused 10 as 5 + 5, then the last 5.
    assert_eq!(reqs.iter().map(|r| r.events).collect::<Vec<_>>(), vec![10, 5, 5, 5]);
    assert_eq!(u(&c.call("sync.status", vec![]).await.unwrap(), "dead_letters"), 0);
}

/// Records older than `max_event_age_days` or more than 5 minutes ahead are held back as dead
/// letters with their reason, never silently dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_outside_the_age_window_are_dead_lettered_with_a_reason() {
    let col = Collector::start().await;
    let d = start(&col.url, "max_event_age_days = 30\n");
    let c = d.client().await;
    let now = llm_sidecar::clock::now_ms();
    let day = 86_400_000;
    let ids = record_models(
        &c,
        &[
            ("gpt-4o-mini", Some(now - 31 * day)),
            ("gpt-4o-mini", Some(now - 29 * day)),
            ("gpt-4o-mini", Some(now + 3_600_000)),
            ("gpt-4o-mini", None),
        ],
    )
    .await;
    let report = c.call("sync.now", vec![]).await.unwrap();
    assert_eq!((u(&report, "sent"), u(&report, "pending")), (2, 0), "{report}");
    assert_eq!(col.ids(), [ids[1].clone(), ids[3].clone()].into_iter().collect::<HashSet<_>>());
    let dead = c.call("sync.dead_letters", vec![]).await.unwrap();
    let mut reasons: Vec<(String, String)> = field(&dead, "dead_letters")
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (s(d, "id").to_string(), s(d, "reason").to_string()))
        .collect();
    reasons.sort();
    let mut want = vec![(ids[0].clone(), "too_old".to_string()), (ids[2].clone(), "future".to_string())];
    want.sort();
    assert_eq!(reasons, want);
}

/// A SIGKILL while a batch is in flight (the backend stored it, the answer never came): after
/// the restart the batch goes out again under the same Idempotency-Key with the same body, so
/// the backend replays its answer instead of counting anything twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_resent_after_kill_9_keeps_its_key_and_body() {
    let col = Collector::start().await;
    col.push_fault(Fault::CommitThenHang(Duration::from_secs(60)));
    let mut d = start(&col.url, "timeout_secs = 60\n");
    let c = d.client().await;
    let ids = record_many(&c, 30, "app").await;
    let now = tokio::spawn(async move { c.call("sync.now", vec![]).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while col.requests().is_empty() {
        assert!(Instant::now() < deadline, "no batch was sent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    d.kill9();
    let _ = now.await;
    assert_eq!(col.count(), 30, "the backend stored the batch before the crash");
    d.spawn();
    // The worker resends what was left at start.
    let c = d.client().await;
    wait_until(&c, "sync.status", Duration::from_secs(10), |v| u(v, "pending") == 0).await;
    let reqs = col.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[1].idempotency_key, reqs[0].idempotency_key, "the same Idempotency-Key after the crash");
    assert_eq!(reqs[1].body, reqs[0].body, "the same bytes");
    assert_eq!((col.replayed_batches(), col.duplicate_events()), (1, 0));
    assert_eq!(col.ids(), ids.into_iter().collect::<HashSet<_>>());
}

/// Provenance: an export carries each record's source and whether it was synced; importing it
/// on another device keeps the source and re-sends only what the first device had not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_keeps_its_source_and_is_not_sent_twice() {
    let col = Collector::start().await;
    let a = start(&col.url, "");
    let ca = a.client().await;
    let sent = record_many(&ca, 3, "a").await;
    assert_eq!(u(&ca.call("sync.now", vec![]).await.unwrap(), "sent"), 3);
    let unsent = record_many(&ca, 2, "a").await;
    let source_a = s(&ca.call("sync.status", vec![]).await.unwrap(), "source").to_string();
    let page = ca.call("usage.export", vec![]).await.unwrap();
    let records = field(&page, "records").as_array().unwrap();
    assert_eq!(records.len(), 5);
    for r in records {
        assert_eq!(s(r, "source"), source_a);
        assert_eq!(field(r, "synced").as_bool(), Some(sent.contains(&s(r, "id").to_string())), "{r}");
    }

    let b = start(&col.url, "");
    let cb = b.client().await;
    let imported = cb.call("usage.import", vec![page.clone()]).await.unwrap();
    assert_eq!(u(&imported, "imported"), 5);
    assert_eq!(u(&cb.call("sync.status", vec![]).await.unwrap(), "pending"), 2, "only the unsynced are queued");
    let report = cb.call("sync.now", vec![]).await.unwrap();
    assert_eq!(u(&report, "sent"), 2, "{report}");
    assert_eq!(col.duplicate_events(), 0, "no record counted twice");
    for id in &unsent {
        let e = col.event(id).unwrap();
        assert_eq!(e["source"], source_a.as_str(), "sent under the original device's source");
    }
    // And B's own export still names A as the source.
    let again = cb.call("usage.export", vec![]).await.unwrap();
    assert!(field(&again, "records").as_array().unwrap().iter().all(|r| s(r, "source") == source_a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses_on_401_and_resumes_when_the_token_changes() {
    let col = Collector::start().await;
    col.require_token(Some("new-token"));
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), "old-token\n").unwrap();
    let d = start(&col.url, &format!("token_file = \"{}\"\n", token_file.path().display()));
    let c = d.client().await;
    let events = d.client().await;
    events
        .call("events.subscribe", params(&[("kinds", Value::Array(vec!["sync.paused".into(), "sync.resumed".into()]))]))
        .await
        .unwrap();
    let mut notes = events.take_notifications().unwrap();

    let first = record_many(&c, 5, "app").await;
    let report = c.call("sync.now", vec![]).await.unwrap();
    assert_eq!(s(&report, "state"), "paused", "{report}");
    assert_eq!(field(field(&report, "error"), "status").as_u64(), Some(401));
    let (method, args) = tokio::time::timeout(Duration::from_secs(5), notes.recv()).await.unwrap().unwrap();
    assert_eq!(method, "event");
    assert_eq!(field(&args[0], "kind").as_str(), Some("sync.paused"));
    assert_eq!(field(&args[0], "status").as_u64(), Some(401));
    let second = record_many(&c, 3, "app").await;
    let st = c.call("sync.status", vec![]).await.unwrap();
    assert_eq!((s(&st, "state"), u(&st, "pending")), ("paused", 8));
    // A paused worker does not keep hammering the backend.
    let attempts = col.requests().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(col.requests().len(), attempts);

    std::fs::write(token_file.path(), "new-token\n").unwrap();
    let (_, args) = tokio::time::timeout(Duration::from_secs(5), notes.recv()).await.unwrap().unwrap();
    assert_eq!(field(&args[0], "kind").as_str(), Some("sync.resumed"));
    wait_until(&c, "sync.status", Duration::from_secs(10), |v| u(v, "pending") == 0).await;
    let all: HashSet<String> = first.into_iter().chain(second).collect();
    assert_eq!(col.ids(), all);
    assert!(!d.logs().contains("new-token") && !d.logs().contains("old-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushes_periodically_and_at_the_threshold() {
    let col = Collector::start().await;
    let periodic = Daemon::start_with(
        &format!("[sync]\nurl = \"{}\"\ninterval_secs = 1\nflush_threshold = 1000000\n", col.url),
        &[],
    );
    let c = periodic.client().await;
    record_many(&c, 3, "periodic").await;
    col.wait_for(3, Duration::from_secs(5)).await;

    let col2 = Collector::start().await;
    let threshold = Daemon::start_with(
        &format!("[sync]\nurl = \"{}\"\ninterval_secs = 3600\nflush_threshold = 50\n", col2.url),
        &[],
    );
    let c2 = threshold.client().await;
    record_many(&c2, 49, "threshold").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(col2.count(), 0, "nothing is sent below the threshold");
    record_many(&c2, 1, "threshold").await;
    col2.wait_for(50, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_within_its_bound() {
    let col = Collector::start().await;
    let mut d = start(&col.url, "shutdown_drain_secs = 3\n");
    let c = d.client().await;
    let ids = record_many(&c, 120, "app").await;
    drop(c);
    d.terminate(Duration::from_secs(10));
    assert_eq!(col.ids(), ids.into_iter().collect::<HashSet<_>>());

    // A backend that never answers cannot hold the shutdown beyond the drain bound.
    let stuck = Collector::start().await;
    for _ in 0..10 {
        stuck.push_fault(Fault::Hang(Duration::from_secs(30)));
    }
    let mut d = Daemon::start_with(
        &format!("[sync]\nurl = \"{}\"\ninterval_secs = 3600\nflush_threshold = 1000000\ntimeout_secs = 30\nshutdown_drain_secs = 1\n", stuck.url),
        &[],
    );
    let c = d.client().await;
    record_many(&c, 5, "app").await;
    drop(c);
    let t = Instant::now();
    d.terminate(Duration::from_secs(10));
    assert!(t.elapsed() < Duration::from_secs(5), "shutdown took {:?}", t.elapsed());
    // The records were kept and go out at the next start.
    stuck.clear_faults();
    d.spawn();
    stuck.wait_for(5, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_is_off_without_a_url() {
    let d = Daemon::start();
    let c = d.client().await;
    let st = c.call("sync.status", vec![]).await.unwrap();
    assert_eq!(field(&st, "enabled").as_bool(), Some(false));
    assert_eq!(s(&st, "state"), "disabled");
    record_many(&c, 2, "app").await;
    assert_eq!(u(&c.call("sync.status", vec![]).await.unwrap(), "pending"), 2);
    let e = c.call("sync.now", vec![]).await.expect_err("sync is off");
    match e {
        llm_sidecar::rpc::ClientError::Rpc(e) => {
            assert_eq!(e.code, llm_sidecar::rpc::ErrorCode::InvalidRequest);
            assert!(e.message.contains("[sync]"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
}

/// The sync token comes from the vault: an `llm-sidecar-sync` entry wins over the config's
/// env variable, and is never logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_token_is_taken_from_the_vault() {
    const VAULT_TOKEN: &str = "vault-sync-token-93a1f7-never-logged";
    let col = Collector::start().await;
    col.require_token(Some(VAULT_TOKEN));
    let d = start(&col.url, "");
    let c = d.client().await;
    record_many(&c, 3, "app").await;
    // With only the env token the collector refuses (401): sync pauses.
    let report = c.call("sync.now", vec![]).await.unwrap();
    assert_eq!(u(&report, "pending"), 3, "{report}");
    let set = params(&[("provider", "llm-sidecar-sync".into()), ("secret", VAULT_TOKEN.into())]);
    c.call("keys.set", set).await.unwrap();
    let report = c.call("sync.now", vec![]).await.unwrap();
    assert_eq!((u(&report, "sent"), u(&report, "pending")), (3, 0), "{report}");
    assert_eq!(col.count(), 3);
    let logs = d.logs();
    assert!(!logs.contains(VAULT_TOKEN) && !logs.contains(TOKEN), "a sync token leaked into the log");
}
