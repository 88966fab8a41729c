//! RPC benchmark: `daemon.info` round trips and pipelined throughput over the real daemon's
//! socket, next to a raw Unix-socket echo baseline measured in the same run with the same client.
//!
//! Run: `cargo bench --bench rpc` (optionally `RPC_BENCH_ROUNDS=50000`). The echo server answers
//! every request frame with a canned frame of the same size as the daemon's `daemon.info` answer,
//! so both sides move the same bytes and the ratio isolates the daemon's per-call work.

use llm_sidecar::rpc::codec::{Limits, Scanner};
use llm_sidecar::rpc::Message;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn request(id: u32) -> Vec<u8> {
    Message::Request { id, method: "daemon.info".into(), params: vec![] }.encode()
}

/// Reads one whole frame from a blocking stream, keeping leftovers in `buf`.
fn read_frame(s: &mut UnixStream, buf: &mut Vec<u8>, scanner: &mut Scanner) -> usize {
    let mut chunk = [0u8; 65536];
    loop {
        if let Some(len) = scanner.scan(buf, &Limits::DAEMON).expect("valid frame") {
            buf.drain(..len);
            return len;
        }
        let n = s.read(&mut chunk).expect("read");
        assert!(n > 0, "server closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Latency {
    p50: Duration,
    p99: Duration,
}

fn round_trips(path: &Path, rounds: usize) -> Latency {
    let mut s = UnixStream::connect(path).expect("connect");
    let mut buf = Vec::new();
    let mut scanner = Scanner::default();
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..rounds + 1000 {
        let req = request(i as u32);
        let t = Instant::now();
        s.write_all(&req).expect("write");
        read_frame(&mut s, &mut buf, &mut scanner);
        if i >= 1000 {
            samples.push(t.elapsed()); // first 1000 are warm-up
        }
    }
    samples.sort();
    Latency { p50: percentile(&samples, 0.5), p99: percentile(&samples, 0.99) }
}

/// Requests per second with `total` requests pipelined on one connection.
fn pipelined(path: &Path, total: usize) -> f64 {
    let s = UnixStream::connect(path).expect("connect");
    let mut rd = s.try_clone().expect("clone");
    let mut wr = s;
    let t = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut batch = Vec::new();
        for i in 0..total {
            batch.extend(request(i as u32));
            if batch.len() > 32 * 1024 {
                wr.write_all(&batch).expect("write");
                batch.clear();
            }
        }
        wr.write_all(&batch).expect("write");
        wr
    });
    let mut buf = Vec::new();
    let mut scanner = Scanner::default();
    for _ in 0..total {
        read_frame(&mut rd, &mut buf, &mut scanner);
    }
    let elapsed = t.elapsed();
    drop(writer.join());
    total as f64 / elapsed.as_secs_f64()
}

/// Echo baseline: answers each request frame with `reply`, on its own thread per connection.
fn start_echo(path: PathBuf, reply: Vec<u8>) {
    let listener = UnixListener::bind(&path).expect("bind echo");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let reply = reply.clone();
            std::thread::spawn(move || {
                let mut rd = conn.try_clone().expect("clone");
                let mut buf = Vec::new();
                let mut scanner = Scanner::default();
                let mut chunk = [0u8; 65536];
                let mut out = Vec::new();
                loop {
                    while let Ok(Some(len)) = scanner.scan(&buf, &Limits::DAEMON) {
                        buf.drain(..len);
                        out.extend_from_slice(&reply);
                    }
                    if !out.is_empty() {
                        if conn.write_all(&out).is_err() {
                            return;
                        }
                        out.clear();
                    }
                    match rd.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
}

fn main() {
    let rounds: usize = std::env::var("RPC_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let total = rounds * 10;
    let dir = tempfile::tempdir().expect("tmp");
    let sock = dir.path().join("run").join("sock");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_llm-sidecar"))
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env_remove("RUST_LOG")
        .args(["--log-level", "warn", "--socket"])
        .arg(&sock)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn daemon");
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "daemon did not start");
        std::thread::sleep(Duration::from_millis(10));
    }

    // Learn the size of a real daemon.info answer so the echo moves the same bytes.
    let reply = {
        let mut s = UnixStream::connect(&sock).expect("connect");
        s.write_all(&request(1)).expect("write");
        let mut buf = Vec::new();
        let mut sc = Scanner::default();
        let mut chunk = [0u8; 65536];
        let len = loop {
            if let Some(len) = sc.scan(&buf, &Limits::DAEMON).expect("frame") {
                break len;
            }
            let n = s.read(&mut chunk).expect("read");
            buf.extend_from_slice(&chunk[..n]);
        };
        buf.truncate(len);
        buf
    };
    let echo = dir.path().join("echo.sock");
    start_echo(echo.clone(), reply.clone());

    let echo_lat = round_trips(&echo, rounds);
    let rpc_lat = round_trips(&sock, rounds);
    let echo_tp = pipelined(&echo, total);
    let rpc_tp = pipelined(&sock, total);
    let _ = daemon.kill();
    let _ = daemon.wait();

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("RPC benchmark ({rounds} round trips, {total} pipelined; response {} bytes)", reply.len());
    println!("{:<34} {:>10} {:>10}", "round trip, one connection", "p50 µs", "p99 µs");
    println!("{:<34} {:>10.1} {:>10.1}", "raw unix-socket echo (baseline)", us(echo_lat.p50), us(echo_lat.p99));
    println!("{:<34} {:>10.1} {:>10.1}", "daemon.info via daemon", us(rpc_lat.p50), us(rpc_lat.p99));
    println!(
        "{:<34} {:>10.2} {:>10.2}",
        "ratio daemon / echo",
        us(rpc_lat.p50) / us(echo_lat.p50),
        us(rpc_lat.p99) / us(echo_lat.p99)
    );
    println!("{:<34} {:>10}", "pipelined, one connection", "req/s");
    println!("{:<34} {:>10.0}", "raw unix-socket echo (baseline)", echo_tp);
    println!("{:<34} {:>10.0}", "daemon.info via daemon", rpc_tp);
    println!("{:<34} {:>10.2}", "ratio daemon / echo", rpc_tp / echo_tp);
}
