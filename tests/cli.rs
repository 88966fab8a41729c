//! The command line as a new user meets it: the real binary against a real daemon (and the mock
//! provider), one test per papercut of the first hour, plus config reload (SIGHUP and
//! `config reload`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod mock_provider;

use common::{field, params, Daemon};
use llm_sidecar::rpc::{Client, ClientError, RpcError};
use mock_provider::Mock;
use rmpv::Value;
use std::process::Stdio;
use std::time::{Duration, Instant};

const KEY: &str = "sk-test-cli-PLATFORM-4417";

/// openai and anthropic pointed at the mock (platform key from `MOCK_KEY`), then `extra`.
fn mock_config(mock: &Mock, extra: &str) -> String {
    let u = mock.url();
    format!(
        "[providers.openai]\nbase_url = \"{u}/v1\"\nkey_env = \"MOCK_KEY\"\n\
         [providers.anthropic]\nbase_url = \"{u}/v1\"\nkey_env = \"MOCK_KEY\"\n{extra}\n"
    )
}

/// The key id from `added key key_… (…)`.
fn key_id(out: &str) -> String {
    out.split_whitespace().nth(2).expect("key id").to_string()
}

fn chat_params(model: &str) -> Vec<Value> {
    let msg = Value::Map(vec![(Value::from("role"), Value::from("user")), (Value::from("content"), Value::from("hi"))]);
    params(&[("model", model.into()), ("messages", Value::Array(vec![msg]))])
}

async fn chat(c: &Client, model: &str) -> Result<Value, RpcError> {
    match c.call("chat", chat_params(model)).await {
        Ok(v) => Ok(v),
        Err(ClientError::Rpc(e)) => Err(e),
        Err(e) => panic!("transport: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_missing_names_keys_add_and_the_chosen_model() {
    let mock = Mock::start().await;
    // No MOCK_KEY in the environment and no vault key: openai has no key.
    let d = Daemon::start_with(&mock_config(&mock, ""), &[]);
    let (status, out, err) = d.cli(&["chat", "--model", "openai/gpt-4o-mini", "hello"], None);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(err.contains("llm-sidecar keys add openai"), "{err}");
    assert!(!err.contains("keys set"), "{err}");
    assert!(err.contains("model: openai/gpt-4o-mini (given with --model)"), "{err}");
    assert_eq!(mock.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_by_accepts_key_source_and_key_dash_source() {
    let d = Daemon::start();
    common::record_many(&d.client().await, 3, "cli-test").await;
    let (a, out_a, err_a) = d.cli(&["usage", "--by", "key_source"], None);
    let (b, out_b, err_b) = d.cli(&["usage", "--by", "key-source"], None);
    assert!(a.success(), "{err_a}");
    assert!(b.success(), "{err_b}");
    assert_eq!(out_a, out_b);
    assert!(out_a.to_lowercase().contains("key source"), "{out_a}");
    let (bad, _, err) = d.cli(&["usage", "--by", "nonsense"], None);
    assert_eq!(bad.code(), Some(2), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_the_cli_quietly_with_status_0() {
    let d = Daemon::start();
    common::record_many(&d.client().await, 5, "pipe-test").await;
    for args in
        [&["status", "--json"][..], &["status"], &["usage"], &["keys", "list"], &["models"], &["sync", "status"]]
    {
        // A pipe whose reader is already gone: every write gets EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = common::command(d.dir.path())
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_chat_prints_the_error_and_why_that_model_not_a_usage_line() {
    // No routes, no keys: the keyless ollama preset is chosen, and nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = format!("[providers.ollama]\nbase_url = \"http://{closed}/v1\"\n[router]\nmax_retries = 0\n");
    let d = Daemon::start_with(&config, &[]);
    let (status, out, err) = d.cli(&["chat", "hello"], None);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("model: ollama/llama3.2 (no --model given and no route configured"), "{err}");
    assert!(err.contains("`ollama` needs no key"), "{err}");
    assert!(!err.contains("0 in / 0 out") && !err.contains("$0.000000"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_test_checks_a_custom_provider_at_its_configured_base_url() {
    let mock = Mock::start().await;
    let config =
        format!("[providers.local]\nadapter = \"openai\"\nbase_url = \"{}/v1\"\nkey_env = \"LOCAL_KEY\"\n", mock.url());
    let d = Daemon::start_with(&config, &[]);
    let good = "sk-local-GOOD-8812";
    let (status, out, err) = d.cli(&["keys", "add", "local"], Some(&format!("{good}\n")));
    assert!(status.success(), "{out}{err}");
    let (status, out, err) = d.cli(&["keys", "test", &key_id(&out)], None);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains(": valid (HTTP 200"), "{out}");
    let seen = mock.seen();
    assert_eq!(seen.last().map(|s| s.path.as_str()), Some("/v1/models"));
    assert_eq!(seen.last().and_then(|s| s.authorization.clone()), Some(format!("Bearer {good}")));
    assert!(!out.contains(good) && !err.contains(good));

    let (_, out, _) = d.cli(&["keys", "add", "local", "--label", "old"], Some("sk-local-INVALID-0001\n"));
    let (status, out, err) = d.cli(&["keys", "test", &key_id(&out)], None);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(out.contains("INVALID (HTTP 401"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_add_refuses_an_unknown_provider_unless_forced() {
    let d = Daemon::start();
    let (status, out, err) = d.cli(&["keys", "add", "nosuchprovider"], Some("sk-whatever-1234\n"));
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(err.contains("unknown provider `nosuchprovider`"), "{err}");
    assert!(err.contains("openai") && err.contains("anthropic") && err.contains("--force"), "{err}");
    let (_, list, _) = d.cli(&["keys", "list"], None);
    assert!(list.contains("no keys stored"), "{list}");
    let (status, out, err) = d.cli(&["keys", "add", "nosuchprovider", "--force"], Some("sk-whatever-1234\n"));
    assert!(status.success(), "{out}{err}");
    let (_, list, _) = d.cli(&["keys", "list"], None);
    assert!(list.contains("nosuchprovider"), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_show_is_the_effective_config_with_presets_and_no_effect_notes() {
    let d = Daemon::prepare("[vault]\nmode = \"identity\"\n[providers.mistral]\ndisabled = true\n", &[]);
    let (status, out, err) = d.cli(&["config", "show"], None);
    assert!(status.success(), "{err}");
    assert!(out.contains("[providers.openai]") && out.contains("base_url = \"https://api.openai.com/v1\""), "{out}");
    assert!(out.contains("[providers.ollama]") && out.contains("keyless = true"), "{out}");
    assert!(!out.contains("[providers.mistral]"), "a disabled preset is not in force:\n{out}");
    let lock = out.lines().find(|l| l.starts_with("auto_lock_secs")).expect("auto_lock_secs line");
    assert!(lock.contains("# no effect: identity mode never auto-locks"), "{lock}");
    assert!(out.contains("sync is off"), "{out}");
    assert!(out.contains(&format!("socket = \"{}\"", d.socket.display())), "{out}");
    // What it prints is a valid config file that means the same thing.
    let again = llm_sidecar::config::Config::parse(&out, std::path::Path::new("shown.toml"));
    assert!(again.is_ok(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_status_when_off_says_what_happens_to_pending_records() {
    let d = Daemon::start();
    common::record_many(&d.client().await, 9, "sync-off").await;
    let (status, out, err) = d.cli(&["sync", "status"], None);
    assert!(status.success(), "{err}");
    assert!(out.contains("sync: off"), "{out}");
    assert!(out.contains("pending       9"), "{out}");
    assert!(out.contains("kept in the local ledger until a [sync] url is set"), "{out}");
    assert!(out.contains("llm-sidecar usage export"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_shows_own_key_calls_and_how_to_reach_a_refused_provider() {
    let mock = Mock::start().await;
    let tiers = "[policy]\ndefault_tier = \"free\"\n[tiers.free]\nrank = 0\nproviders = [\"openai\"]\nmonthly_tokens = 100000\n\
                 [tiers.pro]\nrank = 1\nmonthly_tokens = 1000000\n";
    let d = Daemon::start_with(&mock_config(&mock, tiers), &[("MOCK_KEY", KEY)]);
    let (status, _, err) = d.cli(&["keys", "add", "openai"], Some("sk-test-cli-BYOK-5521\n"));
    assert!(status.success(), "{err}");
    let (status, _, err) = d.cli(&["chat", "--model", "openai/gpt-4o-mini", "hello"], None);
    assert!(status.success(), "{err}");
    let (status, out, err) = d.cli(&["quota"], None);
    assert!(status.success(), "{err}");
    let own = out.lines().find(|l| l.starts_with("own keys")).unwrap_or_else(|| panic!("no own-keys line:\n{out}"));
    assert!(own.contains("1 requests") && own.contains("not counted in the limits above"), "{own}");
    assert!(out.contains("not in the `free` tier:"), "{out}");
    let anthropic = out.lines().find(|l| l.trim_start().starts_with("anthropic:")).expect("anthropic line");
    assert!(anthropic.contains("the `pro` tier allows them"), "{anthropic}");
    assert!(out.contains("hint: to use the `pro` tier") && out.contains("llm-sidecar account login"), "{out}");
    // The refused call itself carries the same hint.
    let (status, _, err) = d.cli(&["chat", "--model", "anthropic/claude-sonnet-4-5", "hello"], None);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("tier does not allow") && err.contains("hint: to use the `pro` tier"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_lists_prices_and_whether_a_key_is_present() {
    let d = Daemon::start();
    let (status, out, err) = d.cli(&["models", "--provider", "openai"], None);
    assert!(status.success(), "{err}");
    let header = out.lines().next().unwrap_or_default();
    assert!(header.starts_with("PROVIDER") && header.contains("INPUT/1M") && header.contains("KEY"), "{out}");
    let row = out.lines().find(|l| l.split_whitespace().nth(1) == Some("gpt-4o-mini")).expect("gpt-4o-mini row");
    assert_eq!(row.split_whitespace().nth(2), Some("no"), "{row}");
    assert!(row.contains("$0.15") && row.contains("$0.60"), "{row}");
    assert!(out.lines().skip(1).all(|l| l.starts_with("openai")), "{out}");
    d.cli(&["keys", "add", "openai"], Some("sk-test-models-KEY-7781\n"));
    let (_, out, _) = d.cli(&["models", "--provider", "openai"], None);
    let row = out.lines().find(|l| l.split_whitespace().nth(1) == Some("gpt-4o-mini")).expect("gpt-4o-mini row");
    assert_eq!(row.split_whitespace().nth(2), Some("yes"), "{row}");
    let (status, json, _) = d.cli(&["models", "--json"], None);
    assert!(status.success());
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["providers"].as_array().is_some_and(|p| p.len() > 5), "{json}");
    let (status, _, err) = d.cli(&["models", "--provider", "nosuch"], None);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("unknown provider `nosuch`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_data_dir_names_it_and_the_pid() {
    let d = Daemon::start();
    let other_socket = d.dir.path().join("run2").join("sock");
    let out = common::command(d.dir.path())
        .arg("--socket")
        .arg(&other_socket)
        .arg("--config")
        .arg(&d.config)
        .arg("serve")
        .arg("--data-dir")
        .arg(&d.data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "data directory {} is in use by another llm-sidecar daemon (pid {}, socket {})",
        d.data_dir.display(),
        d.pid(),
        d.socket.display()
    );
    assert!(err.contains(&expected), "{err}");
    assert!(!err.contains("IO error"), "{err}");
    assert!(!other_socket.exists(), "the refused daemon must not leave its socket behind");
    // The first one still answers.
    d.client().await.call("daemon.info", vec![]).await.unwrap();
}

#[test]
fn serve_refuses_a_worker_thread_count_out_of_range() {
    let d = Daemon::prepare("", &[]);
    for (args, env) in [(&["--worker-threads", "0"][..], None), (&[][..], Some("many"))] {
        let mut cmd = d.serve_command();
        cmd.args(args);
        if let Some(v) = env {
            cmd.env("LLM_SIDECAR_WORKER_THREADS", v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{args:?} {env:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--worker-threads"), "{args:?} {env:?}: {err}");
        assert!(!d.socket.exists(), "a refused serve must not bind");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_are_all_reported_and_an_unreadable_file_once() {
    let d = Daemon::prepare("", &[]);
    let bad = d.dir.path().join("bad.toml");
    std::fs::write(&bad, "[daemon]\nbogus = 1\nmax_connections = \"x\"\n\n[vault]\nmode = \"nope\"\n").unwrap();
    let check = |path: &std::path::Path, args: &[&str]| {
        let out = common::command(d.dir.path()).arg("--config").arg(path).args(args).output().unwrap();
        (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    for args in [&["config", "check"][..], &["serve", "--data-dir", d.data_dir.to_str().unwrap()]] {
        let (status, err) = check(&bad, args);
        assert!(!status.success(), "{args:?}");
        assert!(err.contains("3 errors"), "{args:?}: {err}");
        for (line, key) in [(2, "daemon.bogus"), (3, "daemon.max_connections"), (6, "vault.mode")] {
            assert!(err.contains(&format!("line {line}, column 1: `{key}`")), "{args:?} {key}: {err}");
        }
    }
    // A directory is unreadable as a file: its OS error appears once.
    let (status, err) = check(d.dir.path(), &["config", "check"]);
    assert!(!status.success());
    assert_eq!(err.matches("Is a directory").count(), 1, "{err}");
    let (status, err) = check(d.dir.path(), &["serve"]);
    assert!(!status.success());
    assert_eq!(err.matches("Is a directory").count(), 1, "{err}");
}

/// Waits until `quota.status` satisfies `pred`.
async fn until_quota(c: &Client, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = c.call("quota.status", vec![]).await.unwrap();
        if pred(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "quota.status never matched: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn requests_limit(s: &Value) -> Option<u64> {
    field(s, "limits")
        .as_array()?
        .iter()
        .find(|l| field(l, "metric").as_str() == Some("requests"))
        .and_then(|l| field(l, "limit").as_u64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_routes_and_limits_to_new_calls_and_refuses_a_bad_file() {
    let mock = Mock::start().await;
    let policy = |limit: u64, target: &str| {
        mock_config(
            &mock,
            &format!(
                "[routes.default]\ntargets = [\"{target}\"]\n[policy]\ndefault_tier = \"free\"\n[tiers.free]\nmonthly_requests = {limit}\n"
            ),
        )
    };
    let d = Daemon::start_with(&policy(100, "openai/gpt-4o-mini"), &[("MOCK_KEY", KEY)]);
    let c = d.client().await;
    let r = chat(&c, "default").await.unwrap();
    assert_eq!(field(&r, "provider").as_str(), Some("openai"));
    assert_eq!(mock.seen().last().map(|s| s.path.clone()).as_deref(), Some("/v1/chat/completions"));

    // SIGHUP: the route goes to anthropic, the limit drops to 3 requests (1 used).
    std::fs::write(&d.config, policy(3, "anthropic/claude-sonnet-4-5")).unwrap();
    d.signal(rustix::process::Signal::HUP);
    until_quota(&c, |s| requests_limit(s) == Some(3)).await;
    let r = chat(&c, "default").await.unwrap();
    assert_eq!(field(&r, "provider").as_str(), Some("anthropic"));
    assert_eq!(mock.seen().last().map(|s| s.path.clone()).as_deref(), Some("/v1/messages"));
    chat(&c, "default").await.unwrap();
    let refused = chat(&c, "default").await.unwrap_err();
    assert_eq!(refused.code.as_str(), "quota_exceeded", "{refused}");

    // An invalid file: refused with its errors; the old config stays in force.
    std::fs::write(&d.config, "[routes.default]\ntargets = 7\n[tiers.free]\nbogus = 1\n").unwrap();
    d.signal(rustix::process::Signal::HUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.logs().contains("config reload refused") {
        assert!(Instant::now() < deadline, "no refusal logged:\n{}", d.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = c.call("quota.status", vec![]).await.unwrap();
    assert_eq!(requests_limit(&s), Some(3));
    let (status, _, err) = d.cli(&["config", "reload"], None);
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("previous one stays in force") && err.contains("line 2") && err.contains("tiers.free.bogus"),
        "{err}"
    );
    let e = common::rpc_err(c.call("daemon.reload", vec![]).await);
    assert_eq!(e.code.as_str(), "config_invalid");
    let errors = field(&e.data, "errors").as_array().cloned().unwrap_or_default();
    assert_eq!(errors.len(), 2, "{:?}", e.data);
    assert_eq!(field(&errors[0], "line").as_u64(), Some(2));
    assert_eq!(chat(&c, "default").await.unwrap_err().code.as_str(), "quota_exceeded");

    // `config reload` with a valid file: what applied, and what needs a restart.
    let mut text = policy(10, "openai/gpt-4o-mini");
    text.push_str("[daemon]\nmax_connections = 7\n");
    std::fs::write(&d.config, text).unwrap();
    let (status, out, err) = d.cli(&["config", "reload"], None);
    assert!(status.success(), "{err}");
    assert!(out.contains("new calls use the new routes, tiers"), "{out}");
    assert!(out.contains("only applied after a restart: daemon"), "{out}");
    assert!(out.contains("daemon.socket") && out.contains("daemon.data_dir"), "{out}");
    let r = chat(&c, "default").await.unwrap();
    assert_eq!(field(&r, "provider").as_str(), Some("openai"));
}

/// A call running across a reload finishes on the config it started with; the next call uses
/// the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_call_finishes_on_the_config_it_started_with() {
    let mock = Mock::start().await;
    let route = |target: &str| mock_config(&mock, &format!("[routes.default]\ntargets = [\"{target}\"]\n"));
    let d = Daemon::start_with(&route("openai/gpt-4o-mini"), &[("MOCK_KEY", KEY)]);
    let c = d.client().await;
    mock.push([mock_provider::Fault::SlowFirstByte(Duration::from_millis(1500))]);
    let running = {
        let c = d.client().await;
        tokio::spawn(async move { chat(&c, "default").await })
    };
    // The slow call has reached the provider before the reload.
    let deadline = Instant::now() + Duration::from_secs(10);
    while mock.requests() == 0 {
        assert!(Instant::now() < deadline, "the first call never reached the mock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::fs::write(&d.config, route("anthropic/claude-sonnet-4-5")).unwrap();
    let (status, out, err) = d.cli(&["config", "reload"], None);
    assert!(status.success() && out.contains("routes"), "{out}{err}");
    let next = chat(&c, "default").await.unwrap();
    assert_eq!(field(&next, "provider").as_str(), Some("anthropic"));
    let first = running.await.unwrap().unwrap();
    assert_eq!(field(&first, "provider").as_str(), Some("openai"), "the running call kept its route");
}

/// `chat --image --file --reasoning --json-schema`: the parts and options reach the provider in
/// its wire format; a file that is not an image is refused before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_attaches_images_documents_reasoning_and_a_schema() {
    let mock = Mock::start().await;
    let d = Daemon::start_with(&mock_config(&mock, ""), &[("MOCK_KEY", KEY)]);
    let png = d.dir.path().join("shot.png");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\nfake").unwrap();
    let pdf = d.dir.path().join("report.pdf");
    std::fs::write(&pdf, b"%PDF-1.4 fake").unwrap();
    let schema = d.dir.path().join("book.json");
    std::fs::write(&schema, r#"{"type":"object","properties":{"title":{"type":"string"}}}"#).unwrap();
    let args = [
        "chat",
        "--model",
        "openai/gpt-4o",
        "--image",
        png.to_str().unwrap(),
        "--image",
        "https://example.com/a.jpg",
        "--file",
        pdf.to_str().unwrap(),
        "--reasoning",
        "low",
        "--json-schema",
        schema.to_str().unwrap(),
        "what is this?",
    ];
    let (status, out, err) = d.cli(&args, None);
    assert!(status.success(), "{out}{err}");
    let body = &mock.seen()[0].body;
    let content = &body["messages"][0]["content"];
    assert_eq!(content[0], serde_json::json!({"type": "text", "text": "what is this?"}));
    assert_eq!(content[1]["image_url"]["url"], "data:image/png;base64,iVBORw0KGgpmYWtl");
    assert_eq!(content[2]["image_url"]["url"], "https://example.com/a.jpg");
    assert_eq!(content[3]["file"]["filename"], "report.pdf");
    assert_eq!(content[3]["file"]["file_data"], "data:application/pdf;base64,JVBERi0xLjQgZmFrZQ==");
    assert_eq!(body["reasoning_effort"], "low");
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(body["response_format"]["json_schema"]["name"], "book");
    assert_eq!(body["response_format"]["json_schema"]["schema"]["properties"]["title"]["type"], "string");

    let txt = d.dir.path().join("notes.txt");
    std::fs::write(&txt, "x").unwrap();
    let (status, _, err) = d.cli(&["chat", "--model", "openai/gpt-4o", "--image", txt.to_str().unwrap(), "hi"], None);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("not a .png, .jpg, .gif or .webp file"), "{err}");
    assert_eq!(mock.requests(), 1);
}
