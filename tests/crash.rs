//! Crash test: start the daemon, record usage at a high rate from several clients while the
//! sync worker ships it, SIGKILL the daemon at a random moment, restart, repeat; finally sync
//! everything. Every acknowledged record must reach the collector exactly once (none lost, none
//! invented), and the counters must still equal the records.
//!
//! `CRASH_CYCLES` sets the number of kill cycles (default 50); the long run is
//! `CRASH_CYCLES=500 cargo test --release --test crash -- --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::collector::{Collector, Fault};
use common::{field, params, record_until_gone, wait_until, Book, Daemon};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: usize = 4;
const IN_FLIGHT: usize = 8;

/// Bytes of the ledger file and its write-ahead log in data dir `p`.
fn ledger_size(p: &Path) -> u64 {
    ["ledger.sqlite", "ledger.sqlite-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(p.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_reach_the_collector_exactly_once_across_sigkills() {
    let cycles: usize = std::env::var("CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let col = Collector::start_with(false).await;
    let config = format!(
        "[sync]\nurl = \"{}\"\ninterval_secs = 1\nflush_threshold = 200\nbackoff_initial_ms = 20\n\
         backoff_max_ms = 200\ntimeout_secs = 2\n",
        col.url
    );
    let mut d = Daemon::prepare(&config, &[]);
    let book = Arc::new(Mutex::new(Book::default()));
    let started = Instant::now();
    let mut sizes = Vec::new();
    for cycle in 0..cycles {
        // Now and then the backend commits a batch but the answer is lost.
        if fastrand::u8(0..4) == 0 {
            col.push_fault(Fault::CommitThenReset);
        }
        d.spawn();
        let mut tasks = Vec::new();
        for n in 0..CLIENTS {
            let client = Arc::new(d.client().await);
            tasks.push(tokio::spawn(record_until_gone(client, book.clone(), format!("app{n}"), IN_FLIGHT)));
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(50..400))).await;
        let before = book.lock().unwrap().acked.len();
        d.kill9();
        for t in tasks {
            t.await.unwrap();
        }
        if std::env::var_os("CRASH_DEBUG").is_some() {
            eprintln!("cycle {cycle}: acked so far {before}");
        }
        if cycle % 10 == 9 || cycle + 1 == cycles {
            let b = book.lock().unwrap();
            sizes.push((cycle + 1, b.acked.len(), ledger_size(&d.data_dir)));
        }
    }
    let kill_phase = started.elapsed();

    d.spawn();
    let c = d.client().await;
    let synced = Instant::now();
    let status = wait_until(&c, "sync.status", Duration::from_secs(120), |v| {
        field(v, "pending").as_u64() == Some(0) && field(v, "state").as_str() == Some("idle")
    })
    .await;
    assert_eq!(field(&status, "dead_letters").as_u64(), Some(0));

    let b = std::mem::take(&mut *book.lock().unwrap());
    assert!(b.rpc_errors.is_empty(), "unexpected errors: {:?}", &b.rpc_errors[..b.rpc_errors.len().min(5)]);
    let delivered = col.ids();
    let lost: Vec<&String> = b.acked.iter().filter(|id| !delivered.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged records never reached the collector, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let invented: Vec<&String> = delivered.difference(&b.attempted).collect();
    assert!(invented.is_empty(), "the collector got ids nobody recorded: {invented:?}");

    // The local ledger holds exactly what was delivered, and its counters agree.
    let mut local = HashSet::new();
    for r in common::all_records(&c).await {
        assert!(local.insert(field(&r, "id").as_str().unwrap().to_string()), "a record is stored twice");
    }
    let undelivered: Vec<&String> = local.difference(&delivered).collect();
    let not_local: Vec<&String> = delivered.difference(&local).collect();
    assert!(
        undelivered.is_empty() && not_local.is_empty(),
        "committed but never delivered: {} (acknowledged: {}), e.g. {:?}; delivered but not in the ledger: {} \
         (acknowledged: {}), e.g. {:?}",
        undelivered.len(),
        undelivered.iter().filter(|id| b.acked.contains(**id)).count(),
        &undelivered[..undelivered.len().min(3)],
        not_local.len(),
        not_local.iter().filter(|id| b.acked.contains(**id)).count(),
        &not_local[..not_local.len().min(3)],
    );
    let summary =
        c.call("usage.summary", params(&[("period", "month".into()), ("group_by", "app".into())])).await.unwrap();
    let totals = field(&summary, "totals");
    assert_eq!(field(totals, "requests").as_u64(), Some(local.len() as u64), "counters equal records");
    assert_eq!(field(totals, "input_tokens").as_u64(), Some(100 * local.len() as u64));

    eprintln!(
        "crash test: {cycles} SIGKILL cycles in {kill_phase:.1?}, final sync {:.1?}; {} attempted, {} acknowledged, \
         {} committed (= delivered); {} duplicate event deliveries and {} replayed batches absorbed by id/key",
        synced.elapsed(),
        b.attempted.len(),
        b.acked.len(),
        local.len(),
        col.duplicate_events(),
        col.replayed_batches()
    );
    for (cycle, acked, bytes) in &sizes {
        eprintln!(
            "  after {cycle:>4} cycles: {acked:>7} acknowledged records, ledger {:.1} MiB on disk",
            *bytes as f64 / 1048576.0
        );
    }
}
