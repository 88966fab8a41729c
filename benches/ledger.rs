//! Ledger and sync benchmark over the real socket, against the release binary.
//!
//! - durable `usage.record` throughput and p50/p99 latency at 1, 8 and 64 concurrent clients
//!   (each client one connection, one call at a time), next to the same figures for
//!   `daemon.ping` (the RPC floor, no disk);
//! - the storage floor: the same durable commits straight into a `Ledger` in the bench process
//!   (no socket, no RPC), with records/s and CPU time per record;
//! - sync drain rate: records preloaded with `usage.import`, then one `sync.now` into the local
//!   test collector;
//! - disk bytes per record: `BENCH_SIZE` records (default 1000000) committed in-process, then
//!   all acknowledged (as after a sync), then after a non-forced and a forced `clear`.
//!
//! Run: `cargo bench --bench ledger` (`BENCH_SECS` per measurement, default 3;
//! `BENCH_DRAIN` records for the drain, default 100000; `BENCH_CLIENTS`, e.g. `64`, to measure only
//! some concurrency levels; `BENCH_SIZE=0` skips the size measurement).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::collector::Collector;
use common::{field, params, Daemon};
use llm_sidecar::rpc::Client;
use rmpv::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Run {
    calls: usize,
    secs: f64,
    p50_us: u64,
    p99_us: u64,
}

async fn closed_loop(d: &Daemon, clients: usize, secs: f64, method: &'static str, make: fn(u64) -> Vec<Value>) -> Run {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(Arc::new(d.client().await));
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(n, c)| {
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(100_000);
                let mut i = n as u64 * 1_000_000_000;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    c.call(method, make(i)).await.expect(method);
                    lat.push(t.elapsed().as_micros() as u64);
                    i += 1;
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct =
        |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0);
    Run { calls: all.len(), secs: elapsed, p50_us: pct(0.50), p99_us: pct(0.99) }
}

fn record_params(i: u64) -> Vec<Value> {
    params(&[
        ("app", "bench".into()),
        ("provider", "openai".into()),
        ("model", "gpt-4o-mini".into()),
        ("input_tokens", (i % 5000).into()),
        ("output_tokens", 120.into()),
        ("cost_microusd", 42.into()),
    ])
}

fn ping_params(_: u64) -> Vec<Value> {
    vec![]
}

/// The record every measurement stores (the same fields as `record_params`).
fn bench_record(i: u64) -> llm_sidecar::usage_record::UsageRecord {
    let mut r = llm_sidecar::usage_record::UsageRecord::new("bench", "openai", "gpt-4o-mini");
    r.input_tokens = i % 5000;
    r.output_tokens = 120;
    r.cost_microusd = 42;
    r
}

fn export_record(i: u64) -> Value {
    let j = serde_json::to_value(bench_record(i)).unwrap();
    llm_sidecar::rpc::json_to_value(&j)
}

/// Durable commits from `writers` tasks into a fresh ledger for `secs`; returns records/s and
/// the process's CPU time (user + system) per record.
async fn in_process(writers: usize, secs: f64) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(llm_sidecar::ledger::Ledger::open(dir.path()).unwrap());
    let cpu0 = cpu_secs();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let l = ledger.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    l.commit(&bench_record(n)).await.unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0u64;
    for t in tasks {
        total += t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    (total as f64 / secs, (cpu_secs() - cpu0) * 1e6 / total as f64)
}

/// User + system CPU seconds of this process so far.
fn cpu_secs() -> f64 {
    cpu_secs_of("/proc/self/stat")
}

/// User + system CPU seconds of a process so far, from its `/proc/<pid>/stat`.
fn cpu_secs_of(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = after.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // After the command come the state (not a number, so skipped here) and fields 4.. of
    // proc(5); utime (14) and stime (15) are the 11th and 12th numbers. USER_HZ is 100.
    let ticks = 100.0;
    match (f.get(10), f.get(11)) {
        (Some(u), Some(s)) => (u + s) / ticks,
        _ => 0.0,
    }
}

/// Ledger size per record: after committing `n`, after acknowledging all of them, after a clear
/// and after a forced clear.
async fn disk_size(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = llm_sidecar::ledger::Ledger::open(dir.path()).unwrap();
    let mut i = 0u64;
    while (i as usize) < n {
        let chunk: Vec<_> = (0..5000.min(n - i as usize))
            .map(|_| {
                i += 1;
                bench_record(i)
            })
            .collect();
        ledger.commit_many(&chunk).await.unwrap();
    }
    let per = |bytes: u64| bytes as f64 / n as f64;
    let committed = ledger.size_on_disk();
    loop {
        let batch = ledger.outbox_after(None, 10_000).unwrap();
        if batch.is_empty() {
            break;
        }
        let at: Vec<_> = batch.iter().map(|e| e.at).collect();
        ledger.ack(&at, None).await.unwrap();
    }
    let synced = ledger.size_on_disk();
    ledger.clear(false).await.unwrap();
    let cleared = ledger.size_on_disk();
    println!(
        "disk for {n} records: {committed} B committed ({:.0} B/record), {synced} B after sync ({:.0} B/record), {cleared} B after usage.clear",
        per(committed),
        per(synced)
    );
}

async fn drain(records: usize) -> (f64, usize) {
    let col = Collector::start_with(false).await;
    let d = Daemon::start_with(
        &format!("[sync]\nurl = \"{}\"\ninterval_secs = 86400\nflush_threshold = 100000000\n", col.url),
        &[],
    );
    let c: Client = d.client().await;
    let mut left = records;
    let mut n = 0u64;
    while left > 0 {
        let chunk = left.min(5000);
        let recs: Vec<Value> = (0..chunk)
            .map(|_| {
                n += 1;
                export_record(n)
            })
            .collect();
        let p =
            params(&[("format", "llm-sidecar.usage".into()), ("version", 1.into()), ("records", Value::Array(recs))]);
        c.call("usage.import", p).await.unwrap();
        left -= chunk;
    }
    let st = c.call("sync.status", vec![]).await.unwrap();
    assert_eq!(field(&st, "pending").as_u64(), Some(records as u64));
    let t = Instant::now();
    let r = c.call("sync.now", vec![]).await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(field(&r, "sent").as_u64(), Some(records as u64), "{r}");
    (secs, col.count())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // The harness runs daemons at debug level for tests; measure at the production level.
    if std::env::var_os("LLM_SIDECAR_TEST_LOG").is_none() {
        std::env::set_var("LLM_SIDECAR_TEST_LOG", "warn");
    }
    let secs: f64 = std::env::var("BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(3.0);
    let drain_n: usize = std::env::var("BENCH_DRAIN").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let d = Daemon::start_with("[log]\nlevel = \"warn\"\n", &[]);
    println!(
        "{:<28} {:>8} {:>12} {:>10} {:>10} {:>12}",
        "measurement", "clients", "calls/s", "p50 µs", "p99 µs", "daemon CPU µs/call"
    );
    let counts: Vec<usize> = std::env::var("BENCH_CLIENTS")
        .ok()
        .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 8, 64]);
    for clients in counts {
        for (name, method, make) in [
            ("daemon.ping (baseline)", "daemon.ping", ping_params as fn(u64) -> Vec<Value>),
            ("usage.record (durable)", "usage.record", record_params as fn(u64) -> Vec<Value>),
        ] {
            let stat = format!("/proc/{}/stat", d.child.as_ref().map_or(0, std::process::Child::id));
            let cpu0 = cpu_secs_of(&stat);
            let r = closed_loop(&d, clients, secs, method, make).await;
            let cpu_us = (cpu_secs_of(&stat) - cpu0) * 1e6 / r.calls.max(1) as f64;
            println!(
                "{:<28} {:>8} {:>12.0} {:>10} {:>10} {:>12.0}",
                name,
                clients,
                r.calls as f64 / r.secs,
                r.p50_us,
                r.p99_us,
                cpu_us
            );
        }
    }
    let c = d.client().await;
    let st = c.call("sync.status", vec![]).await.unwrap();
    println!("records committed: {}", field(&st, "pending"));
    drop(c);
    drop(d);
    // The storage floor: the same durable commits straight into a `Ledger` in this process (no
    // socket, no RPC), with as many concurrent writers.
    for writers in [1usize, 64] {
        let (rate, cpu_us) = in_process(writers, secs).await;
        println!("ledger.commit in-process {writers:>4} writers: {rate:>8.0} records/s, {cpu_us:.0} µs CPU per record");
    }
    let size_n: usize = std::env::var("BENCH_SIZE").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    if size_n > 0 {
        disk_size(size_n).await;
    }
    let (secs, delivered) = drain(drain_n).await;
    println!(
        "sync drain: {drain_n} events in {secs:.2}s = {:.0} events/s (collector stored {delivered})",
        drain_n as f64 / secs
    );
}
