#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::usage_record::{CallStatus, KeySource};
use std::sync::Arc;

fn refused(batch: &str, status: u16, reason: &str) -> crate::ledger::Refused {
    crate::ledger::Refused { batch_id: batch.into(), status: Some(status), reason: reason.into(), body: None }
}

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
    assert_eq!(l.ack(&[at[0], at[1], stranger], None).await.unwrap(), 2);
    // Reading after an entry that is gone still continues at the right place.
    assert_eq!(l.outbox_after(Some(at[1]), 10).unwrap().len(), 3);
    assert_eq!(l.dead_letter(&[at[2]], None, refused("batch-1", 400, "bad event")).await.unwrap(), 1);
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
    assert_eq!(l.ack(&all, None).await.unwrap(), 3);
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
    let seqs: Vec<u64> = q.iter().map(|(at, _)| at.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "queue positions only grow");
    // New entries continue the queue after a reopen, past every earlier position (even acked ones).
    let all: Vec<Queued> = q.iter().map(|(at, _)| *at).collect();
    l.ack(&all, None).await.unwrap();
    let more = record("a", "p", "m", 1, 0, 0);
    l.commit(&more).await.unwrap();
    let after = queued(&l);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].1.id, more.id);
    assert!(after[0].0.seq > *seqs.last().unwrap());
}

#[tokio::test]
async fn clear_keeps_unsynced_outbox_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path()).unwrap();
    let rs: Vec<UsageRecord> = (0..4).map(|i| record("a", "p", "m", i, 0, 0)).collect();
    l.commit_many(&rs).await.unwrap();
    let first = queued(&l)[0].0;
    l.ack(&[first], None).await.unwrap();
    // A commit stores each record once: its outbox entry only refers to it.
    let sql =
        |q: &str| -> i64 { rusqlite::Connection::open(l.file()).unwrap().query_row(q, [], |r| r.get(0)).unwrap() };
    assert_eq!(sql("SELECT count(*) FROM outbox WHERE record IS NULL"), 3);
    let c = l.clear(false).await.unwrap();
    assert_eq!(c, Cleared { records: 4, outbox: 0, dead_letters: 0 });
    assert_eq!(l.counts().outbox, 3);
    assert_eq!(total(&l, Period::Day), Counter::default());
    assert!(l.records(&RecordQuery { limit: 10, ..Default::default() }).unwrap().records.is_empty());
    // The unsynced records survive the history: whole, in order, after a reopen too, and into
    // the dead letters.
    let left: Vec<UsageRecord> = queued(&l).into_iter().map(|(_, r)| r).collect();
    assert_eq!(left, rs[1..].to_vec());
    assert_eq!(sql("SELECT count(*) FROM outbox WHERE record IS NOT NULL"), 3);
    drop(l);
    let l = reopen(dir.path()).await;
    let q = queued(&l);
    assert_eq!(q.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(), rs[1..].to_vec());
    assert_eq!(l.oldest_pending().unwrap(), Some(rs[1].clone()));
    l.dead_letter(&[q[0].0], None, refused("b1", 422, "refused")).await.unwrap();
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
async fn an_old_sled_ledger_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("ledger");
    std::fs::create_dir(&old).unwrap();
    std::fs::write(old.join("conf"), b"segment_size: 524288").unwrap();
    std::fs::write(old.join("db"), b"sled").unwrap();
    let e = Ledger::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("old sled format") && e.contains("usage export") && e.contains("usage import"), "{e}");
    assert!(!dir.path().join(schema::FILE).exists(), "no empty ledger is made beside it");
}

#[tokio::test]
async fn a_ledger_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Ledger::open(dir.path()).unwrap());
    let file = dir.path().join(schema::FILE);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let set =
            rusqlite::Connection::open(&file).and_then(|c| c.pragma_update(None, "user_version", schema::VERSION + 1));
        if set.is_ok() || std::time::Instant::now() > deadline {
            set.unwrap();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let e = Ledger::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("newer than this build"), "{e}");
}

#[tokio::test]
async fn ledger_files_are_private_and_looser_modes_are_tightened() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let l = Ledger::open(&data).unwrap();
    l.commit(&record("a", "p", "m", 1, 1, 1)).await.unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for suffix in ["", "-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", l.file().display()));
        assert!(p.exists(), "{}", p.display());
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

#[tokio::test]
async fn the_tables_are_plain_sql_for_other_readers() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path()).unwrap();
    let mut rs = vec![record("a", "openai", "gpt-4o", 10, 5, 100), record("a", "openai", "gpt-4o", 1, 1, 50)];
    rs.push(record("b", "anthropic", "claude", 3, 3, 7));
    l.commit_many(&rs).await.unwrap();
    let c = rusqlite::Connection::open(l.file()).unwrap();
    let by_model: Vec<(String, i64)> = c
        .prepare("SELECT model, sum(cost_microusd) FROM records GROUP BY model ORDER BY model")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(by_model, vec![("claude".to_string(), 7), ("gpt-4o".to_string(), 150)]);
    let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, schema::VERSION);
    let month: i64 = c
        .query_row("SELECT requests FROM counters WHERE period = 'month' AND dim = 'total'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(month, 3);
}

#[tokio::test]
async fn clear_gives_the_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path()).unwrap();
    for _ in 0..10 {
        let batch: Vec<UsageRecord> = (0..1000).map(|i| record("app", "openai", "gpt-4o-mini", i, 1, 1)).collect();
        l.commit_many(&batch).await.unwrap();
    }
    let full = l.size_on_disk();
    l.clear(true).await.unwrap();
    let cleared = l.size_on_disk();
    assert!(cleared * 4 < full, "{full} bytes before, {cleared} after a forced clear");
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

#[tokio::test]
async fn persisted_batches_survive_reopen_and_leave_with_their_answer() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path()).unwrap();
    let rs: Vec<UsageRecord> = (0..4).map(|i| record("a", "p", "m", i, 0, 0)).collect();
    l.commit_many(&rs).await.unwrap();
    let at: Vec<Queued> = l.outbox_after(None, 10).unwrap().into_iter().map(|e| e.at).collect();
    let id = Uuid::now_v7();
    l.persist_batches(None, vec![NewBatch { id, body: b"[1,2]".to_vec(), entries: at[..2].to_vec() }]).await.unwrap();
    // Batched entries are not read again as new ones.
    assert_eq!(l.outbox_after(None, 10).unwrap().len(), 2);
    drop(l);
    let l = Ledger::open(dir.path()).unwrap();
    let stored = l.stored_batches().unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].id, stored[0].body.as_slice(), &stored[0].entries[..]), (id, &b"[1,2]"[..], &at[..2]));
    // A split replaces the parent in one step.
    let (left, right) = (Uuid::now_v7(), Uuid::now_v7());
    let halves = vec![
        NewBatch { id: left, body: b"[1]".to_vec(), entries: vec![at[0]] },
        NewBatch { id: right, body: b"[2]".to_vec(), entries: vec![at[1]] },
    ];
    l.persist_batches(Some(id), halves).await.unwrap();
    let ids: Vec<Uuid> = l.stored_batches().unwrap().iter().map(|b| b.id).collect();
    assert_eq!(ids, vec![left, right]);
    l.ack(&[at[0]], Some(left)).await.unwrap();
    let why =
        Refused { batch_id: right.to_string(), status: Some(400), reason: "rejected".into(), body: Some("bad".into()) };
    l.dead_letter(&[at[1]], Some(right), why).await.unwrap();
    assert!(l.stored_batches().unwrap().is_empty());
    let dead = l.dead_letters(10).unwrap();
    assert_eq!(
        (dead[0].reason.as_str(), dead[0].body.as_deref(), dead[0].status),
        ("rejected", Some("bad"), Some(400))
    );
    assert_eq!(l.counts(), Counts { outbox: 2, dead: 1 });
    assert_eq!(l.unsynced(&[rs[0].id, rs[1].id, rs[2].id]).unwrap(), [rs[1].id, rs[2].id].into_iter().collect());
    // Requeue by id.
    assert_eq!(l.requeue(&[Uuid::now_v7()]).await.unwrap(), 0);
    assert_eq!(l.requeue(&[rs[1].id]).await.unwrap(), 1);
    assert_eq!(l.counts(), Counts { outbox: 3, dead: 0 });
}

#[tokio::test]
async fn imported_records_marked_synced_are_not_queued() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path()).unwrap();
    let mut a = record("a", "p", "m", 1, 0, 0);
    a.source = Some("llm-sidecar://other".into());
    let b = record("a", "p", "m", 2, 0, 0);
    assert_eq!(l.import(&[a.clone(), b.clone()], &[true, false]).await.unwrap(), vec![true, true]);
    let queued: Vec<Uuid> = l.outbox_after(None, 10).unwrap().into_iter().map(|e| e.at.id).collect();
    assert_eq!(queued, vec![a.id]);
    let page = l.records(&RecordQuery { limit: 10, ascending: true, ..Default::default() }).unwrap();
    assert_eq!(page.records[0].source.as_deref(), Some("llm-sidecar://other"), "provenance is kept");
    assert_eq!(total(&l, Period::Month).requests, 2, "both count locally");
}

#[tokio::test]
async fn a_version_2_ledger_migrates_forward_keeping_its_queue() {
    let dir = tempfile::tempdir().unwrap();
    let id = crate::usage_record::id_from_ms(now_ms());
    {
        let file = schema::prepare(dir.path()).unwrap();
        let conn = rusqlite::Connection::open(&file).unwrap();
        conn.execute_batch(&format!("BEGIN; {}; {}; PRAGMA user_version = 2; COMMIT;", schema::V1, schema::V2))
            .unwrap();
        conn.execute(
            "INSERT INTO records VALUES (?1, ?2, 'a', 'local', 'p', 'm', '', 'byok', 1, 1, 0, 0, 0, 0, 5, 0, 1, NULL, 'ok', NULL, 1)",
            params![id.to_string(), now_ms()],
        )
        .unwrap();
        conn.execute("INSERT INTO outbox (id) VALUES (?1)", [id.to_string()]).unwrap();
    }
    let l = Ledger::open(dir.path()).unwrap();
    let queued = l.outbox_after(None, 10).unwrap();
    let r = queued[0].record.as_ref().unwrap();
    assert_eq!((r.id, r.source.as_ref()), (id, None));
    assert!(l.stored_batches().unwrap().is_empty());
}
