//! HTTP face overhead: the same OpenAI Chat Completions calls sent straight to a mock provider,
//! through a pass-through proxy, and through the daemon's HTTP face, in one run, at concurrency 1
//! and 32, streamed and not. Prints p50/p99 of total latency and of time to the first content
//! chunk, the latency each path adds (path percentile minus direct percentile), and the CPU
//! time per call of the pass-through proxy's process and of the daemon's (from
//! `/proc/<pid>/stat`) with the part of the daemon's spent in its ledger commit thread and the calls per
//! durable commit, next to the daemon's CPU per durable ledger commit (`usage.record`).
//!
//! The pass-through proxy (axum in, reqwest out, bytes streamed unchanged: no parsing, no keys,
//! no ledger) runs in a process of its own (this binary, re-run with `HTTP_BENCH_FORWARD_TO`) so
//! that its CPU time is its own; the mock provider and the load generator share this process.
//!
//! Run: `cargo bench --bench http` (about a minute). `HTTP_BENCH_N` sets requests per cell,
//! `HTTP_BENCH_CELLS` (e.g. `stream:1,non-stream:32`) which cells run, `BENCH_DAEMON_BIN` another
//! daemon build to measure (for an A/B against the same baselines).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;
#[path = "../tests/mock_provider/mod.rs"]
mod mock_provider;

use common::{added, direct, pct, spawn_daemon, start_forwarder, us, Sample};
use llm_sidecar::rpc::client::field;
use llm_sidecar::rpc::Client;
use mock_provider::{Mock, REPLY};
use rmpv::Value;
use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_llm-sidecar");
/// The name of the daemon's ledger commit thread (`ledger::Ledger::open`).
const LEDGER_THREAD: &str = "ledger-commit";

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    match std::env::var("HTTP_BENCH_FORWARD_TO") {
        Ok(upstream) => rt.block_on(forwarder(upstream)),
        Err(_) => rt.block_on(run()),
    }
}

/// Child mode: the pass-through proxy; prints its URL, serves until stdin closes.
async fn forwarder(upstream: String) {
    let url = start_forwarder(upstream).await;
    println!("{url}");
    std::io::stdout().flush().unwrap();
    let mut sink = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut sink).await;
}

/// CPU time (user + system) a process has used so far.
fn cpu(pid: u32, tick: Duration) -> Duration {
    stat_cpu(&format!("/proc/{pid}/stat"), tick)
}

/// CPU time used so far by the threads of process `pid` named `name`.
fn thread_cpu(pid: u32, name: &str, tick: Duration) -> Duration {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            total += stat_cpu(&task.path().join("stat").to_string_lossy(), tick);
        }
    }
    total
}

/// User + system time from a `/proc/.../stat` file.
fn stat_cpu(path: &str, tick: Duration) -> Duration {
    let stat = std::fs::read_to_string(path).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest.split_whitespace().skip(11).take(2).map(|v| v.parse().unwrap()).collect();
    tick * u32::try_from(f[0] + f[1]).unwrap()
}

fn per_call(d: Duration, n: usize) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6 / n as f64)
}

async fn run() {
    let n: usize = std::env::var("HTTP_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let hz: u32 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100);
    let tick = Duration::from_secs(1) / hz;
    let mock = Mock::start().await;

    let mut fwd: Child = Command::new(std::env::current_exe().unwrap())
        .env("HTTP_BENCH_FORWARD_TO", mock.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(fwd.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let forward_url = format!("{}/v1/chat/completions", line.trim());

    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, socket) = spawn_daemon(
        BIN,
        dir.path(),
        &format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[providers.openai]\nbase_url = \"{}/v1\"\nkey_env = \"BENCH_KEY\"\n",
            mock.url()
        ),
    )
    .await;
    let rpc = Client::connect(&socket).await.unwrap();
    let info = rpc.call("daemon.info", vec![]).await.unwrap();
    let face_url = format!("http://{}/v1/chat/completions", field(&info, "http").and_then(Value::as_str).unwrap());
    let app = rpc.call("apps.add", vec![Value::Map(vec![(Value::from("name"), Value::from("bench"))])]).await.unwrap();
    let token = field(&app, "token").and_then(Value::as_str).unwrap().to_string();

    let http = reqwest::Client::builder().pool_max_idle_per_host(256).tcp_nodelay(true).build().unwrap();
    let url = format!("{}/v1/chat/completions", mock.url());
    println!("HTTP face overhead: {n} calls per cell, mock at {}, reply {:?}", mock.url(), REPLY);
    println!();
    println!(
        "{:<10} {:>4} | {:>7} {:>7} | {:>7} {:>7} {:>7} {:>7} {:>6} | {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6}",
        "mode",
        "conc",
        "dir p50",
        "dir p99",
        "pass+50",
        "pass+99",
        "pass f50",
        "pass f99",
        "cpu",
        "face+50",
        "face+99",
        "face f50",
        "face f99",
        "cpu",
        "ledger",
        "calls/c"
    );
    let (fwd_pid, daemon_pid) = (fwd.id(), daemon.id());
    // `HTTP_BENCH_CELLS=stream:1,non-stream:32` runs only those cells (to profile one of them).
    let cells = std::env::var("HTTP_BENCH_CELLS").ok();
    let mut round_times = Vec::new();
    for stream in [false, true] {
        for conc in [1usize, 32] {
            let cell = format!("{}:{conc}", if stream { "stream" } else { "non-stream" });
            if cells.as_ref().is_some_and(|c| !c.split(',').any(|x| x.trim() == cell)) {
                continue;
            }
            let warm = 200.max(conc * 4);
            for u in [&url, &forward_url] {
                measure(&http, u, "sk-bench", stream, conc, warm).await;
            }
            measure(&http, &face_url, &token, stream, conc, warm).await;
            let d = measure(&http, &url, "sk-bench", stream, conc, n).await;
            let c0 = cpu(fwd_pid, tick);
            let p = measure(&http, &forward_url, "sk-bench", stream, conc, n).await;
            let pass_cpu = cpu(fwd_pid, tick) - c0;
            let k0 = commits(&rpc).await;
            let (c0, l0) = (cpu(daemon_pid, tick), thread_cpu(daemon_pid, LEDGER_THREAD, tick));
            let f = measure(&http, &face_url, &token, stream, conc, n).await;
            let face_cpu = cpu(daemon_pid, tick) - c0;
            let ledger_cpu = thread_cpu(daemon_pid, LEDGER_THREAD, tick) - l0;
            let k1 = commits(&rpc).await;
            let rounds = (k1.0 - k0.0).max(1);
            let per_commit = n as f64 / rounds as f64;
            round_times.push((cell.clone(), (k1.1 - k0.1) / rounds));
            let (d50, d99) = pct(&d, |s| s.total);
            let [p50, p99, pf50, pf99] = added(&d, &p);
            let [m50, m99, mf50, mf99] = added(&d, &f);
            println!(
                "{:<10} {:>4} | {:>7} {:>7} | {:>7} {:>7} {:>7} {:>7} {:>6} | {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6}",
                if stream { "stream" } else { "non-stream" },
                conc,
                us(d50),
                us(d99),
                p50,
                p99,
                pf50,
                pf99,
                per_call(pass_cpu, n),
                m50,
                m99,
                mf50,
                mf99,
                per_call(face_cpu, n),
                per_call(ledger_cpu, n),
                format!("{per_commit:.1}"),
            );
        }
    }
    // What one durable ledger commit costs the daemon, measured the same way: one at a time
    // (a commit and its fsync per call, as at concurrency 1) and 32 at a time (group commit).
    let mut ledger_cpu = Vec::new();
    for at_once in [1usize, 32] {
        let c0 = cpu(daemon_pid, tick);
        for start in (0..n).step_by(at_once) {
            let calls = (start..n.min(start + at_once)).map(|i| {
                let p = Value::Map(vec![
                    (Value::from("app"), Value::from("bench")),
                    (Value::from("provider"), Value::from("openai")),
                    (Value::from("model"), Value::from("gpt-4o-mini")),
                    (Value::from("input_tokens"), Value::from(i as u64)),
                    (Value::from("output_tokens"), Value::from(7u64)),
                ]);
                rpc.call("usage.record", vec![p])
            });
            for r in futures::future::join_all(calls).await {
                r.unwrap();
            }
        }
        ledger_cpu.push((at_once, cpu(daemon_pid, tick) - c0));
    }
    println!();
    println!("times in microseconds. dir: straight to the mock. pass: the pass-through proxy; face: the");
    println!("daemon's HTTP face; +50/+99: latency added to the whole call (path percentile - direct");
    println!("percentile); f50/f99: added to the first content chunk; cpu: that process's CPU per call;");
    println!("ledger: the part of the daemon's cpu spent in its ledger commit thread (SQLite, WAL, fsync);");
    println!("calls/c: face calls per durable ledger commit (one fsync each), from daemon.info.");
    for (cell, us) in round_times {
        println!("face {cell}: a durable ledger commit round (apply, COMMIT with its fsync, answer) took {us} us");
    }
    for (at_once, c) in ledger_cpu {
        println!(
            "daemon CPU per durable ledger commit (usage.record over RPC, {at_once:>2} at a time): {} us",
            per_call(c, n)
        );
    }
    drop(fwd.stdin.take());
    let _ = fwd.wait();
    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// Durable ledger commits the daemon has made so far and the µs its committer spent on them
/// (`daemon.info`).
async fn commits(rpc: &Client) -> (u64, u64) {
    let info = rpc.call("daemon.info", vec![]).await.unwrap();
    let get = |name| field(&info, "ledger").and_then(|l| field(l, name)).and_then(Value::as_u64).unwrap();
    (get("commits"), get("busy_us"))
}

async fn measure(http: &reqwest::Client, url: &str, key: &str, stream: bool, conc: usize, n: usize) -> Vec<Sample> {
    let per_task = n.div_ceil(conc);
    let tasks: Vec<_> = (0..conc)
        .map(|_| {
            let (http, url, key) = (http.clone(), url.to_string(), key.to_string());
            tokio::spawn(async move {
                let mut out = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    out.push(direct(&http, &url, &key, stream).await);
                }
                out
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}
