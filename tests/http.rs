//! The OpenAI-/Anthropic-compatible HTTP face of the real daemon, with mock providers behind it
//! and a plain HTTP client in front: listen rules, app tokens, both dialects (streamed and not,
//! translated both ways), each error mapping, disconnects, limits, and usage equal to the
//! ledger's. The official SDKs are driven against the same daemon in `tests/http/sdk.py`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod mock_provider;

use common::{all_records, field, Daemon};
use mock_provider::{Fault, Mock, USAGE_IN, USAGE_OUT};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const KEY: &str = "sk-test-Hh77HTTPfaceSECRET0099";

/// A daemon with the HTTP face on a free loopback port, an app token, and a mock provider.
pub struct Face {
    pub d: Daemon,
    pub mock: Mock,
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

pub fn config(mock: &Mock, extra: &str) -> String {
    let u = mock.url();
    format!(
        r#"
[http]
listen = "127.0.0.1:0"
[providers.openai]
base_url = "{u}/v1"
key_env = "MOCK_KEY"
[providers.anthropic]
base_url = "{u}/v1"
key_env = "MOCK_KEY"
[router]
backoff_base_ms = 20
backoff_max_ms = 100
max_retries = 0
{extra}
"#
    )
}

impl Face {
    pub async fn start(extra: &str) -> Face {
        Face::start_config(|c| format!("{c}\n{extra}")).await
    }

    /// [`Face::start`] with the config edited by `edit`.
    pub async fn start_config(edit: impl FnOnce(String) -> String) -> Face {
        let mock = Mock::start().await;
        let d = Daemon::start_with(&edit(config(&mock, "")), &[("MOCK_KEY", KEY)]);
        let info = d.client().await.call("daemon.info", vec![]).await.unwrap();
        let addr = field(&info, "http").as_str().expect("daemon.info names the HTTP address").to_string();
        let (status, token, err) = d.cli(&["apps", "add", "editor"], None);
        assert!(status.success(), "{err}");
        let token = token.trim().to_string();
        Face { d, mock, base: format!("http://{addr}"), token, http: reqwest::Client::new() }
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.token).json(body).send().await.unwrap()
    }

    /// The daemon's stored records (as JSON).
    pub async fn records(&self) -> Vec<Value> {
        all_records(&self.d.client().await).await.iter().map(|r| serde_json::to_value(r).unwrap()).collect()
    }
}

fn hello() -> Value {
    json!([{"role": "user", "content": "Say hello"}])
}

/// The `data:` payloads of an SSE body, in order.
fn sse_data(body: &str) -> Vec<String> {
    body.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_string).collect()
}

#[test]
fn a_non_loopback_listen_is_refused() {
    for (config, flag) in [("[http]\nlisten = \"0.0.0.0:8931\"\n", None), ("", Some("192.168.1.10:8931"))] {
        let d = Daemon::prepare(config, &[]);
        let mut cmd = d.serve_command();
        if let Some(addr) = flag {
            cmd.arg("--http").arg(addr);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not a loopback address"), "{err}");
        assert!(!d.socket.exists(), "the daemon did not start");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_a_wrong_token_or_a_removed_token_get_401() {
    let f = Face::start("").await;
    let url = format!("{}/v1/chat/completions", f.base);
    let body = json!({"model": "openai/gpt-4o-mini", "messages": hello()});
    let r = f.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert!(v["error"]["message"].as_str().unwrap().contains("apps add"));
    let r = f.http.post(&url).bearer_auth("lsk_not-a-real-token").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = f
        .http
        .post(format!("{}/v1/messages", f.base))
        .header("x-api-key", "lsk_wrong")
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "anthropic/claude-haiku-4-5", "max_tokens": 10, "messages": hello()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");
    // The good token works with either header, then stops working once its app is removed.
    let r = f.http.get(format!("{}/v1/models", f.base)).header("x-api-key", &f.token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(f.post("/v1/chat/completions", &body).await.status(), 200);
    let (status, _, err) = f.d.cli(&["apps", "rm", "editor"], None);
    assert!(status.success(), "{err}");
    assert_eq!(f.post("/v1/chat/completions", &body).await.status(), 401);
    assert!(!f.d.logs().contains(&f.token), "the token reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_dialect_answers_and_streams_with_the_ledgers_usage() {
    let f = Face::start("").await;
    // A body over 64 KiB (parsed off the async thread) is answered like any other.
    let long = json!([{"role": "user", "content": "word ".repeat(20_000)}]);
    let r = f.post("/v1/chat/completions", &json!({"model": "openai/gpt-4o-mini", "messages": long})).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], mock_provider::REPLY);
    let r = f.post("/v1/chat/completions", &json!({"model": "openai/gpt-4o-mini", "messages": hello()})).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["choices"][0]["message"]["content"], mock_provider::REPLY);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], USAGE_IN);
    assert_eq!(v["usage"]["completion_tokens"], USAGE_OUT);

    let body = json!({"model": "openai/gpt-4o-mini", "messages": hello(), "stream": true,
        "stream_options": {"include_usage": true}});
    let r = f.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let data = sse_data(&r.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, mock_provider::REPLY);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(chunks.last().unwrap()["choices"], json!([]));
    let records = f.records().await;
    assert_eq!(records.len(), 3);
    for r in &records {
        assert_eq!(r["app"], "editor", "the token names the app");
        assert_eq!(r["route"], "openai/gpt-4o-mini");
    }
    assert_eq!(usage["prompt_tokens"], records[0]["input_tokens"], "newest first: the streamed call");
    assert_eq!(usage["completion_tokens"], records[0]["output_tokens"]);
    let (_, out, _) = f.d.cli(&["apps", "list", "--json"], None);
    let apps: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(apps["apps"][0]["calls_this_month"], 3);
    let (_, status, _) = f.d.cli(&["status"], None);
    assert!(status.contains(&format!("http         {}", f.base)), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_dialect_reaches_the_other_providers_wire_format() {
    let f = Face::start("").await;
    // Anthropic dialect in, OpenAI provider out, streamed.
    let r = f
        .post(
            "/v1/messages",
            &json!({"model": "openai/gpt-4o-mini", "max_tokens": 64, "system": "be brief", "messages": hello(), "stream": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let events: Vec<&str> = body.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(events.first(), Some(&"message_start"));
    assert_eq!(&events[events.len() - 2..], &["message_delta", "message_stop"]);
    let data: Vec<Value> = sse_data(&body).iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let text: String = data.iter().filter_map(|d| d["delta"]["text"].as_str()).collect();
    assert_eq!(text, mock_provider::REPLY);
    let delta = data.iter().find(|d| d["type"] == "message_delta").unwrap();
    assert_eq!(delta["usage"]["output_tokens"], USAGE_OUT);
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    let seen = f.mock.seen();
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(seen[0].body["messages"][0], json!({"role": "system", "content": "be brief"}));

    // OpenAI dialect in, Anthropic provider out.
    let r = f
        .post(
            "/v1/chat/completions",
            &json!({"model": "anthropic/claude-haiku-4-5", "max_tokens": 50, "messages":
                [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Say hello"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], mock_provider::REPLY);
    let seen = f.mock.seen();
    assert_eq!(seen[1].path, "/v1/messages");
    assert_eq!(seen[1].body["system"], "be brief");
    assert_eq!(seen[1].body["max_tokens"], 50);
    assert_eq!(seen[1].x_api_key.as_deref(), Some(KEY), "the daemon's key, not the app token");

    // Anthropic dialect, non-streamed, with Anthropic's usage convention.
    let r = f
        .post("/v1/messages", &json!({"model": "anthropic/claude-haiku-4-5", "max_tokens": 64, "messages": hello()}))
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0], json!({"type": "text", "text": mock_provider::REPLY}));
    assert_eq!(v["usage"]["input_tokens"], USAGE_IN);
    assert_eq!(v["usage"]["output_tokens"], USAGE_OUT);

    // count_tokens: Anthropic's own count where the route reaches Anthropic, not billed...
    let before = f.records().await.len();
    f.mock.push([Fault::Json(json!({"input_tokens": 14}))]);
    let r =
        f.post("/v1/messages/count_tokens", &json!({"model": "anthropic/claude-haiku-4-5", "messages": hello()})).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"input_tokens": 14}));
    let seen = f.mock.seen();
    let count = seen.last().unwrap();
    assert_eq!(count.path, "/v1/messages/count_tokens");
    assert_eq!(
        count.body,
        json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "Say hello"}]})
    );
    assert_eq!(count.x_api_key.as_deref(), Some(KEY));
    // ...else the daemon's bound, flagged as an estimate.
    let r = f.post("/v1/messages/count_tokens", &json!({"model": "openai/gpt-4o-mini", "messages": hello()})).await;
    let v: Value = r.json().await.unwrap();
    let n = v["input_tokens"].as_u64().unwrap();
    assert!((9..200).contains(&n), "{v}");
    assert_eq!(v["estimated"], true);
    assert_eq!(f.records().await.len(), before, "counting is not a call");
    // models.
    let r = f.http.get(format!("{}/v1/models", f.base)).bearer_auth(&f.token).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"openai/gpt-4o-mini") && ids.contains(&"anthropic/claude-haiku-4-5"), "{ids:?}");
    let r = f
        .http
        .get(format!("{}/v1/models", f.base))
        .header("x-api-key", &f.token)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["has_more"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_take_each_dialects_shape_and_status() {
    let tiers = r#"
[policy]
default_tier = "free"
[tiers.free]
rank = 0
models = ["openai/gpt-4o-mini"]
monthly_requests = 3
requests_per_minute = 2
[tiers.pro]
rank = 1
"#;
    let f = Face::start(tiers).await;
    let ok = json!({"model": "openai/gpt-4o-mini", "max_tokens": 10, "messages": hello()});
    // Tier: 403 naming the tier.
    let r = f.post("/v1/chat/completions", &json!({"model": "anthropic/claude-haiku-4-5", "messages": hello()})).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-should-retry"], "false");
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("`pro`"), "{v}");
    assert_eq!(v["error"]["llm_sidecar"]["code"], "tier_required");
    assert_eq!(v["error"]["llm_sidecar"]["data"]["required_tier"], "pro");
    // Rate: 2 a minute, then 429 with Retry-After.
    assert_eq!(f.post("/v1/chat/completions", &ok).await.status(), 200);
    assert_eq!(f.post("/v1/messages", &ok).await.status(), 200);
    let r = f.post("/v1/messages", &ok).await;
    assert_eq!(r.status(), 429);
    let secs: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(v["error"]["llm_sidecar"]["code"], "rate_limited");
    // Bad request: 400 with the param.
    let r = f.post("/v1/chat/completions", &json!({"model": "openai/gpt-4o-mini", "messages": "hi"})).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], "messages");
    // A body over 64 KiB is parsed off the async thread, with the same answers.
    let big_bad = json!({"model": "openai/gpt-4o-mini", "messages": "x".repeat(100_000)});
    let r = f.post("/v1/chat/completions", &big_bad).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["param"], "messages", "{v}");
    let r = f.post("/v1/messages", &json!({"model": "x", "messages": hello()})).await;
    assert_eq!(r.status(), 400);
    let r = f.post("/v1/chat/completions", &json!({"model": "no-such-route", "messages": hello()})).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("unknown model"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_and_provider_failures_map_to_429_and_502() {
    let tiers = r#"
[policy]
default_tier = "free"
[tiers.free]
rank = 0
monthly_requests = 1
"#;
    let f = Face::start(tiers).await;
    let ok = json!({"model": "openai/gpt-4o-mini", "max_tokens": 10, "messages": hello()});
    f.mock.push([Fault::Status { status: 500, headers: vec![], body: r#"{"error":{"message":"boom"}}"#.into() }]);
    let r = f.post("/v1/chat/completions", &ok).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    let attempts = v["error"]["llm_sidecar"]["data"]["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["status"], 500);
    assert_eq!(f.post("/v1/chat/completions", &ok).await.status(), 200);
    let r = f.post("/v1/chat/completions", &ok).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-should-retry"], "false");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "insufficient_quota");
    assert_eq!(v["error"]["code"], "insufficient_quota");
    assert_eq!(v["error"]["llm_sidecar"]["data"]["limit"], 1);
}

/// Polls the ledger until a record has `status`, or panics after `within`.
async fn wait_for_status(f: &Face, status: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        if let Some(r) = f.records().await.into_iter().find(|r| r["status"] == status) {
            return r;
        }
        assert!(Instant::now() < deadline, "no `{status}` record within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_its_call() {
    let f = Face::start("[policy]\ndefault_tier = \"free\"\n[tiers.free]\nrank = 0\nmonthly_tokens = 1000000\n").await;
    // Streamed: read the first chunk, then drop the response.
    f.mock.push([Fault::Slow { every: Duration::from_millis(100), chunks: 100 }]);
    let body = json!({"model": "openai/gpt-4o-mini", "messages": hello(), "stream": true, "max_tokens": 100});
    let mut r = f.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    let gone = Instant::now();
    drop(r);
    let rec = wait_for_status(&f, "cancelled", Duration::from_secs(2)).await;
    assert!(gone.elapsed() < Duration::from_secs(2));
    assert_eq!(rec["app"], "editor");
    let deadline = Instant::now() + Duration::from_millis(500);
    while f.mock.disconnects() == 0 {
        assert!(Instant::now() < deadline, "the upstream stream was not closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let q = f.d.client().await.call("quota.status", vec![]).await.unwrap();
    let tokens = field(&q, "limits")
        .as_array()
        .unwrap()
        .iter()
        .find(|l| field(l, "metric").as_str() == Some("tokens"))
        .cloned()
        .unwrap();
    assert_eq!(field(&tokens, "reserved").as_i64(), Some(0), "the reservation is released");

    // Not streamed: the client gives up while the provider is still thinking.
    f.mock.push([Fault::Slow { every: Duration::from_millis(100), chunks: 100 }]);
    let quick = reqwest::Client::builder().timeout(Duration::from_millis(400)).build().unwrap();
    let before = f.records().await.len();
    let r = quick
        .post(format!("{}/v1/messages", f.base))
        .header("x-api-key", &f.token)
        .json(&json!({"model": "openai/gpt-4o-mini", "max_tokens": 100, "messages": hello()}))
        .send()
        .await;
    assert!(r.is_err(), "the client timed out");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let recs = f.records().await;
        if recs.len() > before {
            assert_eq!(recs.last().unwrap()["status"], "cancelled");
            break;
        }
        assert!(Instant::now() < deadline, "the abandoned call was not cancelled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_hosts_origins_and_big_bodies_are_refused() {
    let f = Face::start_config(|c| {
        c.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:0\"\nmax_body_bytes = 4096")
    })
    .await;
    let url = format!("{}/v1/chat/completions", f.base);
    let body = json!({"model": "openai/gpt-4o-mini", "messages": hello()});
    let r = f.http.post(&url).bearer_auth(&f.token).header("host", "evil.example").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 403, "DNS rebinding: a foreign Host is refused");
    let r = f
        .http
        .post(&url)
        .bearer_auth(&f.token)
        .header("origin", "http://evil.example")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let big = json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "x".repeat(8 * 1024)}]});
    let r = f.post("/v1/chat/completions", &big).await;
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("max_body_bytes"));
    let r = f.http.get(format!("{}/v1/nothing", f.base)).bearer_auth(&f.token).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(f.mock.requests(), 0, "nothing reached the provider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_origin_gets_cors() {
    let f = Face::start_config(|c| {
        c.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:0\"\ncors_origins = [\"http://localhost:3000\"]")
    })
    .await;
    let r = f
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/v1/chat/completions", f.base))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers()["access-control-allow-origin"], "http://localhost:3000");
    let r = f
        .http
        .post(format!("{}/v1/chat/completions", f.base))
        .bearer_auth(&f.token)
        .header("origin", "http://localhost:3000")
        .json(&json!({"model": "openai/gpt-4o-mini", "messages": hello()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "http://localhost:3000");
}

/// The test venv's Python with the official SDKs (`make test` builds it and sets
/// `LLM_SIDECAR_SDK_PYTHON`); `None` (skip, with the reason) outside CI when there is none.
fn sdk_python() -> Option<std::path::PathBuf> {
    let p = std::env::var_os("LLM_SIDECAR_SDK_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").into());
    let ok = std::process::Command::new(&p)
        .args(["-c", "import openai, anthropic"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    match ok {
        true => Some(p),
        false if std::env::var_os("CI").is_some() => panic!("no Python with the openai and anthropic SDKs at {p:?}"),
        false => {
            eprintln!("skipped: no Python with the openai and anthropic SDKs at {p:?} (run `make test`)");
            None
        }
    }
}

/// Runs `tests/http/sdk.py` with `cases` (against `key`); one JSON object per case.
async fn sdk(py: &std::path::Path, f: &Face, cases: &[&str]) -> Vec<Value> {
    let out = tokio::process::Command::new(py)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/http/sdk.py"))
        .args(cases)
        .env("BASE", &f.base)
        .env("TOKEN", &f.token)
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_BASE_URL")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "sdk.py {cases:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), cases.len(), "{stdout}");
    lines
}

fn oa_answer(message: Value, finish: &str, usage: (u64, u64)) -> Fault {
    Fault::Json(json!({"id": "chatcmpl-m", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": {"prompt_tokens": usage.0, "completion_tokens": usage.1, "total_tokens": usage.0 + usage.1}}))
}

fn an_answer(content: Value, stop: &str, usage: (u64, u64)) -> Fault {
    Fault::Json(json!({"id": "msg_m", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
        "content": content, "stop_reason": stop, "stop_sequence": null,
        "usage": {"input_tokens": usage.0, "output_tokens": usage.1}}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_talk_to_both_dialects() {
    let Some(py) = sdk_python() else { return };
    let f = Face::start("").await;
    let normal = || Fault::SlowFirstByte(Duration::ZERO);
    let calls = json!([
        {"id": "call_paris", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
        {"id": "call_rome", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]);
    f.mock.push([
        normal(),
        normal(),
        oa_answer(json!({"role": "assistant", "content": null, "tool_calls": calls}), "tool_calls", (60, 30)),
        oa_answer(json!({"role": "assistant", "content": "Paris and Rome: 22 C."}), "stop", (80, 9)),
        normal(),
        oa_answer(json!({"role": "assistant", "content": "{\"city\":\"Paris\",\"temp\":22}"}), "stop", (40, 8)),
        normal(),
        normal(),
        normal(),
        an_answer(
            json!([{"type": "thinking", "thinking": "Two cities.", "signature": "sig-abc"},
                {"type": "tool_use", "id": "toolu_paris", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_rome", "name": "get_weather", "input": {"city": "Rome"}}]),
            "tool_use",
            (400, 90),
        ),
        an_answer(json!([{"type": "text", "text": "Both 22 C."}]), "end_turn", (520, 12)),
        normal(),
        Fault::Json(json!({"input_tokens": 23})),
    ]);
    let cases = [
        "openai_chat",
        "openai_stream",
        "openai_tools",
        "openai_image",
        "openai_json_schema",
        "openai_to_anthropic",
        "anthropic_message",
        "anthropic_stream",
        "anthropic_tools",
        "anthropic_to_openai",
        "anthropic_count",
    ];
    let out = sdk(&py, &f, &cases).await;
    let by: std::collections::HashMap<&str, &Value> = out.iter().map(|o| (o["case"].as_str().unwrap(), o)).collect();
    let reply = mock_provider::REPLY;
    for c in [
        "openai_chat",
        "openai_stream",
        "openai_image",
        "openai_to_anthropic",
        "anthropic_message",
        "anthropic_stream",
        "anthropic_to_openai",
    ] {
        assert_eq!(by[c]["content"], reply, "{c}");
    }
    assert!(by["openai_stream"]["chunks"].as_u64().unwrap() >= 3);
    assert_eq!(
        by["openai_tools"]["calls"],
        json!([["call_paris", "get_weather", {"city": "Paris"}], ["call_rome", "get_weather", {"city": "Rome"}]])
    );
    assert_eq!(by["openai_tools"]["content"], "Paris and Rome: 22 C.");
    assert_eq!(by["openai_json_schema"]["parsed"], json!({"city": "Paris", "temp": 22}));
    assert_eq!(by["anthropic_tools"]["calls"][1], json!(["toolu_rome", "get_weather", {"city": "Rome"}]));
    assert_eq!(by["anthropic_tools"]["thinking"], json!(["Two cities."]));
    assert_eq!(by["anthropic_tools"]["content"], "Both 22 C.");
    assert_eq!(by["anthropic_count"]["input_tokens"], 23, "Anthropic's own count");

    // What the providers were sent.
    let seen = f.mock.seen();
    assert_eq!(seen.len(), 13);
    assert_eq!(seen[12].path, "/v1/messages/count_tokens");
    assert_eq!(seen[2].body["tools"][0]["function"]["name"], "get_weather");
    let turn2 = seen[3].body["messages"].as_array().unwrap();
    assert_eq!(turn2[1]["tool_calls"][1]["id"], "call_rome");
    assert_eq!(turn2[2], json!({"role": "tool", "tool_call_id": "call_paris", "content": "Paris: 22 C"}));
    let image = &seen[4].body["messages"][0]["content"][1];
    assert_eq!(image["type"], "image_url");
    assert!(image["image_url"]["url"].as_str().unwrap().starts_with("data:image/png;base64,"));
    assert_eq!(seen[5].body["response_format"]["type"], "json_schema");
    assert_eq!(seen[5].body["response_format"]["json_schema"]["strict"], true);
    assert_eq!(seen[6].path, "/v1/messages", "OpenAI dialect to an Anthropic provider");
    assert_eq!(seen[6].body["system"], "be brief");
    assert_eq!(seen[9].body["thinking"]["budget_tokens"], 1024);
    let an_turn2 = seen[10].body["messages"].as_array().unwrap();
    assert_eq!(
        an_turn2[1]["content"][0],
        json!({"type": "thinking", "thinking": "Two cities.", "signature": "sig-abc"})
    );
    assert_eq!(an_turn2[2]["content"][0]["type"], "tool_result");
    assert_eq!(an_turn2[2]["content"][1]["tool_use_id"], "toolu_rome");
    assert_eq!(seen[11].path, "/v1/chat/completions", "Anthropic dialect to an OpenAI provider");

    // The usage each SDK saw is the ledger's, call for call.
    let mut sdk_usage = Vec::new();
    for o in &out {
        match &o["usage"] {
            Value::Array(many) => sdk_usage.extend(many.iter().cloned()),
            Value::Null => {}
            one => sdk_usage.push(one.clone()),
        }
    }
    let records = f.records().await;
    // `usage.records` lists the newest first.
    let ledger: Vec<Value> =
        records.iter().rev().map(|r| json!({"input": r["input_tokens"], "output": r["output_tokens"]})).collect();
    assert_eq!(sdk_usage, ledger);
    assert!(records.iter().all(|r| r["app"] == "editor"));
    let (_, list, _) = f.d.cli(&["apps", "list", "--json"], None);
    let apps: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(apps["apps"][0]["calls_this_month"], 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_raise_their_own_errors() {
    let Some(py) = sdk_python() else { return };
    let tiers = "[policy]\ndefault_tier = \"free\"\n[tiers.free]\nrank = 0\nmodels = [\"openai/gpt-4o-mini\"]\n\
                 requests_per_minute = 3\n[tiers.pro]\nrank = 1\n";
    let f = Face::start(tiers).await;
    f.mock.push([Fault::Status {
        status: 500,
        headers: vec![],
        body: r#"{"error":{"message":"upstream boom"}}"#.into(),
    }]);
    let cases = [
        "openai_auth",
        "anthropic_auth",
        "openai_tier",
        "anthropic_tier",
        "openai_bad",
        "anthropic_bad",
        "openai_502",
        "openai_rate",
        "anthropic_rate",
    ];
    let out = sdk(&py, &f, &cases).await;
    let status: Vec<u64> = out.iter().map(|o| o["status"].as_u64().unwrap()).collect();
    assert_eq!(status, [401, 401, 403, 403, 400, 400, 502, 429, 429]);
    assert_eq!(out[2]["ours"]["code"], "tier_required");
    assert!(out[3]["message"].as_str().unwrap().contains("`pro`"), "{}", out[3]);
    assert_eq!(out[6]["ours"]["data"]["attempts"][0]["status"], 500);
    assert_eq!(out[7]["code"], "rate_limit_exceeded");
    assert!(out[7]["retry_after"].as_str().is_some_and(|s| s.parse::<u64>().is_ok()));
    assert_eq!(out[8]["type"], "rate_limit_error");

    let f = Face::start("[policy]\ndefault_tier = \"free\"\n[tiers.free]\nrank = 0\nmonthly_requests = 1\n").await;
    let out = sdk(&py, &f, &["openai_quota", "anthropic_quota"]).await;
    assert_eq!(out[0]["status"], 429);
    assert_eq!(out[0]["code"], "insufficient_quota");
    assert_eq!(out[1]["type"], "rate_limit_error");
    assert_eq!(out[1]["ours"]["code"], "quota_exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_own_limits_are_enforced_for_its_calls_only() {
    let limits = r#"
[tiers.free]
rank = 0
models = ["openai/gpt-4o-mini"]
[tiers.pro]
rank = 1
[policy]
default_tier = "pro"
[apps.editor]
requests_per_minute = 2
tier = "free"
[apps.agent]
monthly_cost_usd = 0.0
"#;
    let f = Face::start(limits).await;
    let ok = json!({"model": "openai/gpt-4o-mini", "max_tokens": 10, "messages": hello()});
    // The app's tier gates its calls (the user's own tier, pro, would allow the model).
    let r = f.post("/v1/chat/completions", &json!({"model": "anthropic/claude-haiku-4-5", "messages": hello()})).await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["llm_sidecar"]["data"]["app"], "editor");
    assert!(v["error"]["message"].as_str().unwrap().contains("the app `editor`"), "{v}");
    let r = f.http.get(format!("{}/v1/models", f.base)).bearer_auth(&f.token).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["openai/gpt-4o-mini"], "the app's tier filters the list");
    // ...and the provider count: no Anthropic count for an app whose tier forbids Anthropic.
    let before = f.mock.requests();
    let r =
        f.post("/v1/messages/count_tokens", &json!({"model": "anthropic/claude-haiku-4-5", "messages": hello()})).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["estimated"], true, "{v}");
    assert_eq!(f.mock.requests(), before);
    // Its rate.
    assert_eq!(f.post("/v1/chat/completions", &ok).await.status(), 200);
    assert_eq!(f.post("/v1/chat/completions", &ok).await.status(), 200);
    let r = f.post("/v1/chat/completions", &ok).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["llm_sidecar"]["code"], "rate_limited");
    assert_eq!(v["error"]["llm_sidecar"]["data"]["app"], "editor");
    // Its spend cap: another app's token, refused before any provider call.
    let (status, agent, err) = f.d.cli(&["apps", "add", "agent"], None);
    assert!(status.success(), "{err}");
    let before = f.mock.requests();
    let r = f
        .http
        .post(format!("{}/v1/messages", f.base))
        .header("x-api-key", agent.trim())
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["llm_sidecar"]["code"], "quota_exceeded");
    assert_eq!(v["error"]["llm_sidecar"]["data"]["metric"], "cost_microusd");
    assert_eq!(v["error"]["llm_sidecar"]["data"]["app"], "agent");
    assert_eq!(f.mock.requests(), before);
    // Neither limit touches calls of other apps over the RPC.
    let c = f.d.client().await;
    for _ in 0..3 {
        let p = rmpv::ext::to_value(&ok).unwrap();
        c.call("chat", vec![p]).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_oversized_request_heads_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = Face::start_config(|c| {
        c.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:0\"\nheader_timeout_secs = 1")
    })
    .await;
    let addr = f.base.trim_start_matches("http://").to_string();
    // A head that never ends: closed after the timeout.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
    let t0 = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was not closed");
    assert!((Duration::from_millis(900)..Duration::from_secs(3)).contains(&t0.elapsed()), "{:?}", t0.elapsed());
    // A head larger than max_header_bytes: refused without reaching a handler.
    let mut big = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!("GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(100 * 1024));
    let _ = big.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), big.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // The listener still serves.
    let r = f.http.get(format!("{}/v1/models", f.base)).bearer_auth(&f.token).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
