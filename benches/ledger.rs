//! Ledger and sync benchmark over the real socket, against the release binary.
//!
//! - durable `usage.record` throughput and p50/p99 latency at 1, 8 and 64 concurrent clients
//!   (each client one connection, one call at a time), next to the same figures for
//!   `daemon.ping` (the RPC floor, no disk);
//! - sync drain rate: records preloaded with `usage.import`, then one `sync.now` into the local
//!   test collector.
//!
//! Run: `cargo bench --bench ledger` (`BENCH_SECS` per measurement, default 3;
//! `BENCH_DRAIN` records for the drain, default 100000; `BENCH_CLIENTS`, e.g. `64`, to measure only
//! some concurrency levels).
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

fn export_record(i: u64) -> Value {
    let mut r = llm_sidecar::usage::UsageRecord::new("bench", "openai", "gpt-4o-mini");
    r.input_tokens = i % 5000;
    r.output_tokens = 120;
    r.cost_microusd = 42;
    let j = serde_json::to_value(&r).unwrap();
    json_to_value(&j)
}

fn json_to_value(j: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match j {
        J::Null => Value::Nil,
        J::Bool(b) => Value::from(*b),
        J::Number(n) => n.as_u64().map(Value::from).or_else(|| n.as_i64().map(Value::from)).unwrap_or(Value::Nil),
        J::String(s) => Value::from(s.as_str()),
        J::Array(a) => Value::Array(a.iter().map(json_to_value).collect()),
        J::Object(o) => Value::Map(o.iter().map(|(k, v)| (Value::from(k.as_str()), json_to_value(v))).collect()),
    }
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
    println!("{:<28} {:>8} {:>12} {:>10} {:>10}", "measurement", "clients", "calls/s", "p50 µs", "p99 µs");
    let counts: Vec<usize> = std::env::var("BENCH_CLIENTS")
        .ok()
        .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 8, 64]);
    for clients in counts {
        for (name, method, make) in [
            ("daemon.ping (baseline)", "daemon.ping", ping_params as fn(u64) -> Vec<Value>),
            ("usage.record (durable)", "usage.record", record_params as fn(u64) -> Vec<Value>),
        ] {
            let r = closed_loop(&d, clients, secs, method, make).await;
            println!("{:<28} {:>8} {:>12.0} {:>10} {:>10}", name, clients, r.calls as f64 / r.secs, r.p50_us, r.p99_us);
        }
    }
    let c = d.client().await;
    let st = c.call("sync.status", vec![]).await.unwrap();
    println!("records committed: {}", field(&st, "pending"));
    drop(d);
    let (secs, delivered) = drain(drain_n).await;
    println!(
        "sync drain: {drain_n} events in {secs:.2}s = {:.0} events/s (collector stored {delivered})",
        drain_n as f64 / secs
    );
}
