#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::usage_record::{CallStatus, KeySource};
use std::collections::HashSet;
use std::sync::Arc;

fn record(app: &str, provider: &str, model: &str, input: u64, output: u64, cost: i64) -> UsageRecord {
    let mut r = UsageRecord::new(app, provider, model);
    r.input_tokens = input;
    r.output_tokens = output;
    r.cost_microusd = cost;
    r
}

fn total(l: &Ledger, period: Period) -> Counter {
    let label = period.label(now_ms());
    let rows = l.counters(period, Dim::Total, &label, &label).unwrap();
    rows.first().map(|r| r.counter).unwrap_or_default()
}

#[tokio::test]
async fn commit_stores_record_counters_and_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path()).unwrap();
    let mut r = record("nvim", "openai", "gpt-4o", 100, 20, 1500);
    r.status = CallStatus::Error;
    r.key_source = KeySource::Platform;
    assert_eq!(l.commit(&r).await.unwrap(), Committed::New);
    assert_eq!(l.commit(&r).await.unwrap(), Committed::Duplicate);
    let page = l.records(&RecordQuery { limit: 10, ..Default::default() }).unwrap();
    assert_eq!(page.records, vec![r.clone()]);
    assert_eq!(l.counts(), Counts { outbox: 1, dead: 0 });
    let today = Period::Day.label(r.ts);
    let by_model = l.counters(Period::Day, Dim::Model, &today, &today).unwrap();
    assert_eq!(by_model.len(), 1);
    assert_eq!(by_model[0].key, "openai/gpt-4o");
    let c = by_model[0].counter;
    assert_eq!((c.requests, c.failed, c.input_tokens, c.output_tokens, c.cost_microusd), (1, 1, 100, 20, 1500));
    let ks = l.counters(Period::Month, Dim::KeySource, &Period::Month.label(r.ts), &Period::Month.label(r.ts)).unwrap();
    assert_eq!(ks[0].key, "platform");
}

#[tokio::test]
async fn invalid_records_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path()).unwrap();
    let good = record("a", "p", "m", 1, 1, 1);
    let bad = record("a", "p", "m", validate::MAX_TOKENS + 1, 1, 1);
    assert!(matches!(l.commit_many(&[good, bad]).await, Err(LedgerError::Invalid(_))));
    assert_eq!(l.counts().outbox, 0);
    assert!(l.records(&RecordQuery { limit: 10, ..Default::default() }).unwrap().records.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_share_flushes_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let l = Arc::new(Ledger::open(dir.path()).unwrap());
    let mut tasks = Vec::new();
    for t in 0..16 {
        let l = l.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50u64 {
                l.commit(&record(&format!("app{}", t % 4), "openai", "m", i, 1, 10)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(l.counts().outbox, 800);
    let c = total(&l, Period::Month);
    assert_eq!((c.requests, c.cost_microusd, c.output_tokens), (800, 8000, 800));
    drop(l);
    let reopened = reopen(dir.path()).await;
    assert_eq!(reopened.counts().outbox, 800);
    assert_eq!(total(&reopened, Period::Day).requests, 800);
    let per_app = reopened.counters(Period::Day, Dim::App, &Period::Day.label(now_ms()), &Period::Day.label(now_ms()));
    assert_eq!(per_app.unwrap().iter().map(|r| r.counter.requests).sum::<u64>(), 800);
}

/// Opens the ledger again once the dropped one's committer thread let go of the db.
async fn reopen(path: &std::path::Path) -> Ledger {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match Ledger::open(path) {
            Ok(l) => return l,
            Err(e) if std::time::Instant::now() > deadline => panic!("cannot reopen: {e}"),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

fn queued(l: &Ledger) -> Vec<(Queued, UsageRecord)> {
    l.outbox_after(None, 100_000).unwrap().into_iter().map(|e| (e.at, e.record.unwrap())).collect()
}

#[tokio::test]
async fn ack_dead_letter_and_requeue() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path()).unwrap();
    let rs: Vec<UsageRecord> = (0..5).map(|i| record("a", "p", "m", i, 0, 0)).collect();
    l.commit_many(&rs).await.unwrap();
    let pending = queued(&l);
    assert_eq!(pending.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(), rs, "one segment, in id order");
    let at: Vec<Queued> = pending.iter().map(|(q, _)| *q).collect();
    let after_two = l.outbox_after(Some(at[1]), 2).unwrap();
    assert_eq!(after_two.len(), 2);
    assert_eq!(after_two[0].record.as_ref().unwrap().id, rs[2].id);
    let stranger = Queued { seq: at[0].seq, id: Uuid::now_v7() };
    assert_eq!(l.ack(&[at[0], at[1], stranger]).await.unwrap(), 2);
    // Reading after an entry that is gone still continues at the right place.
    assert_eq!(l.outbox_after(Some(at[1]), 10).unwrap().len(), 3);
    assert_eq!(l.dead_letter(&[at[2]], "batch-1", Some(400), "bad event").await.unwrap(), 1);
    assert_eq!(l.counts(), Counts { outbox: 2, dead: 1 });
    let dead = l.dead_letters(10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].status, dead[0].batch_id.as_str(), &dead[0].record), (Some(400), "batch-1", &rs[2]));
    assert_eq!(l.oldest_pending().unwrap().unwrap().id, rs[3].id);
    assert_eq!(l.requeue_dead_letters().await.unwrap(), 1);
    assert_eq!(l.counts(), Counts { outbox: 3, dead: 0 });
    let ids: Vec<Uuid> = queued(&l).iter().map(|(_, r)| r.id).collect();
    assert_eq!(ids, vec![rs[3].id, rs[4].id, rs[2].id], "requeued records join the end of the queue");
    // Acking everything removes the segments.
    let all: Vec<Queued> = queued(&l).iter().map(|(q, _)| *q).collect();
    assert_eq!(l.ack(&all).await.unwrap(), 3);
    assert!(l.outbox_after(None, 10).unwrap().is_empty());
    assert_eq!(l.counts(), Counts::default());
    // Records stay in the history whatever happens to their outbox entries.
    assert_eq!(l.records(&RecordQuery { limit: 10, ..Default::default() }).unwrap().records.len(), 5);
}

#[tokio::test]
async fn outbox_counts_and_order_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = {
        let l = Ledger::open(dir.path()).unwrap();
        let a: Vec<UsageRecord> = (0..3).map(|i| record("a", "p", "m", i, 0, 0)).collect();
        let b: Vec<UsageRecord> = (0..2000).map(|i| record("a", "p", "m", i, 0, 0)).collect();
        l.commit_many(&a).await.unwrap();
        l.commit_many(&b).await.unwrap();
        (a, b)
    };
    let l = reopen(dir.path()).await;
    assert_eq!(l.counts().outbox, 2003);
    let q = queued(&l);
    let ids: Vec<Uuid> = q.iter().map(|(_, r)| r.id).collect();
    let expected: Vec<Uuid> = first.iter().chain(second.iter()).map(|r| r.id).collect();
    assert_eq!(ids, expected);
    let segments: HashSet<u64> = q.iter().map(|(at, _)| at.seq).collect();
    assert_eq!(segments.len(), 3, "2000 records of one round span two segments");
    // New segments continue the sequence after a reopen.
    let more = record("a", "p", "m", 1, 0, 0);
    l.commit(&more).await.unwrap();
    assert_eq!(queued(&l).last().unwrap().1.id, more.id);
}

#[tokio::test]
async fn clear_keeps_unsynced_outbox_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path()).unwrap();
    let rs: Vec<UsageRecord> = (0..4).map(|i| record("a", "p", "m", i, 0, 0)).collect();
    l.commit_many(&rs).await.unwrap();
    let first = queued(&l)[0].0;
    l.ack(&[first]).await.unwrap();
    // A commit stores each record once: its outbox entry only refers to it.
    let segment = l.trees.outbox.iter().values().next().unwrap().unwrap();
    assert_eq!(segment.len(), 3 * 20, "three references of 20 bytes, no record bytes");
    let c = l.clear(false).await.unwrap();
    assert_eq!(c, Cleared { records: 4, outbox: 0, dead_letters: 0 });
    assert_eq!(l.counts().outbox, 3);
    assert_eq!(total(&l, Period::Day), Counter::default());
    assert!(l.records(&RecordQuery { limit: 10, ..Default::default() }).unwrap().records.is_empty());
    // The unsynced records survive the history: whole, in order, after a reopen too, and into
    // the dead letters.
    let left: Vec<UsageRecord> = queued(&l).into_iter().map(|(_, r)| r).collect();
    assert_eq!(left, rs[1..].to_vec());
    drop(l);
    let l = reopen(dir.path()).await;
    let q = queued(&l);
    assert_eq!(q.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(), rs[1..].to_vec());
    assert_eq!(l.oldest_pending().unwrap(), Some(rs[1].clone()));
    l.dead_letter(&[q[0].0], "b1", Some(422), "refused").await.unwrap();
    assert_eq!(l.dead_letters(10).unwrap()[0].record, rs[1]);
    assert_eq!(l.counts(), Counts { outbox: 2, dead: 1 });
    let c = l.clear(true).await.unwrap();
    assert_eq!(c, Cleared { records: 0, outbox: 2, dead_letters: 1 });
    assert_eq!(l.counts(), Counts::default());
    assert!(l.outbox_after(None, 10).unwrap().is_empty());
}

#[tokio::test]
async fn records_are_paged_and_filtered() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path()).unwrap();
    let mut rs = Vec::new();
    for i in 0..25u64 {
        let app = if i % 2 == 0 { "even" } else { "odd" };
        rs.push(record(app, if i % 5 == 0 { "anthropic" } else { "openai" }, "m", i, 0, 0));
    }
    l.commit_many(&rs).await.unwrap();
    let mut seen = Vec::new();
    let mut q = RecordQuery { limit: 4, app: Some("even".into()), ..Default::default() };
    loop {
        let page = l.records(&q).unwrap();
        seen.extend(page.records.iter().map(|r| r.input_tokens));
        match page.next {
            Some(n) => q.after = Some(n),
            None => break,
        }
    }
    let expected: Vec<u64> = (0..25).rev().filter(|i| i % 2 == 0).collect();
    assert_eq!(seen, expected);
    let asc = l
        .records(&RecordQuery { limit: 100, ascending: true, provider: Some("anthropic".into()), ..Default::default() })
        .unwrap();
    assert_eq!(asc.records.iter().map(|r| r.input_tokens).collect::<Vec<_>>(), vec![0, 5, 10, 15, 20]);
    assert!(asc.next.is_none());
    let future = l.records(&RecordQuery { limit: 100, from_ms: Some(now_ms() + 60_000), ..Default::default() });
    assert!(future.unwrap().records.is_empty());
    let window = l.records(&RecordQuery {
        limit: 100,
        from_ms: Some(rs[0].ts),
        to_ms: Some(rs[24].ts + 1),
        ..Default::default()
    });
    assert_eq!(window.unwrap().records.len(), 25);
}

#[tokio::test]
async fn device_id_is_stable() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let l = Ledger::open(dir.path()).unwrap();
        l.device_id()
    };
    let l = reopen(dir.path()).await;
    assert_eq!(l.device_id(), id);
}

#[tokio::test]
async fn ledgers_with_json_records_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let old: Vec<UsageRecord> = (0..3).map(|i| record("old", "p", "m", i, 0, 0)).collect();
    {
        // What earlier versions wrote: JSON values, one referring outbox entry, one inline.
        let db = sled::open(dir.path()).unwrap();
        let records = db.open_tree("records").unwrap();
        for r in &old {
            records.insert(r.id.as_bytes(), serde_json::to_vec(r).unwrap()).unwrap();
        }
        let inline = serde_json::to_vec(&old[1]).unwrap();
        let segment = outbox::encode([(old[0].id.as_bytes(), &[][..]), (old[1].id.as_bytes(), &inline[..])]);
        db.open_tree("outbox").unwrap().insert(outbox::seq_key(0), segment).unwrap();
        db.flush().unwrap();
    }
    let l = reopen(dir.path()).await;
    assert_eq!(l.counts().outbox, 2);
    let page = l.records(&RecordQuery { limit: 10, ascending: true, ..Default::default() }).unwrap();
    assert_eq!(page.records, old);
    let new = record("new", "p", "m", 9, 0, 0);
    l.commit(&new).await.unwrap();
    let pending = queued(&l);
    assert_eq!(pending.iter().map(|(_, r)| r.id).collect::<Vec<_>>(), vec![old[0].id, old[1].id, new.id]);
    // A JSON entry dead-lettered and requeued comes back whole, in the current format.
    l.dead_letter(&[pending[1].0], "b", Some(400), "no").await.unwrap();
    assert_eq!(l.dead_letters(1).unwrap()[0].record, old[1]);
    l.requeue_dead_letters().await.unwrap();
    let back = queued(&l).into_iter().find(|(_, r)| r.id == old[1].id).unwrap().0;
    let raw = l.trees.outbox.get(outbox::seq_key(back.seq)).unwrap().unwrap();
    let (_, stored) = outbox::decode(&raw).unwrap().into_iter().next().unwrap();
    assert_eq!(stored.first(), Some(&codec::V1));
    assert_eq!(codec::decode(stored).unwrap(), old[1]);
}

/// A commit's hook runs exactly when its records become visible: a reader inside `consistent`
/// never sees records whose hook has not run, nor a hook whose records it cannot see.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commit_hooks_run_atomically_with_visibility() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let l = Arc::new(Ledger::open(dir.path()).unwrap());
    let hooked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (l, hooked, stop) = (l.clone(), hooked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut checks = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let (seen, hooks) = l.consistent(|| (total(&l, Period::Month).requests, hooked.load(Ordering::SeqCst)));
                assert_eq!(seen, hooks, "records visible vs hooks run");
                checks += 1;
            }
            checks
        })
    };
    let mut writers = Vec::new();
    for w in 0..8 {
        let (l, hooked) = (l.clone(), hooked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..60 {
                let h = hooked.clone();
                let hook: Applied = Box::new(move || {
                    h.fetch_add(1, Ordering::SeqCst);
                });
                l.commit_many_then(&[record(&format!("w{w}"), "p", "m", i, 0, 0)], Some(hook)).await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    assert!(reader.join().unwrap() > 0);
    assert_eq!(hooked.load(Ordering::SeqCst), 480);

    // A commit refused before it is applied drops its hook without running it.
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let bad = record("a", "p", "m", validate::MAX_TOKENS + 1, 0, 0);
    let hook: Applied = Box::new(move || r.store(true, Ordering::SeqCst));
    assert!(l.commit_many_then(&[bad], Some(hook)).await.is_err());
    assert!(!ran.load(Ordering::SeqCst));
}
