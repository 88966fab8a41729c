//! What the proxy and HTTP-face benches share: the pass-through proxy baseline, the direct
//! call an app would make without the daemon, samples and percentiles.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::mock_provider::REPLY;
use llm_sidecar::providers::{self, AdapterKind, Framer};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const MODEL: &str = "gpt-4o-mini";

/// The baseline proxy: forwards `POST /v1/chat/completions` to `upstream` and streams the answer
/// back as it arrives. Returns its base URL.
pub async fn start_forwarder(upstream: String) -> String {
    use axum::body::{Body, Bytes};
    use axum::http::{header, HeaderMap, StatusCode};
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).tcp_nodelay(true).build().unwrap();
    let forward = move |headers: HeaderMap, body: Bytes| {
        let http = http.clone();
        let url = format!("{upstream}/v1/chat/completions");
        async move {
            let mut req = http.post(url).header(header::CONTENT_TYPE, "application/json").body(body);
            if let Some(auth) = headers.get(header::AUTHORIZATION) {
                req = req.header(header::AUTHORIZATION, auth);
            }
            let resp = req.send().await.unwrap();
            let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
            let ctype = resp.headers().get(header::CONTENT_TYPE).cloned();
            let mut out = axum::response::Response::new(Body::from_stream(resp.bytes_stream()));
            *out.status_mut() = status;
            if let Some(c) = ctype {
                out.headers_mut().insert(header::CONTENT_TYPE, c);
            }
            out
        }
    };
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(forward));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Streamed chunks are small writes: without TCP_NODELAY each waits for a delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// One measured call: total latency and time to the first content chunk.
#[derive(Clone, Copy)]
pub struct Sample {
    pub total: Duration,
    pub first: Duration,
}

pub fn pct(samples: &[Sample], key: impl Fn(&Sample) -> Duration) -> (Duration, Duration) {
    let mut v: Vec<Duration> = samples.iter().map(key).collect();
    v.sort();
    let at = |p: usize| v[(v.len() * p / 100).min(v.len() - 1)];
    (at(50), at(99))
}

/// What `path` adds to `direct`: p50 and p99 of the whole call, then of the first chunk.
pub fn added(direct: &[Sample], path: &[Sample]) -> [String; 4] {
    let (d50, d99) = pct(direct, |s| s.total);
    let (f50, f99) = pct(direct, |s| s.first);
    let (t50, t99) = pct(path, |s| s.total);
    let (g50, g99) = pct(path, |s| s.first);
    [diff(t50, d50), diff(t99, d99), diff(g50, f50), diff(g99, f99)]
}

pub fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

pub fn diff(a: Duration, b: Duration) -> String {
    format!("{:+.0}", (a.as_secs_f64() - b.as_secs_f64()) * 1e6)
}

/// What an app would do without the daemon: build the provider request, send it, read the answer
/// (first content delta, then the end of the stream).
pub async fn direct(http: &reqwest::Client, url: &str, key: &str, stream: bool) -> Sample {
    let mut body =
        serde_json::json!({"model": MODEL, "messages": [{"role": "user", "content": "Say hello"}], "stream": stream});
    if stream {
        body["stream_options"] = serde_json::json!({"include_usage": true});
    }
    let t0 = Instant::now();
    let mut resp = http.post(url).bearer_auth(key).json(&body).send().await.unwrap();
    if !stream {
        let bytes = resp.bytes().await.unwrap();
        let c = providers::adapter(AdapterKind::Openai).parse_body(&bytes).unwrap();
        assert_eq!(c.text(), REPLY);
        let total = t0.elapsed();
        return Sample { total, first: total };
    }
    let adapter = providers::adapter(AdapterKind::Openai);
    let mut framer = Framer::new(adapter.framing());
    let mut decoder = adapter.decoder();
    let mut frames = Vec::new();
    let mut first = None;
    let mut text = String::new();
    let mut deltas = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        framer.feed(&chunk, &mut frames).unwrap();
        for f in frames.drain(..) {
            decoder.on_frame(&f, &mut deltas).unwrap();
            for d in deltas.drain(..) {
                if let llm_sidecar::chat::Delta::Text(t) = d {
                    first.get_or_insert_with(|| t0.elapsed());
                    text.push_str(&t);
                }
            }
        }
    }
    assert_eq!(text, REPLY);
    Sample { total: t0.elapsed(), first: first.unwrap() }
}

/// Starts the daemon binary `bin` (or `BENCH_DAEMON_BIN`, to measure another build against the
/// same baselines) with `config` (its `BENCH_KEY` set) in `dir`, and waits until its socket
/// accepts. Returns the process and the socket.
pub async fn spawn_daemon(bin: &str, dir: &Path, config: &str) -> (Child, PathBuf) {
    let bin = std::env::var("BENCH_DAEMON_BIN").unwrap_or_else(|_| bin.to_string());
    let socket = dir.join("run").join("sock");
    let config_file = dir.join("config.toml");
    std::fs::write(&config_file, config).unwrap();
    let daemon = Command::new(&bin)
        .env("BENCH_KEY", "sk-bench")
        .env("HOME", dir)
        .env("XDG_RUNTIME_DIR", dir)
        .env_remove("RUST_LOG")
        .arg("--socket")
        .arg(&socket)
        .arg("--config")
        .arg(&config_file)
        .args(["--log-level", "warn", "serve", "--data-dir"])
        .arg(dir.join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "daemon did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (daemon, socket)
}
