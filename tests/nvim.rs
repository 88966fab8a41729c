//! The Neovim plugin (`client-libs/nvim`) in headless Neovim against the real daemon and mock
//! providers: streaming every chunk in order, cancelling, the ledger and quota through the
//! plugin, a `quota_exceeded` error's code and message, plain `rpcrequest` with
//! `daemon.hello {errors = "string"}` and `daemon.last_error`, `:LlmSidecarChat` into a scratch
//! buffer (and its cancellation), and frame decoding (split and batched reads).
//!
//! Each test runs one script of `tests/nvim/` with `nvim --headless --clean -u NONE`, the plugin
//! on the runtimepath; the script writes what it saw as JSON to `$NV_OUT` and the assertions are
//! made here. Every Neovim run is bounded ([`NVIM_TIMEOUT`]; killed on overrun). Without `nvim`
//! the tests are skipped with a message, unless `CI` is set: then a missing `nvim` fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod mock_provider;

use common::{all_records, field, params, rpc_err, Daemon};
use mock_provider::{Fault, Mock, REPLY, USAGE_IN, USAGE_OUT};
use serde_json::{json, Value as Json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const KEY: &str = "sk-test-nvim-Zq8vX1y2plugin0077";
const NVIM_TIMEOUT: Duration = Duration::from_secs(90);
const MODEL: &str = "openai/gpt-4o-mini";
const SLOW_MODEL: &str = "slow/slow-model";
/// A tier whose month holds 50,000 tokens: ordinary calls fit, one asking for 100,000 does not.
const QUOTA: &str = "[policy]\ndefault_tier = \"free\"\n[tiers.free]\nrank = 0\nmonthly_tokens = 50000\n";

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// The `nvim` to run (`$LLM_SIDECAR_TEST_NVIM`, else `nvim` on `PATH`), or `None` to skip.
fn nvim() -> Option<PathBuf> {
    let bin = std::env::var_os("LLM_SIDECAR_TEST_NVIM").map_or_else(|| PathBuf::from("nvim"), PathBuf::from);
    let why = match std::process::Command::new(&bin).arg("--version").stdin(Stdio::null()).output() {
        Ok(o) if o.status.success() => return Some(bin),
        Ok(o) => format!("`{} --version` exited with {}", bin.display(), o.status),
        Err(e) => format!("cannot run `{}`: {e}", bin.display()),
    };
    assert!(
        !ci(),
        "CI is set and Neovim is missing ({why}): install it with scripts/install-test-deps.sh (Debian package `neovim`)"
    );
    eprintln!("skipped: the Neovim plugin tests need `nvim` ({why}); install it with scripts/install-test-deps.sh");
    None
}

/// `openai` at `normal`, an OpenAI-compatible `slow` provider at `slow`, fast backoff, `extra`.
fn config(normal: &Mock, slow: &Mock, extra: &str) -> String {
    format!(
        "[providers.openai]\nbase_url = \"{}/v1\"\nkey_env = \"MOCK_KEY\"\n\
         [providers.slow]\nadapter = \"openai\"\nbase_url = \"{}/v1\"\nkey_env = \"MOCK_KEY\"\n\
         [router]\nbackoff_base_ms = 20\nbackoff_max_ms = 100\n{extra}",
        normal.url(),
        slow.url()
    )
}

/// Two mocks: one answering normally, one streaming a long answer slowly (for cancels).
async fn mocks() -> (Mock, Mock) {
    let normal = Mock::start().await;
    let slow = Mock::start().await;
    slow.set_default(Some(Fault::Slow { every: Duration::from_millis(100), chunks: 300 }));
    (normal, slow)
}

/// The text deltas the mock streams for [`REPLY`] (it splits after each space).
fn reply_words() -> Vec<String> {
    REPLY.split_inclusive(' ').map(str::to_string).collect()
}

/// How the plugin is to find the daemon's socket.
#[derive(Clone, Copy)]
enum Find {
    /// `$LLM_SIDECAR_SOCK` names it.
    SockVar,
    /// No `$LLM_SIDECAR_SOCK`; `$XDG_RUNTIME_DIR` is the daemon's (its socket is
    /// `$XDG_RUNTIME_DIR/llm-sidecar/sock`).
    RuntimeDir,
}

/// Runs `tests/nvim/<script>` in headless Neovim against `d`; returns the JSON it wrote.
async fn run_lua(nvim: &Path, d: &Daemon, find: Find, script: &str, env: &[(&str, &str)]) -> Json {
    let root = env!("CARGO_MANIFEST_DIR");
    let home = d.dir.path().join("nvim-home");
    let run = match find {
        Find::SockVar => home.join("run"),
        Find::RuntimeDir => d.dir.path().join("run"),
    };
    assert!(matches!(find, Find::SockVar) || d.socket == run.join("llm-sidecar").join("sock"));
    std::fs::create_dir_all(&run).unwrap();
    std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let out = d.dir.path().join(format!("{script}.json"));
    let _ = std::fs::remove_file(&out);
    let mut cmd = tokio::process::Command::new(nvim);
    cmd.args(["--headless", "--clean", "-u", "NONE", "-i", "NONE", "-n"])
        .args(["--cmd", "lua vim.opt.runtimepath:prepend(vim.env.NV_PLUGIN)"])
        .arg("-c")
        .arg(format!("lua dofile(vim.env.NV_TESTS .. '/{script}')"))
        .env("NV_PLUGIN", format!("{root}/client-libs/nvim"))
        .env("NV_TESTS", format!("{root}/tests/nvim"))
        .env("NV_OUT", &out)
        .env("HOME", &home)
        .env("XDG_RUNTIME_DIR", &run)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env_remove("NVIM")
        .env_remove("NVIM_LISTEN_ADDRESS")
        .env_remove("VIMINIT")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match find {
        Find::SockVar => cmd.env("LLM_SIDECAR_SOCK", &d.socket),
        Find::RuntimeDir => cmd.env_remove("LLM_SIDECAR_SOCK"),
    };
    let started = Instant::now();
    let child = cmd.spawn().expect("spawn nvim");
    // On a timeout the child is dropped, which kills it (kill_on_drop).
    let output = match tokio::time::timeout(NVIM_TIMEOUT, child.wait_with_output()).await {
        Ok(o) => o.expect("wait for nvim"),
        Err(_) => panic!("{script}: nvim did not finish within {NVIM_TIMEOUT:?} (killed); daemon log:\n{}", d.logs()),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    let text = std::fs::read_to_string(&out).unwrap_or_else(|e| {
        panic!(
            "{script}: nvim wrote no result ({e}); it exited with {} after {:?}; stderr:\n{stderr}\ndaemon log:\n{}",
            output.status,
            started.elapsed(),
            d.logs()
        )
    });
    let v: Json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{script}: bad JSON ({e}): {text}"));
    if let Some(err) = v.get("lua_error") {
        panic!("{script} failed in Neovim: {}\nstderr:\n{stderr}", err.as_str().unwrap_or_default());
    }
    assert!(output.status.success(), "{script}: nvim exited with {}; stderr:\n{stderr}", output.status);
    eprintln!("{script}: Neovim {} ran it in {:?}", v["nvim_version"], started.elapsed());
    v
}

/// Polls `f` until it holds (the daemon drops an upstream stream asynchronously).
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (provider, status, app) of every ledger record, oldest first, read with the Rust client.
async fn ledger(d: &Daemon) -> Vec<(String, String, String)> {
    let c = d.client().await;
    let page = c.call("usage.records", params(&[("order", "asc".into()), ("limit", 1000.into())])).await.unwrap();
    field(&page, "records")
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let s = |k: &str| field(r, k).as_str().unwrap().to_string();
            (s("provider"), s("status"), s("app"))
        })
        .collect()
}

/// The message the daemon gives a call over the quota, asked with the Rust client.
async fn quota_message(d: &Daemon) -> String {
    let c = d.client().await;
    let msg = rmpv::Value::Map(vec![
        (rmpv::Value::from("role"), rmpv::Value::from("user")),
        (rmpv::Value::from("content"), rmpv::Value::from("Say hello")),
    ]);
    let p = params(&[
        ("model", MODEL.into()),
        ("messages", rmpv::Value::Array(vec![msg])),
        ("max_tokens", 100_000u64.into()),
    ]);
    let e = rpc_err(c.call("chat", p).await);
    assert_eq!(e.code.as_str(), "quota_exceeded", "{e:?}");
    e.message
}

fn strs(v: &Json) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_api_streams_cancels_and_reads_quota_errors() {
    let Some(nvim) = nvim() else { return };
    let (normal, slow) = mocks().await;
    let d = Daemon::start_with(&config(&normal, &slow, QUOTA), &[("MOCK_KEY", KEY)]);
    let v = run_lua(&nvim, &d, Find::SockVar, "api.lua", &[("NV_MODEL", MODEL), ("NV_SLOW_MODEL", SLOW_MODEL)]).await;
    assert_eq!(v["socket"], json!(d.socket.to_str().unwrap()), "the socket comes from $LLM_SIDECAR_SOCK");

    // Every chunk the mock sent, in order, then one on_done with the whole result and usage.
    let s = &v["stream"];
    let words = reply_words();
    assert!(words.len() >= 4, "the mock's reply should come in several chunks: {words:?}");
    assert_eq!(strs(&s["texts"]), words);
    let seqs: Vec<u64> = s["seqs"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..words.len() as u64).collect::<Vec<_>>());
    assert_eq!((s["done_calls"].as_u64(), s["error_calls"].as_u64()), (Some(1), Some(0)), "{s}");
    assert_eq!(s["chunks_at_done"], json!(words.len()), "on_done came before the last chunk");
    assert_eq!(s["handle_chunks"], json!(words.len()));
    assert_eq!(s["state"], "done");
    let r = &s["result"];
    assert_eq!(r["content"], REPLY);
    assert_eq!(s["wait_content"], REPLY);
    assert_eq!(r["provider"], "openai");
    assert_eq!(r["finish_reason"], "stop");
    assert_eq!((r["usage"]["input"].as_u64(), r["usage"]["output"].as_u64()), (Some(USAGE_IN), Some(USAGE_OUT)));
    assert_eq!(r["usage"]["estimated"], false);
    assert!(r["cost_microusd"].as_u64().unwrap() > 0, "gpt-4o-mini has a price: {r}");

    // The slow stream, cancelled after two chunks: `cancelled` with the content so far.
    let c = &v["cancel"];
    assert_eq!((c["done_calls"].as_u64(), c["error_calls"].as_u64()), (Some(0), Some(1)), "{c}");
    assert_eq!(c["error"]["code"], "cancelled", "{c}");
    assert_eq!(c["state"], "cancelled");
    assert_eq!(c["cancel_returned"], true);
    assert_eq!(c["cancel_again"], false, "cancelling a finished call does nothing");
    assert_eq!((c["running_before"].as_u64(), c["running_after"].as_u64()), (Some(1), Some(0)));
    let got = strs(&c["texts"]);
    assert!(got.len() >= 2 && got.len() < 300, "{} chunks", got.len());
    assert_eq!(got, (0..got.len()).map(|i| format!("w{i} ")).collect::<Vec<_>>());
    assert_eq!(c["error"]["content"], json!(got.concat()), "data.content is what was streamed");
    assert!(c["error"]["usage"]["output"].as_u64().unwrap() > 0, "{c}");
    eventually("the slow upstream stream is dropped", || slow.disconnects() == 1).await;

    // The ledger, seen through the plugin and by the Rust client: one ok, one cancelled, under
    // the app named in setup().
    let want = [("openai", "ok", "nvim-test"), ("slow", "cancelled", "nvim-test")];
    let recs: Vec<(String, String, String)> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_string();
            (s("provider"), s("status"), s("app"))
        })
        .collect();
    let want: Vec<(String, String, String)> =
        want.iter().map(|(p, s, a)| (p.to_string(), s.to_string(), a.to_string())).collect();
    assert_eq!(recs, want);
    assert_eq!(ledger(&d).await, want);
    assert_eq!((v["usage_totals"]["requests"].as_u64(), v["usage_totals"]["failed"].as_u64()), (Some(2), Some(1)));
    assert_eq!(v["quota"]["tier"], "free");
    let limits = v["quota"]["limits"].as_array().unwrap();
    assert!(limits.iter().any(|l| l["metric"] == "tokens" && l["limit"] == 50000), "{limits:?}");

    // The refused call: the daemon's code, message and data, exactly.
    let q = &v["quota_error"];
    let message = quota_message(&d).await;
    assert_eq!(q["code"], "quota_exceeded", "{q}");
    assert_eq!(q["message"], json!(message));
    assert_eq!(q["formatted"], json!(format!("quota_exceeded: {message}")));
    assert_eq!((q["data"]["limit"].as_u64(), q["data"]["metric"].as_str()), (Some(50000), Some("tokens")), "{q}");
    assert_eq!(normal.requests(), 1, "the refused call never reached the provider");

    assert_eq!(v["info_app"], "nvim-test");
    assert_eq!(v["refused_hello"]["code"], "invalid_params", "{}", v["refused_hello"]);
    assert!(v["refused_hello"]["message"].as_str().unwrap().contains("app"), "{}", v["refused_hello"]);
    assert_eq!(v["notifications"], json!([]), "every outcome went to a handler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_rpcrequest_raises_code_and_message_after_hello_errors_string() {
    let Some(nvim) = nvim() else { return };
    let (normal, slow) = mocks().await;
    let d = Daemon::start_with(&config(&normal, &slow, QUOTA), &[("MOCK_KEY", KEY)]);
    let v = run_lua(&nvim, &d, Find::SockVar, "rpcrequest.lua", &[("NV_MODEL", MODEL)]).await;
    let message = quota_message(&d).await;
    let before = v["before"].as_str().unwrap();
    let after = v["after"].as_str().unwrap();
    eprintln!("v:exception before the hello: {before:?}\nafter it: {after:?}");
    // Neovim shows a map error as "unknown error": why the flag exists.
    assert!(!before.is_empty(), "the first call should have raised");
    assert!(!before.contains("quota_exceeded"), "{before}");
    assert!(after.contains(&format!("quota_exceeded: {message}")), "v:exception = {after:?}; message = {message:?}");
    assert_eq!(v["hello_app"], "t");
    assert_eq!(v["info_app"], "t");
    let last = &v["last_error"];
    assert_eq!(last["code"], "quota_exceeded", "{last}");
    assert_eq!(last["message"], json!(message));
    assert_eq!((last["data"]["limit"].as_u64(), last["data"]["metric"].as_str()), (Some(50000), Some("tokens")));
    assert_eq!(normal.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_command_streams_into_a_scratch_buffer_and_cancels() {
    let Some(nvim) = nvim() else { return };
    let (normal, slow) = mocks().await;
    let d = Daemon::start_with(&config(&normal, &slow, ""), &[("MOCK_KEY", KEY)]);
    let v = run_lua(&nvim, &d, Find::RuntimeDir, "command.lua", &[("NV_MODEL", MODEL), ("NV_SLOW_MODEL", SLOW_MODEL)])
        .await;

    assert_eq!(v["socket"], json!(d.socket.to_str().unwrap()), "found from $XDG_RUNTIME_DIR");
    let c = &v["chat"];
    assert_eq!(c["running_at_start"], "running");
    assert_eq!(c["state"], "done", "{c}");
    assert_eq!(strs(&c["lines"]), REPLY.split('\n').map(str::to_string).collect::<Vec<_>>());
    assert_eq!(c["buftype"], "nofile");
    assert!(c["name"].as_str().unwrap().ends_with("llm-sidecar://chat/1"), "{c}");
    assert_eq!(c["usage"]["output"], json!(USAGE_OUT));

    let k = &v["cancel_command"];
    assert_eq!(k["state"], "cancelled", "{k}");
    assert!(k["text"].as_str().unwrap().starts_with("w0 w1 "), "{k}");
    let w = &v["wipe"];
    assert_eq!((w["state"].as_str(), w["code"].as_str()), (Some("cancelled"), Some("cancelled")), "{w}");
    assert_eq!(w["buffer_valid"], false);
    assert_eq!(v["bad_option_new_buffers"], 0);
    eventually("both slow streams are dropped upstream", || slow.disconnects() == 2).await;

    let notes: Vec<(String, u64)> = v["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["msg"].as_str().unwrap().to_string(), n["level"].as_u64().unwrap()))
        .collect();
    let (info, warn, error) = (2, 3, 4); // vim.log.levels
    assert!(
        notes.iter().any(|(m, l)| *l == info && m.contains(&format!("{USAGE_IN} in / {USAGE_OUT} out tokens"))),
        "{notes:?}"
    );
    assert_eq!(notes.iter().filter(|(m, l)| *l == warn && m.starts_with("cancelled: ")).count(), 2, "{notes:?}");
    assert!(notes.iter().any(|(m, l)| *l == error && m.contains("unknown option -colour")), "{notes:?}");

    let want: Vec<(String, String, String)> = [("openai", "ok"), ("slow", "cancelled"), ("slow", "cancelled")]
        .iter()
        .map(|(p, s)| (p.to_string(), s.to_string(), "nvim-test".to_string()))
        .collect();
    assert_eq!(ledger(&d).await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_split_across_reads_and_batched_in_one() {
    let Some(nvim) = nvim() else { return };
    let d = Daemon::start();
    let v = run_lua(&nvim, &d, Find::SockVar, "framing.lua", &[]).await;
    let long = format!("Hel{}", "lo".repeat(100));
    let want = json!([
        {"kind": "chunk", "delta": "Hel", "seq": 0},
        {"kind": "chunk", "delta": "lo".repeat(100), "seq": 1},
        {"kind": "response", "err": null, "content": true},
        {"kind": "response", "err": null, "content": long},
    ]);
    for case in ["one_byte_reads", "one_read", "seven_byte_reads"] {
        assert_eq!(v[case], want, "{case}");
    }
    let g = &v["garbage"];
    assert_eq!(
        g["seen"],
        json!([{"kind": "response", "err": null, "content": true}, {"kind": "response", "err": "protocol_error", "content": null}]),
        "{g}"
    );
    assert_eq!(g["pipe_closed"], true);

    assert_eq!(v["record_errors"], json!([]));
    assert_eq!(v["distinct_ids"], 500);
    assert_eq!((v["page_records"].as_u64(), v["page_matched"].as_u64()), (Some(500), Some(500)));
    let bytes = v["page_bytes"].as_u64().unwrap();
    assert!(bytes > 65536, "the usage.records answer ({bytes} bytes) should be larger than one 64 KiB read");
    let c = d.client().await;
    assert_eq!(all_records(&c).await.len(), 500);
}
