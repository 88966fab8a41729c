//! Power-cut test: proves (or disproves) that a usage record acknowledged to a client survives
//! power loss.
//!
//! The daemon's data dir lives on lazyfs (`tests/powercut/lazyfs.py`), a FUSE passthrough
//! filesystem that remembers what every file held at its last fsync. Three clients pipeline
//! `usage.record` and one makes `chat` calls against the mock provider; at a random moment the
//! daemon is SIGKILLed and reaped (power loss kills it too), and right after that, with nothing of
//! it in flight any more, the filesystem is cut: every file goes back to its last durable state
//! (strict model), or only loses what lies past its durable size (mild model); names created and
//! never fsynced vanish. Then the daemon restarts on the same mount, and after every cut:
//!
//! 1. the ledger opens (the daemon starts and answers),
//! 2. every acknowledged `usage.record` is there (`usage.records`, by id), and there are at least
//!    as many `chat` records as acknowledged chat calls (a chat answer carries no record id),
//! 3. the counters equal the records (`usage.summary` totals against the records' sums),
//! 4. the outbox holds every record (`sync.status` pending; sync is off, nothing was sent).
//!
//! Reading the whole ledger after every cut would grow quadratically, so after most cuts only the
//! last cycle's records are read (by time) and the counters are compared with the outbox; every
//! 5th cut and the last one read and check everything, which also finds an older record that a
//! later cut took away.
//!
//! Each model runs on its own mount with a fresh ledger. Before them the filesystem's self-check
//! (`tests/powercut/selfcheck.py`) proves the cut itself: write + fsync survives, a plain write and
//! a write + sync_file_range do not, and SQLite in WAL mode runs on the mount.
//!
//! Needs root, /dev/fuse and Debian's python3-fusepy for /usr/bin/python3 (installed by
//! scripts/install-test-deps.sh). Under `CI=true` a missing piece fails the test; elsewhere the
//! test prints why and passes. `POWERCUT_CUTS` (default 30) and `POWERCUT_SECS` (default 90) bound
//! the cuts and the seconds per model; `POWERCUT_MODELS` (default `strict,mild`) picks the models.
//! `cargo test --test powercut -- --nocapture` shows the per-cut statistics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod mock_provider;

use common::{field, params, record_until_gone, Book, Daemon};
use llm_sidecar::rpc::{Client, ClientError};
use mock_provider::Mock;
use rmpv::Value;
use std::collections::HashSet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Debian's interpreter: python3-fusepy installs for it (a pyenv or venv python may not see it).
const PYTHON: &str = "/usr/bin/python3";
const WRITERS: usize = 3;
const IN_FLIGHT: usize = 8;
const CHAT_APP: &str = "powercut-chat";
/// Every this many cuts (and after the last) all records are read and checked; after the others
/// only the last power cycle's.
const FULL_CHECK_EVERY: usize = 5;
const KEY: &str = "sk-test-powercut-0042";

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("powercut").join(name)
}

fn unix_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    i64::try_from(since.as_millis()).expect("ms fit i64")
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Why this machine cannot run the test, if it cannot.
fn unavailable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    if !rustix::process::geteuid().is_root() {
        return Some("not root (mounting a FUSE filesystem needs it)".into());
    }
    let fusepy = Command::new(PYTHON).args(["-c", "import fusepy"]).stderr(Stdio::null()).status();
    if !matches!(fusepy, Ok(s) if s.success()) {
        return Some(format!(
            "{PYTHON} cannot import fusepy (Debian package python3-fusepy; scripts/install-test-deps.sh installs it)"
        ));
    }
    None
}

fn is_mounted(p: &Path) -> bool {
    let p = p.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(&*p)))
        .unwrap_or(false)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Model {
    Strict,
    Mild,
}

impl Model {
    fn name(self) -> &'static str {
        match self {
            Model::Strict => "strict",
            Model::Mild => "mild",
        }
    }
}

/// A lazyfs process: a backing dir mounted at `mnt`, commands on the control socket `ctl`.
struct LazyFs {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
    ctl: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl LazyFs {
    /// Mounts a fresh lazyfs; `prepare` runs on the backing dir first (what exists at mount time
    /// is durable).
    fn mount(prepare: impl FnOnce(&Path)) -> LazyFs {
        let dir = tempfile::tempdir().expect("temp dir");
        let backing = dir.path().join("backing");
        let mnt = dir.path().join("mnt");
        let ctl = dir.path().join("ctl.sock");
        let log = dir.path().join("lazyfs.log");
        std::fs::create_dir(&backing).unwrap();
        std::fs::create_dir(&mnt).unwrap();
        prepare(&backing);
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(PYTHON)
            .arg(script("lazyfs.py"))
            .arg(&backing)
            .arg(&mnt)
            .arg("--control")
            .arg(&ctl)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn lazyfs");
        let mut fs = LazyFs { _dir: dir, mnt, ctl, log, child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(v) = fs.try_call("ping") {
                if v["mounted"] == true && is_mounted(&fs.mnt) {
                    return fs;
                }
            }
            if let Ok(Some(status)) = fs.child.as_mut().unwrap().try_wait() {
                panic!("lazyfs exited with {status} before mounting; log:\n{}", fs.logs());
            }
            assert!(Instant::now() < deadline, "lazyfs did not mount within 15s; log:\n{}", fs.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_call(&self, cmd: &str) -> std::io::Result<serde_json::Value> {
        let mut s = UnixStream::connect(&self.ctl)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.write_all(format!("{cmd}\n").as_bytes())?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        serde_json::from_str(&line).map_err(std::io::Error::other)
    }

    fn call(&self, cmd: &str) -> serde_json::Value {
        let v = self.try_call(cmd).unwrap_or_else(|e| panic!("lazyfs `{cmd}`: {e}; log:\n{}", self.logs()));
        assert_eq!(v["ok"], true, "lazyfs `{cmd}` failed: {v}");
        v
    }

    fn cut(&self, model: Model) -> serde_json::Value {
        self.call(&format!("cut {}", model.name()))
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).stderr(Stdio::null()).status();
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).stderr(Stdio::null()).status();
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

async fn chatter(client: Arc<Client>, book: Arc<Mutex<Book>>) {
    let msg = Value::Map(vec![
        (Value::from("role"), Value::from("user")),
        (Value::from("content"), Value::from("Say hello")),
    ]);
    let p = params(&[("model", "openai/gpt-4o-mini".into()), ("messages", Value::Array(vec![msg]))]);
    loop {
        match client.call("chat", p.clone()).await {
            Ok(_) => book.lock().unwrap().chats_acked += 1,
            Err(ClientError::Rpc(e)) => book.lock().unwrap().rpc_errors.push(format!("chat: {e}")),
            Err(_) => return,
        }
    }
}

/// Starts the daemon; an error (not a panic) when it exits or does not answer: after a cut that
/// means the ledger did not open.
fn try_spawn(d: &mut Daemon) -> Result<(), String> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&d.log).unwrap();
    d.child = Some(d.serve_command().stdout(Stdio::null()).stderr(log).spawn().expect("spawn daemon"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if UnixStream::connect(&d.socket).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = d.child.as_mut().unwrap().try_wait() {
            d.child = None;
            return Err(format!("daemon exited with {status}; log tail:\n{}", log_tail(d, 20)));
        }
        if Instant::now() > deadline {
            d.kill9();
            return Err(format!("daemon did not answer within 30s; log tail:\n{}", log_tail(d, 20)));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The last `n` lines of the daemon's log without backtrace frames, so a panic's message shows
/// (read lossily: a crash may leave a torn line).
fn log_tail(d: &Daemon, n: usize) -> String {
    let log = String::from_utf8_lossy(&std::fs::read(&d.log).unwrap_or_default()).into_owned();
    let frame = |l: &str| {
        let l = l.trim_start();
        l.starts_with("at ") || l.split_once(": ").is_some_and(|(n, _)| n.parse::<u32>().is_ok())
    };
    let lines: Vec<&str> = log.lines().filter(|l| !frame(l)).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Every stored record (`usage.records`, paged), or those stamped at or after `from` (Unix ms); an
/// error when the daemon fails to answer.
async fn records(c: &Client, from: Option<i64>) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut p = vec![("limit", Value::from(1000))];
        if let Some(from) = from {
            p.push(("from", from.into()));
        }
        if let Some(cur) = &cursor {
            p.push(("cursor", cur.as_str().into()));
        }
        let page = c.call("usage.records", params(&p)).await.map_err(|e| format!("usage.records: {e}"))?;
        out.extend(field(&page, "records").as_array().expect("records").iter().cloned());
        match field(&page, "next_cursor").as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => return Ok(out),
        }
    }
}

/// What a restarted daemon holds.
struct Held {
    ids: HashSet<String>,
    chats: u64,
}

/// Checks that the ledger agrees with itself: no id twice, no record nobody attempted, counters
/// equal to the records, every record in the outbox. With `window` (Unix ms) it reads only the
/// records stamped since then (the last power cycle's) and checks the counters against the outbox
/// only; without, it reads every record (cheap enough to do now and then, not after every cut).
async fn inspect(c: &Client, attempted: &HashSet<String>, window: Option<i64>) -> Result<Held, String> {
    let recs = records(c, window).await?;
    let mut ids = HashSet::new();
    let (mut chats, mut input, mut output, mut cost) = (0u64, 0u64, 0u64, 0u64);
    for r in &recs {
        let id = field(r, "id").as_str().unwrap().to_string();
        let app = field(r, "app").as_str().unwrap();
        if app == CHAT_APP {
            chats += 1;
        } else if !attempted.contains(&id) {
            return Err(format!("record {id} ({app}) was never attempted"));
        }
        input += field(r, "input_tokens").as_u64().unwrap();
        output += field(r, "output_tokens").as_u64().unwrap();
        cost += field(r, "cost_microusd").as_u64().unwrap();
        if !ids.insert(id.clone()) {
            return Err(format!("record {id} is stored twice"));
        }
    }
    let summary = c
        .call("usage.summary", params(&[("period", "month".into()), ("group_by", "app".into())]))
        .await
        .map_err(|e| format!("usage.summary: {e}"))?;
    let totals = field(&summary, "totals");
    let status = c.call("sync.status", vec![]).await.map_err(|e| format!("sync.status: {e}"))?;
    if field(&status, "enabled").as_bool() != Some(false) {
        return Err(format!("sync should be off: {status}"));
    }
    let pending = field(&status, "pending").as_u64();
    if pending != field(totals, "requests").as_u64() {
        return Err(format!("the outbox holds {pending:?} records, the counters say {}", field(totals, "requests")));
    }
    if window.is_some() {
        return Ok(Held { ids, chats });
    }
    let counted =
        [("requests", recs.len() as u64), ("input_tokens", input), ("output_tokens", output), ("cost_microusd", cost)];
    for (name, want) in counted {
        let got = field(totals, name).as_u64();
        if got != Some(want) {
            return Err(format!("counters differ from the records: totals.{name} = {got:?}, records say {want}"));
        }
    }
    Ok(Held { ids, chats })
}

#[derive(Default)]
struct Totals {
    cuts: usize,
    acked: usize,
    lost: usize,
    chats_acked: u64,
    chats_lost: u64,
    records: usize,
    failures: Vec<String>,
    rpc_errors: Vec<String>,
}

fn cut_brief(cut: &serde_json::Value) -> String {
    let removed: Vec<&str> =
        cut["entries_removed"].as_array().map_or(vec![], |a| a.iter().filter_map(|v| v.as_str()).collect());
    format!(
        "fs reverted {} files (restored {} B, dropped {} B), removed {} names {:?}",
        cut["files_reverted"],
        cut["bytes_restored"],
        cut["bytes_dropped"],
        removed.len(),
        &removed[..removed.len().min(3)]
    )
}

async fn run_model(model: Model, max_cuts: usize, budget: Duration) -> Totals {
    let mock = Mock::start().await;
    let config = format!("[providers.openai]\nbase_url = \"{}/v1\"\nkey_env = \"MOCK_KEY\"\n", mock.url());
    // The data dir exists (and is durable) before the first start, as after an install.
    let fs = LazyFs::mount(|backing| std::fs::create_dir(backing.join("llm-sidecar")).unwrap());
    let mut d = Daemon::prepare(&config, &[("MOCK_KEY", KEY)]);
    d.data_dir = fs.mnt.join("llm-sidecar");
    let mut t = Totals::default();
    let mut attempted = HashSet::new();
    let mut expected: HashSet<String> = HashSet::new();
    let mut chats_expected = 0u64;
    let started = Instant::now();
    if let Err(e) = try_spawn(&mut d) {
        t.failures.push(format!("first start: {e}"));
        return t;
    }
    while t.cuts < max_cuts && started.elapsed() < budget {
        let cycle_start = unix_ms();
        let book = Arc::new(Mutex::new(Book::default()));
        let mut tasks = Vec::new();
        for n in 0..WRITERS {
            let client = Arc::new(d.client().await);
            tasks.push(tokio::spawn(record_until_gone(client, book.clone(), format!("powercut{n}"), IN_FLIGHT)));
        }
        let chat = d.client().await;
        chat.call("daemon.hello", params(&[("app", CHAT_APP.into())])).await.unwrap();
        tasks.push(tokio::spawn(chatter(Arc::new(chat), book.clone())));
        let ran = Duration::from_millis(fastrand::u64(100..900));
        tokio::time::sleep(ran).await;
        // Power loss: the daemon dies (reaped: none of its requests is in flight any more), then
        // the disk keeps only what was durable.
        d.kill9();
        let cut = fs.cut(model);
        for task in tasks {
            task.await.unwrap();
        }
        t.cuts += 1;
        let b = std::mem::take(&mut *book.lock().unwrap());
        attempted.extend(b.attempted);
        t.acked += b.acked.len();
        t.chats_acked += b.chats_acked;
        t.rpc_errors.extend(b.rpc_errors);
        expected.extend(b.acked.iter().cloned());
        chats_expected += b.chats_acked;

        let restart = Instant::now();
        if let Err(e) = try_spawn(&mut d) {
            t.failures.push(format!("cut {}: the ledger did not open: {e}", t.cuts));
            eprintln!("  cut {:>2} {}: ledger did not open after the cut; {}", t.cuts, model.name(), cut_brief(&cut));
            break;
        }
        let restart = restart.elapsed();
        let c = d.client().await;
        let verify = Instant::now();
        let full = t.cuts % FULL_CHECK_EVERY == 0 || t.cuts >= max_cuts || started.elapsed() >= budget;
        match inspect(&c, &attempted, (!full).then_some(cycle_start)).await {
            Ok(held) => {
                // A full check also finds records of earlier cycles that a later cut took away.
                let lost: Vec<String> = if full {
                    expected.difference(&held.ids).cloned().collect()
                } else {
                    b.acked.iter().filter(|id| !held.ids.contains(*id)).cloned().collect()
                };
                let lost_this = b.acked.iter().filter(|id| !held.ids.contains(*id)).count();
                for id in &lost {
                    expected.remove(id);
                }
                let chats_lost = if full { chats_expected } else { b.chats_acked }.saturating_sub(held.chats);
                chats_expected -= chats_lost;
                t.lost += lost.len();
                t.chats_lost += chats_lost;
                let held_what = if full {
                    t.records = held.ids.len();
                    format!("ledger {:>6} records (full check)", held.ids.len())
                } else {
                    format!("cycle's records {:>5}", held.ids.len())
                };
                eprintln!(
                    "  cut {:>2} {}: after {:>3} ms; acked {:>5} records + {:>3} chats; lost {:>5} ({} of this \
                     cycle) + {} chats; {held_what}; {}; restart {} ms, verify {} ms",
                    t.cuts,
                    model.name(),
                    ran.as_millis(),
                    b.acked.len(),
                    b.chats_acked,
                    lost.len(),
                    lost_this,
                    chats_lost,
                    cut_brief(&cut),
                    restart.as_millis(),
                    verify.elapsed().as_millis()
                );
            }
            Err(e) => {
                // A ledger that fails to open makes the daemon exit (it may have bound its socket
                // first): give it a moment, so the report says so.
                let mut status = None;
                for _ in 0..100 {
                    status = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                    if status.is_some() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let e = match status {
                    Some(status) => format!(
                        "{e}; the daemon exited with {status} (did the ledger open?); log tail:\n{}",
                        log_tail(&d, 20)
                    ),
                    None => format!("{e}; log tail:\n{}", log_tail(&d, 20)),
                };
                eprintln!("  cut {:>2} {}: {e}", t.cuts, model.name());
                t.failures.push(format!("cut {}: {e}", t.cuts));
                break;
            }
        }
    }
    d.kill9();
    eprintln!(
        "powercut {}: {} cuts in {:.1?}; acked {} records + {} chats; lost {} records ({:.1}%) + {} chats; \
         ledger ends with {} records; failures: {}",
        model.name(),
        t.cuts,
        started.elapsed(),
        t.acked,
        t.chats_acked,
        t.lost,
        100.0 * t.lost as f64 / t.acked.max(1) as f64,
        t.chats_lost,
        t.records,
        t.failures.len()
    );
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_power_cuts() {
    if let Some(why) = unavailable() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "powercut test cannot run under CI: {why}");
        eprintln!("powercut test skipped: {why}");
        return;
    }
    let out = Command::new(PYTHON).arg(script("selfcheck.py")).output().expect("run selfcheck.py");
    eprintln!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the lazyfs self-check failed: the cut itself cannot be trusted");

    let max_cuts = env_or("POWERCUT_CUTS", 30usize);
    let budget = Duration::from_secs(env_or("POWERCUT_SECS", 90u64));
    let models = std::env::var("POWERCUT_MODELS").unwrap_or_else(|_| "strict,mild".into());
    let mut results = Vec::new();
    for name in models.split(',') {
        let model = match name.trim() {
            "strict" => Model::Strict,
            "mild" => Model::Mild,
            other => panic!("POWERCUT_MODELS: unknown model `{other}`"),
        };
        results.push((model, run_model(model, max_cuts, budget).await));
    }
    let mut problems = Vec::new();
    for (model, t) in &results {
        eprintln!(
            "powercut total {}: cuts {}, acked {} (+{} chats), lost {} (+{} chats)",
            model.name(),
            t.cuts,
            t.acked,
            t.chats_acked,
            t.lost,
            t.chats_lost
        );
        if t.cuts < max_cuts && t.failures.is_empty() {
            eprintln!("  (only {} of {max_cuts} cuts fit in {budget:?})", t.cuts);
        }
        if t.acked == 0 {
            problems.push(format!("{}: no record was acknowledged at all", model.name()));
        }
        if t.lost > 0 || t.chats_lost > 0 {
            problems.push(format!(
                "{}: {} of {} acknowledged records and {} of {} acknowledged chat calls lost across {} power cuts",
                model.name(),
                t.lost,
                t.acked,
                t.chats_lost,
                t.chats_acked,
                t.cuts
            ));
        }
        problems.extend(t.failures.iter().map(|f| format!("{}: {f}", model.name())));
        if !t.rpc_errors.is_empty() {
            problems.push(format!(
                "{}: {} unexpected RPC errors, e.g. {:?}",
                model.name(),
                t.rpc_errors.len(),
                &t.rpc_errors[..t.rpc_errors.len().min(3)]
            ));
        }
    }
    assert!(problems.is_empty(), "acknowledged usage did not survive power loss:\n  {}", problems.join("\n  "));
}
