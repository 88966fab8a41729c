//! Test harness: spawns the real `llm-sidecar` binary in a temp dir and talks to it over its
//! socket. Every path (socket, config, data, XDG dirs, HOME) points into the temp dir, so tests
//! never touch the user's files and run in parallel.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use llm_sidecar::rpc::Client;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_llm-sidecar");

pub struct Daemon {
    pub dir: TempDir,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub child: Option<Child>,
    pub log: PathBuf,
    extra_env: Vec<(String, String)>,
}

/// Builds a command for the binary with the temp dir's environment and paths.
pub fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("LLM_SIDECAR_SOCK")
        .env_remove("RUST_LOG")
        .env_remove("LLM_SIDECAR_CONFIG")
        .env("HOME", dir)
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_DATA_HOME", dir.join("data"))
        .stdin(Stdio::null());
    cmd
}

impl Daemon {
    /// Starts a daemon with no config file and waits until it accepts connections.
    pub fn start() -> Daemon {
        Daemon::start_with("", &[])
    }

    /// Starts a daemon with `config` as its config.toml and extra environment variables.
    pub fn start_with(config: &str, env: &[(&str, &str)]) -> Daemon {
        let d = Daemon::prepare(config, env);
        d.spawn_again()
    }

    /// Creates the temp dir and config without starting the daemon.
    pub fn prepare(config: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("run").join("llm-sidecar").join("sock");
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).expect("write config");
        let data_dir = dir.path().join("data").join("llm-sidecar");
        let log = dir.path().join("daemon.log");
        Daemon {
            socket,
            config: config_path,
            data_dir,
            child: None,
            log,
            dir,
            extra_env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    /// Sets (or replaces) an environment variable for the next [`Daemon::spawn`].
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.extra_env.retain(|(k, _)| k != key);
        self.extra_env.push((key.to_string(), value.to_string()));
    }

    /// The `serve` command for this daemon's paths.
    pub fn serve_command(&self) -> Command {
        let mut cmd = command(self.dir.path());
        cmd.arg("--socket")
            .arg(&self.socket)
            .arg("--config")
            .arg(&self.config)
            .arg("--log-level")
            .arg(std::env::var("LLM_SIDECAR_TEST_LOG").unwrap_or_else(|_| "debug".into()))
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir);
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// (Re)starts the daemon process in the same directory (after a kill or stop).
    pub fn spawn_again(mut self) -> Daemon {
        self.spawn();
        self
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let child = self.serve_command().stdout(Stdio::null()).stderr(log).spawn().expect("spawn daemon");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until the socket accepts a connection (not a fixed sleep).
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("daemon exited early with {status}; log:\n{}", self.logs());
                }
            }
            assert!(Instant::now() < deadline, "daemon did not accept within 20s; log:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs the CLI against this daemon (its socket and config file) with `stdin` as input;
    /// returns the exit status, stdout and stderr.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> (ExitStatus, String, String) {
        use std::io::Write as _;
        let mut cmd = command(self.dir.path());
        cmd.arg("--socket").arg(&self.socket).arg("--config").arg(&self.config).args(args);
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn cli");
        let mut input = child.stdin.take().expect("stdin");
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).expect("write stdin");
        }
        drop(input);
        let out = child.wait_with_output().expect("cli output");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.socket).await.expect("connect")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("pid");
        rustix::process::kill_process(pid, sig).expect("kill");
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for exit (at most `timeout`).
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(rustix::process::Signal::TERM);
        self.wait_exit(timeout)
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("daemon did not exit within {timeout:?}; log:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One request frame, encoded.
pub fn request(id: u32, method: &str, params: Vec<rmpv::Value>) -> Vec<u8> {
    llm_sidecar::rpc::Message::Request { id, method: method.into(), params }.encode()
}

/// Reads a raw socket until EOF or `timeout`; returns the bytes and whether EOF was seen.
pub async fn read_to_eof(s: &mut tokio::net::UnixStream, timeout: Duration) -> (Vec<u8>, bool) {
    use tokio::io::AsyncReadExt as _;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

/// Reads a field of a result map.
pub fn field<'a>(v: &'a rmpv::Value, name: &str) -> &'a rmpv::Value {
    llm_sidecar::rpc::client::field(v, name).unwrap_or_else(|| panic!("no field `{name}` in {v}"))
}

/// Builds a single-map params array: `params(&[("app", "x".into())])`.
pub fn params(entries: &[(&str, rmpv::Value)]) -> Vec<rmpv::Value> {
    vec![rmpv::Value::Map(entries.iter().map(|(k, v)| (rmpv::Value::from(*k), v.clone())).collect())]
}

pub mod collector;
pub mod entitlement;

/// Serves `app` (a mock backend) on 127.0.0.1 on a free port; returns its base URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// One call; a daemon error is `Err`, a transport failure panics.
pub async fn call(c: &Client, method: &str, p: Vec<rmpv::Value>) -> Result<rmpv::Value, llm_sidecar::rpc::RpcError> {
    match c.call(method, p).await {
        Ok(v) => Ok(v),
        Err(llm_sidecar::rpc::ClientError::Rpc(e)) => Err(e),
        Err(e) => panic!("transport: {e}"),
    }
}

/// Records `n` usage records concurrently over `client`; returns their ids.
pub async fn record_many(client: &Client, n: usize, app: &str) -> Vec<String> {
    let calls = (0..n).map(|i| {
        client.call(
            "usage.record",
            params(&[
                ("app", app.into()),
                ("provider", "openai".into()),
                ("model", "gpt-4o-mini".into()),
                ("input_tokens", (i as u64).into()),
                ("output_tokens", 7u64.into()),
                ("cost_microusd", 10u64.into()),
            ]),
        )
    });
    futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| field(&r.expect("usage.record"), "id").as_str().expect("id").to_string())
        .collect()
}

/// Polls `method` until `pred` holds for its result; panics after `timeout`.
pub async fn wait_until(
    client: &Client,
    method: &str,
    timeout: Duration,
    pred: impl Fn(&rmpv::Value) -> bool,
) -> rmpv::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let v = client.call(method, vec![]).await.expect(method);
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{method} never satisfied the condition; last: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every stored record, by paging through `usage.records`.
pub async fn all_records(c: &Client) -> Vec<rmpv::Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut p = vec![("limit", rmpv::Value::from(1000))];
        if let Some(cur) = &cursor {
            p.push(("cursor", cur.as_str().into()));
        }
        let page = c.call("usage.records", params(&p)).await.expect("usage.records");
        out.extend(field(&page, "records").as_array().expect("records").iter().cloned());
        match field(&page, "next_cursor").as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => return out,
        }
    }
}

/// The RPC error of a call that must fail (panics on success or a transport error).
pub fn rpc_err(r: Result<rmpv::Value, llm_sidecar::rpc::ClientError>) -> llm_sidecar::rpc::RpcError {
    match r {
        Err(llm_sidecar::rpc::ClientError::Rpc(e)) => e,
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

/// What a pipelining writer saw (crash and power-cut tests): ids noted before they are sent,
/// and the acknowledged ones, in order.
#[derive(Default)]
pub struct Book {
    pub attempted: std::collections::HashSet<String>,
    pub acked: Vec<String>,
    pub chats_acked: u64,
    pub rpc_errors: Vec<String>,
}

/// Pipelines `usage.record` calls with fresh ids, `in_flight` at a time, until the daemon goes
/// away; notes each id in `book` before it is sent and again when it is acknowledged.
pub async fn record_until_gone(
    client: std::sync::Arc<Client>,
    book: std::sync::Arc<std::sync::Mutex<Book>>,
    app: String,
    in_flight: usize,
) {
    use futures::stream::{FuturesUnordered, StreamExt};
    let mut inflight = FuturesUnordered::new();
    loop {
        while inflight.len() < in_flight {
            let id = uuid::Uuid::now_v7().to_string();
            book.lock().unwrap().attempted.insert(id.clone());
            let client = client.clone();
            let p = params(&[
                ("id", id.as_str().into()),
                ("app", app.as_str().into()),
                ("provider", "openai".into()),
                ("model", "gpt-4o-mini".into()),
                ("input_tokens", 100.into()),
                ("output_tokens", 10.into()),
                ("cost_microusd", 3.into()),
            ]);
            inflight.push(async move { (id, client.call("usage.record", p).await) });
        }
        match inflight.next().await {
            Some((id, Ok(v))) => {
                let mut b = book.lock().unwrap();
                if field(&v, "duplicate").as_bool() != Some(false) {
                    b.rpc_errors.push(format!("{id} acknowledged as duplicate"));
                }
                b.acked.push(id);
            }
            Some((id, Err(llm_sidecar::rpc::ClientError::Rpc(e)))) => {
                book.lock().unwrap().rpc_errors.push(format!("{id}: {e}"))
            }
            // The daemon is gone.
            Some((_, Err(_))) | None => return,
        }
    }
}
