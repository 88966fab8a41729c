//! Hostile and careless local peers over the real socket (issue 16): a client that goes away
//! mid-call cancels it; frames built to exhaust memory or CPU hurt nobody else; connections
//! cannot be hoarded; the nesting limit is the documented one; keys leave memory on lock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod mock_provider;

use common::{all_records, field, params, request, wait_until, Daemon};
use llm_sidecar::rpc::codec::FrameReader;
use llm_sidecar::rpc::Message;
use mock_provider::{Fault, Mock};
use rmpv::Value;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

const KEY: &str = "sk-test-hostile-PLATFORMkey-5521";

/// OpenAI pointed at `mock` with a platform key, and a token quota (so calls hold a reservation).
fn quota_config(mock: &Mock) -> String {
    format!(
        "[providers.openai]\nbase_url = \"{}/v1\"\nkey_env = \"MOCK_KEY\"\n\
         [policy]\ndefault_tier = \"free\"\n[tiers.free]\nrank = 0\nmonthly_tokens = 1000000\n",
        mock.url()
    )
}

fn chat_params(stream: bool) -> Vec<Value> {
    let msg = Value::Map(vec![
        (Value::from("role"), Value::from("user")),
        (Value::from("content"), Value::from("Say hello")),
    ]);
    params(&[
        ("model", "openai/gpt-4o-mini".into()),
        ("messages", Value::Array(vec![msg])),
        ("stream", stream.into()),
        ("max_tokens", 100.into()),
    ])
}

/// The `reserved` figure of the token limit in `quota.status`.
fn reserved(status: &Value) -> i64 {
    let limits = field(status, "limits").as_array().unwrap();
    let tokens = limits.iter().find(|l| field(l, "metric").as_str() == Some("tokens")).unwrap();
    field(tokens, "reserved").as_i64().unwrap()
}

/// Waits (at most 100 ms after `t0`) until the mock has seen one of its connections end; returns
/// how long after `t0` that was.
async fn upstream_closed_within_100ms(mock: &Mock, t0: Instant, what: &str) -> Duration {
    loop {
        if let Some(at) = mock.closed_since(t0).first() {
            return at.duration_since(t0);
        }
        assert!(
            t0.elapsed() < Duration::from_millis(100),
            "{what}: the upstream connection is still open after 100 ms"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// After a disconnect: the reservation is back to 0 and the call left one `cancelled` record.
async fn assert_cancelled_and_released(d: &Daemon, what: &str) {
    let c = d.client().await;
    wait_until(&c, "quota.status", Duration::from_secs(5), |s| reserved(s) == 0).await;
    let records = all_records(&c).await;
    assert_eq!(records.len(), 1, "{what}: {records:?}");
    assert_eq!(field(&records[0], "status").as_str(), Some("cancelled"), "{what}: {}", records[0]);
}

/// A client that closes its connection while its call streams: the upstream request is aborted
/// at once, the reservation released, and the usage so far billed as `cancelled`; a call of
/// another connection streaming at the same time is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_while_streaming_cancels_the_call() {
    let mock = Mock::start().await;
    mock.set_default(Some(Fault::Slow { every: Duration::from_millis(25), chunks: 400 }));
    let d = Daemon::start_with(&quota_config(&mock), &[("MOCK_KEY", KEY)]);
    let mut raw = UnixStream::connect(&d.socket).await.unwrap();
    raw.write_all(&request(1, "chat", chat_params(true))).await.unwrap();
    let (rd, wr) = raw.into_split();
    let mut frames = FrameReader::new(rd);
    for _ in 0..3 {
        let frame = tokio::time::timeout(Duration::from_secs(5), frames.next_frame()).await.unwrap().unwrap().unwrap();
        let Ok(Message::Notification { method, .. }) = Message::decode(&frame) else { panic!("not a chunk") };
        assert_eq!(method, "chat.chunk");
    }
    let observer = d.client().await;
    assert!(
        reserved(&observer.call("quota.status", vec![]).await.unwrap()) > 0,
        "the running call holds a reservation"
    );
    let t0 = Instant::now();
    drop((frames, wr));
    let after = upstream_closed_within_100ms(&mock, t0, "stream").await;
    eprintln!("streaming: upstream closed {after:?} after the client");
    assert_cancelled_and_released(&d, "stream").await;
    assert_eq!(mock.state.completed.load(std::sync::atomic::Ordering::SeqCst), 0, "the stream ran to its end");
    let records = all_records(&observer).await;
    assert!(field(&records[0], "output_tokens").as_u64().unwrap() >= 1, "usage so far is billed: {}", records[0]);
}

/// A client that closes its connection while it waits for a non-streamed answer: the same. Its
/// one request slot is taken (`max_inflight_per_connection = 1`, a second request queued), so
/// the daemon notices the hang-up while it is not reading frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_while_waiting_cancels_the_call() {
    let mock = Mock::start().await;
    mock.set_default(Some(Fault::Hang));
    let config = format!("[daemon]\nmax_inflight_per_connection = 1\n{}", quota_config(&mock));
    let d = Daemon::start_with(&config, &[("MOCK_KEY", KEY)]);
    let mut raw = UnixStream::connect(&d.socket).await.unwrap();
    raw.write_all(&request(1, "chat", chat_params(false))).await.unwrap();
    raw.write_all(&request(2, "daemon.ping", vec![])).await.unwrap();
    let observer = d.client().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while mock.requests() == 0 {
        assert!(Instant::now() < deadline, "the call never reached the provider");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        reserved(&observer.call("quota.status", vec![]).await.unwrap()) > 0,
        "the running call holds a reservation"
    );
    let t0 = Instant::now();
    drop(raw);
    let after = upstream_closed_within_100ms(&mock, t0, "non-streamed").await;
    eprintln!("non-streamed: upstream closed {after:?} after the client");
    assert_cancelled_and_released(&d, "non-streamed").await;
}

/// The daemon's resident set, in bytes.
fn rss(d: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// A `daemon.ping` request whose params array holds `body` (already encoded MessagePack), padded
/// so the whole frame is `body` plus this 17-byte head.
fn ping_with(body: &[u8]) -> Vec<u8> {
    let mut out = vec![0x94, 0x00, 0x01];
    rmp::encode::write_str(&mut out, "daemon.ping").unwrap();
    out.push(0x91);
    out.extend_from_slice(body);
    out
}

/// A 16 MiB frame: one array of empty maps (0x80) or nils (0xc0) filling it.
fn sixteen_mib_of(item: u8) -> Vec<u8> {
    let head = ping_with(&[]).len() + 5;
    let n = 16 * 1024 * 1024 - head;
    let mut body = vec![0xdd];
    body.extend_from_slice(&(n as u32).to_be_bytes());
    body.resize(5 + n, item);
    ping_with(&body)
}

/// Sends `frame` on a fresh connection; returns whether the daemon answered it (an error
/// response: the params are wrong for `daemon.ping`) rather than closing the connection.
async fn send_hostile(socket: std::path::PathBuf, frame: std::sync::Arc<Vec<u8>>) -> bool {
    let s = UnixStream::connect(&socket).await.unwrap();
    let (rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&frame).await;
        wr
    });
    let mut frames = FrameReader::new(rd);
    let answer = tokio::time::timeout(Duration::from_secs(20), frames.next_frame()).await.expect("answered or closed");
    drop(writer.await);
    matches!(answer, Ok(Some(f)) if matches!(Message::decode(&f), Ok(Message::Response { id: 1, result: Err(_) })))
}

/// Frames built to exhaust memory or CPU: 16 MiB of empty maps or of nils (refused from their
/// array header), and the largest frames the limits let through (a 16 MiB binary; 900,000 nils,
/// about 29 MiB decoded), each alone and then three at once. Each raises the daemon's RSS by at
/// most 64 MB, RSS is back within 20 MB of where it was 5 s later, and another client's pings
/// meanwhile keep a p99 ≤ 50 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_frames_cost_bounded_memory_and_stall_nobody() {
    let d = Daemon::start();
    let pinger = d.client().await;
    for _ in 0..50 {
        pinger.call("daemon.ping", vec![]).await.unwrap();
    }
    let socket = d.socket.clone();
    let nils = {
        let mut body = vec![0xdd];
        body.extend_from_slice(&800_000u32.to_be_bytes());
        body.resize(5 + 800_000, 0xc0);
        ping_with(&body)
    };
    let binary = {
        let mut body = Vec::new();
        rmp::encode::write_bin_len(&mut body, 16 * 1024 * 1024 - 40).unwrap();
        body.resize(body.len() + 16 * 1024 * 1024 - 40, 0x5a);
        ping_with(&body)
    };
    let cases: [(&str, Vec<u8>, bool); 4] = [
        ("16 MiB of empty maps", sixteen_mib_of(0x80), false),
        ("16 MiB of nils", sixteen_mib_of(0xc0), false),
        ("a 16 MiB binary", binary, true),
        ("800,000 nils", nils, true),
    ];
    let stop = tokio_util::sync::CancellationToken::new();
    let latencies = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut out = Vec::new();
            while !stop.is_cancelled() {
                let t = Instant::now();
                pinger.call("daemon.ping", vec![]).await.unwrap();
                out.push(t.elapsed());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            out
        }
    });
    for (name, frame, answered) in cases {
        let frame = std::sync::Arc::new(frame);
        for at_once in [1usize, 3] {
            let before = rss(&d);
            let sends = (0..at_once).map(|_| tokio::spawn(send_hostile(socket.clone(), frame.clone())));
            let sends = futures::future::join_all(sends);
            tokio::pin!(sends);
            let mut peak = before;
            let outcomes = loop {
                tokio::select! {
                    r = &mut sends => break r,
                    _ = tokio::time::sleep(Duration::from_millis(5)) => peak = peak.max(rss(&d)),
                }
            };
            peak = peak.max(rss(&d));
            for o in outcomes {
                assert_eq!(o.unwrap(), answered, "{name}: answered (not closed)? log:\n{}", d.logs());
            }
            let rise = peak.saturating_sub(before);
            let t = Instant::now();
            while rss(&d) > before + 20_000_000 {
                assert!(
                    t.elapsed() < Duration::from_secs(5),
                    "{name} ×{at_once}: RSS {} MB, {} MB before",
                    rss(&d) >> 20,
                    before >> 20
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            eprintln!(
                "{name} ×{at_once}: RSS +{} MB at peak (from {} MB), back after {:?}",
                rise >> 20,
                before >> 20,
                t.elapsed()
            );
            if at_once == 1 {
                assert!(rise <= 64 << 20, "{name}: RSS rose by {} MB", rise >> 20);
            }
        }
    }
    stop.cancel();
    let mut lat = latencies.await.unwrap();
    lat.sort();
    let p99 = lat[lat.len() * 99 / 100];
    eprintln!(
        "pings during the frames: {}, p50 {:?}, p99 {:?}, max {:?}",
        lat.len(),
        lat[lat.len() / 2],
        p99,
        lat[lat.len() - 1]
    );
    assert!(p99 <= Duration::from_millis(50), "ping p99 {p99:?}");
    assert!(d.logs().contains("more than 1000000 array/map elements"), "the refusal is logged");
}

/// The nesting limit is the documented 64 levels, counting the message's own array: a request
/// nested exactly that deep is decoded and answered, one level more closes the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nesting_at_the_limit_is_served_and_one_deeper_is_refused() {
    use llm_sidecar::rpc::codec::MAX_DEPTH;
    let d = Daemon::start();
    // The request array and its params array are levels 1 and 2.
    let nested = |levels: usize| {
        let mut body = vec![0x91; levels - 2 - 1];
        body.push(0x90);
        ping_with(&body)
    };
    assert!(send_hostile(d.socket.clone(), nested(MAX_DEPTH).into()).await, "{MAX_DEPTH} levels must be served");
    assert!(
        !send_hostile(d.socket.clone(), nested(MAX_DEPTH + 1).into()).await,
        "{} levels must be refused",
        MAX_DEPTH + 1
    );
    assert!(d.logs().contains(&format!("nested deeper than {MAX_DEPTH} levels")));
    // And the answer at the limit is the ordinary one for bad params, not a decoding failure.
    let c = d.client().await;
    assert!(c.call("daemon.ping", vec![]).await.is_ok());
}

/// Raises this process's open-file limit to its hard limit (the daemon, started after, inherits
/// it), so 2,000 connections fit.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    l.current = l.maximum;
    let _ = setrlimit(Resource::Nofile, l);
}

/// Opens `n` connections from this process: every other one sends the first 3 bytes of a
/// request and never the rest, the others send nothing.
fn hoard(socket: &std::path::Path, n: usize) -> Vec<std::os::unix::net::UnixStream> {
    use std::io::Write as _;
    let partial = request(1, "daemon.ping", vec![]);
    (0..n)
        .map(|i| {
            let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
            if i % 2 == 0 {
                let _ = s.write_all(&partial[..3]);
            }
            s
        })
        .collect()
}

/// Whether the daemon has closed `s` (EOF or reset on a non-blocking read).
fn closed_by_daemon(s: &std::os::unix::net::UnixStream) -> bool {
    use std::io::Read as _;
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let closed = match (&*s).read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).unwrap();
    closed
}

/// A `daemon.ping` round trip on a blocking socket.
fn ping(s: &mut std::os::unix::net::UnixStream, id: u32) -> bool {
    use std::io::Write as _;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if s.write_all(&request(id, "daemon.ping", vec![])).is_err() {
        return false;
    }
    matches!(rmpv::decode::read_value(s).map(Message::from_value), Ok(Ok(Message::Response { id: got, result: Ok(_) })) if got == id)
}

/// Time for another process (the CLI, `status`) to be served.
fn cli_served_in(d: &Daemon) -> Duration {
    let t = Instant::now();
    let out = common::command(d.dir.path()).args(["--socket", d.socket.to_str().unwrap(), "status"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    t.elapsed()
}

/// 2,000 connections opened by one process, each completing a request and then held: it gets
/// no more than its share, half of `max_connections` — the rest are closed at once — and a
/// client of another process is served within 1 s.
#[test]
fn one_process_gets_at_most_half_the_connections() {
    raise_fd_limit();
    let d = Daemon::start();
    let held: Vec<_> = (0..2000)
        .map(|i| {
            let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
            let answered = ping(&mut s, i);
            (s, answered)
        })
        .collect();
    let answered = held.iter().filter(|(_, a)| *a).count();
    let open = held.iter().filter(|(s, _)| !closed_by_daemon(s)).count();
    assert_eq!((answered, open), (512, 512), "one process holds {open} of 1024 slots");
    let t = cli_served_in(&d);
    eprintln!("2,000 held by one process: {open} kept, another process served in {t:?}");
    assert!(t < Duration::from_secs(1), "served after {t:?}");
    assert!(d.logs().contains("its process already holds 512 connections"));
}

/// Every slot held by connections that never completed a request: a new client evicts the
/// oldest of them (connections that did complete one stay), and a frame left incomplete for
/// `frame_timeout_secs` closes its connection while an idle one stays.
#[test]
fn hoarded_slots_are_evicted_and_partial_frames_time_out() {
    raise_fd_limit();
    let config = "[daemon]\nmax_connections = 64\nmax_connections_per_process = 64\nframe_timeout_secs = 1\n";
    let d = Daemon::start_with(config, &[]);
    let mut served: Vec<_> = (0..8).map(|_| std::os::unix::net::UnixStream::connect(&d.socket).unwrap()).collect();
    for (i, s) in served.iter_mut().enumerate() {
        assert!(ping(s, i as u32));
    }
    let held = hoard(&d.socket, 2000);
    let t = cli_served_in(&d);
    eprintln!("2,000 held, all slots taken: another process served in {t:?}");
    assert!(t < Duration::from_secs(1), "served after {t:?}");
    for (i, s) in served.iter_mut().enumerate() {
        assert!(ping(s, 100 + i as u32), "a connection that completed a request was evicted");
    }
    let closed: Vec<bool> = held.iter().map(closed_by_daemon).collect();
    let (first, last) = (closed[..1000].iter().filter(|c| **c).count(), closed[1000..].iter().filter(|c| **c).count());
    assert!(first == 1000 && last >= 1000 - 64, "evicted: {first} of the oldest 1,000, {last} of the newest");
    drop(held);
    // Frame timeout: the partial frame is closed after 1 s, the idle connection is not.
    std::thread::sleep(Duration::from_millis(200));
    let fresh = hoard(&d.socket, 2);
    let t0 = Instant::now();
    while !closed_by_daemon(&fresh[0]) {
        assert!(t0.elapsed() < Duration::from_secs(5), "a frame incomplete for 1 s must close its connection");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(t0.elapsed() >= Duration::from_millis(800), "closed after {:?}, before its timeout", t0.elapsed());
    assert!(!closed_by_daemon(&fresh[1]), "an idle connection must stay");
    assert!(d.logs().contains("frame incomplete after 1s"));
}

/// How many times `needle` occurs in the readable memory of process `pid`, or why it cannot be
/// read (no permission: the daemon is non-dumpable, so only root can).
fn copies_in_memory(pid: u32, needle: &[u8]) -> Result<usize, String> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| format!("maps: {e}"))?;
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).map_err(|e| format!("mem: {e}"))?;
    let mut found = 0;
    let mut readable = 0;
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else { continue };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else { continue };
        let (a, b) = (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap());
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        readable += 1;
        found += buf.windows(needle.len()).filter(|w| *w == needle).count();
    }
    if readable == 0 {
        return Err("no region of the daemon's memory is readable".into());
    }
    Ok(found)
}

/// `vault.lock` takes the keys out of the daemon's memory: a canary key stored in the vault is
/// found in it after a chat call used it, and not once after the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_leave_memory_on_lock() {
    let canary = "sk-canary-Q7pLm3Vx9TzR2wYk8HnB4dFs";
    let mock = Mock::start().await;
    let d = Daemon::start_with(&format!("[providers.openai]\nbase_url = \"{}/v1\"\n", mock.url()), &[]);
    {
        let c = d.client().await;
        c.call("keys.set", params(&[("provider", "openai".into()), ("secret", canary.into())])).await.unwrap();
        c.call("chat", chat_params(false)).await.unwrap();
        c.call("chat", chat_params(true)).await.unwrap();
    }
    assert_eq!(mock.seen()[0].authorization.as_deref(), Some(format!("Bearer {canary}").as_str()));
    let before = match copies_in_memory(d.pid(), canary.as_bytes()) {
        Ok(n) => n,
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: cannot read the daemon's memory ({why}); run as root (CI does)");
            return;
        }
        Err(why) => panic!("cannot read the daemon's memory in CI: {why}"),
    };
    assert!(before > 0, "the scan must find the key while the vault is open");
    let c = d.client().await;
    c.call("vault.lock", vec![]).await.unwrap();
    // The pooled provider connections close in their own tasks, just after the lock.
    let t = Instant::now();
    let mut after = copies_in_memory(d.pid(), canary.as_bytes()).unwrap();
    while after > 0 && t.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = copies_in_memory(d.pid(), canary.as_bytes()).unwrap();
    }
    eprintln!("canary copies in the daemon's memory: {before} unlocked, {after} after vault.lock");
    assert_eq!(after, 0, "copies of the key left after vault.lock");
}

/// 1,000 concurrent streaming calls (5 connections × 200) all complete, and the daemon's RSS
/// peaks at ≤ 100 MB; prints the cost per stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_streams_fit_in_100_mb() {
    let mock = Mock::start().await;
    mock.set_default(Some(Fault::Slow { every: Duration::from_millis(100), chunks: 20 }));
    let d = Daemon::start_with(&quota_config(&mock), &[("MOCK_KEY", KEY)]);
    let mut clients = Vec::new();
    for _ in 0..5 {
        let c = d.client().await;
        c.call("daemon.ping", vec![]).await.unwrap();
        clients.push(c);
    }
    let idle = rss(&d);
    let calls = futures::future::join_all((0..1000).map(|i| clients[i % 5].call("chat", chat_params(true))));
    tokio::pin!(calls);
    let mut peak = idle;
    let results = loop {
        tokio::select! {
            r = &mut calls => break r,
            _ = tokio::time::sleep(Duration::from_millis(20)) => peak = peak.max(rss(&d)),
        }
    };
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(failed.is_empty(), "{} of 1,000 failed, e.g. {:?}", failed.len(), failed.first());
    let per_stream = peak.saturating_sub(idle) / 1000;
    eprintln!("1,000 streams: RSS {} MB idle, {} MB peak, {} KB per stream", idle >> 20, peak >> 20, per_stream >> 10);
    assert!(peak <= 100 << 20, "peak RSS {} MB", peak >> 20);
}
