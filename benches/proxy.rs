//! Proxy overhead: the same chat calls sent straight to a mock provider and through the daemon,
//! in one run, at concurrency 1 and 32. Prints p50/p99 of total latency and of time to the first
//! content chunk, and the latency the daemon adds (daemon percentile minus direct percentile).
//!
//! A third path is the baseline for what any local proxy costs on this machine: a pass-through
//! HTTP proxy (axum in, reqwest out, body bytes streamed unchanged, no parsing, no keys, no
//! ledger) in front of the same mock. Its added latency is printed next to the daemon's.
//!
//! Run: `cargo bench --bench proxy` (about 30-60 s). `PROXY_BENCH_N` sets requests per cell.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;
#[path = "../tests/mock_provider/mod.rs"]
mod mock_provider;

use common::{added, direct, pct, spawn_daemon, start_forwarder, us, Sample};
use llm_sidecar::rpc::client::field;
use llm_sidecar::rpc::Client;
use mock_provider::{Mock, REPLY};
use rmpv::Value;
use std::sync::Arc;
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_llm-sidecar");

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Direct,
    /// Through the pass-through proxy (same HTTP client code as `Direct`, other URL).
    Forward,
    Daemon,
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run());
}

async fn run() {
    let n: usize = std::env::var("PROXY_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, socket) = spawn_daemon(BIN, dir.path(), &format!("[providers.openai]\nbase_url = \"{}/v1\"\nkey_env = \"BENCH_KEY\"\n[daemon]\nmax_inflight_per_connection = 256\n", mock.url())).await;

    let http = reqwest::Client::builder().pool_max_idle_per_host(256).tcp_nodelay(true).build().unwrap();
    let url = format!("{}/v1/chat/completions", mock.url());
    let forward_url = format!("{}/v1/chat/completions", start_forwarder(mock.url()).await);
    println!("proxy overhead: {n} calls per cell, mock at {}, reply {:?}", mock.url(), REPLY);
    println!();
    println!(
        "{:<10} {:>4} | {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8}",
        "mode",
        "conc",
        "dir p50",
        "dir p99",
        "pass p50",
        "pass p99",
        "pass f50",
        "pass f99",
        "dmn p50",
        "dmn p99",
        "dmn f50",
        "dmn f99"
    );
    for stream in [false, true] {
        for conc in [1usize, 32] {
            // Warm up every path (connections, pools, caches).
            let warm = 200.max(conc * 4);
            measure(Path::Direct, stream, conc, warm, &http, &url, &socket).await;
            measure(Path::Forward, stream, conc, warm, &http, &forward_url, &socket).await;
            measure(Path::Daemon, stream, conc, warm, &http, &url, &socket).await;
            let direct = measure(Path::Direct, stream, conc, n, &http, &url, &socket).await;
            let passed = measure(Path::Forward, stream, conc, n, &http, &forward_url, &socket).await;
            let through = measure(Path::Daemon, stream, conc, n, &http, &url, &socket).await;
            let (d50, d99) = pct(&direct, |s| s.total);
            let [p50, p99, pf50, pf99] = added(&direct, &passed);
            let [m50, m99, mf50, mf99] = added(&direct, &through);
            println!(
                "{:<10} {:>4} | {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8}",
                if stream { "stream" } else { "non-stream" },
                conc,
                us(d50),
                us(d99),
                p50,
                p99,
                pf50,
                pf99,
                m50,
                m99,
                mf50,
                mf99,
            );
        }
    }
    println!();
    println!("times in microseconds. dir: straight to the mock. pass: latency added by the pass-through proxy,");
    println!("dmn: latency added by the daemon (path percentile - direct percentile); p = whole call,");
    println!("f = time to the first content chunk. The daemon's non-stream answer waits for the durable");
    println!("ledger commit (fsync); its first chunk does not.");
    println!();
    // The floor: an RPC round trip to the daemon that does no work (daemon.ping).
    for conc in [1usize, 32] {
        let pings = ping_floor(&socket, conc, n).await;
        let (p50, p99) = pct(&pings, |s| s.total);
        println!("rpc floor (daemon.ping) conc {conc:>2}: p50 {} us, p99 {} us", us(p50), us(p99));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
}

async fn ping_floor(socket: &std::path::Path, conc: usize, n: usize) -> Vec<Sample> {
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let socket = socket.to_path_buf();
        let per_task = n.div_ceil(conc);
        tasks.push(tokio::spawn(async move {
            let c = Client::connect(&socket).await.unwrap();
            let mut out = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let t0 = Instant::now();
                c.call("daemon.ping", vec![]).await.unwrap();
                let total = t0.elapsed();
                out.push(Sample { total, first: total });
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

async fn measure(
    path: Path,
    stream: bool,
    conc: usize,
    n: usize,
    http: &reqwest::Client,
    url: &str,
    socket: &std::path::Path,
) -> Vec<Sample> {
    let per_task = n.div_ceil(conc);
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let http = http.clone();
        let url = url.to_string();
        let socket = socket.to_path_buf();
        tasks.push(tokio::spawn(async move {
            let client = match path {
                Path::Daemon => Some(Arc::new(Client::connect(&socket).await.unwrap())),
                Path::Direct | Path::Forward => None,
            };
            let mut notes = client.as_ref().and_then(|c| c.take_notifications());
            let mut out = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let s = match (&client, notes.as_mut()) {
                    (Some(c), Some(notes)) => via_daemon(c, notes, stream).await,
                    _ => direct(&http, &url, "sk-bench", stream).await,
                };
                out.push(s);
            }
            out
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

async fn via_daemon(
    c: &Client,
    notes: &mut tokio::sync::mpsc::UnboundedReceiver<llm_sidecar::rpc::client::Notification>,
    stream: bool,
) -> Sample {
    let msg = Value::Map(vec![
        (Value::from("role"), Value::from("user")),
        (Value::from("content"), Value::from("Say hello")),
    ]);
    let params = Value::Map(vec![
        (Value::from("model"), Value::from("openai/gpt-4o-mini")),
        (Value::from("messages"), Value::Array(vec![msg])),
        (Value::from("stream"), Value::from(stream)),
    ]);
    let t0 = Instant::now();
    let (id, rx) = c.start("chat", vec![params]).await.unwrap();
    let resp = Client::finish(id, rx);
    tokio::pin!(resp);
    let mut first = None;
    let r = loop {
        tokio::select! {
            biased;
            Some(_) = notes.recv() => { first.get_or_insert_with(|| t0.elapsed()); }
            r = &mut resp => break r.unwrap(),
        }
    };
    let total = t0.elapsed();
    while notes.try_recv().is_ok() {}
    assert_eq!(field(&r, "content").and_then(Value::as_str), Some(REPLY));
    Sample { total, first: first.unwrap_or(total) }
}
