//! Chat over the real socket against the mock provider: every adapter streaming and not, the
//! recorded fixtures replayed byte for byte, retries, Retry-After, fallback, cancellation, key
//! hygiene, concurrency, and billing of failed attempts the provider reported usage for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod mock_provider;

use common::{all_records, field, params, rpc_err, Daemon};
use llm_sidecar::rpc::client::Notification;
use llm_sidecar::rpc::{Client, ClientError, ErrorCode};
use mock_provider::{Fault, Mock, REPLY, USAGE_IN, USAGE_OUT};
use rmpv::Value;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

const KEY: &str = "sk-test-Zq8vX1y2SECRETkey0042";

/// Points the openai/anthropic/gemini presets at `mock`, adds an `ollama`-native `local`
/// provider, a `backup` OpenAI-compatible provider at `backup` (if any), fast backoff.
fn config(mock: &Mock, backup: Option<&Mock>, router: &str, extra: &str) -> String {
    let u = mock.url();
    let backup = backup.map_or(String::new(), |b| {
        format!("[providers.backup]\nadapter = \"openai\"\nbase_url = \"{}/v1\"\nkey_env = \"MOCK_KEY\"\n", b.url())
    });
    format!(
        r#"
[providers.openai]
base_url = "{u}/v1"
key_env = "MOCK_KEY"
[providers.anthropic]
base_url = "{u}/v1"
key_env = "MOCK_KEY"
[providers.gemini]
base_url = "{u}/v1beta"
key_env = "MOCK_KEY"
[providers.local]
adapter = "ollama"
base_url = "{u}"
{backup}
[router]
backoff_base_ms = 20
backoff_max_ms = 100
{router}
{extra}
"#
    )
}

fn start(config: &str) -> Daemon {
    Daemon::start_with(config, &[("MOCK_KEY", KEY)])
}

fn chat_params(model: &str, stream: bool) -> Vec<Value> {
    let msg = Value::Map(vec![
        (Value::from("role"), Value::from("user")),
        (Value::from("content"), Value::from("Say hello")),
    ]);
    params(&[("model", model.into()), ("messages", Value::Array(vec![msg])), ("stream", stream.into())])
}

fn u(result: &Value, name: &str) -> u64 {
    field(field(result, "usage"), name).as_u64().unwrap()
}

fn usage_of(v: &Value) -> (u64, u64, u64, u64, bool) {
    let usage = field(v, "usage");
    let n = |k: &str| field(usage, k).as_u64().unwrap();
    (n("input"), n("output"), n("cached"), n("reasoning"), field(usage, "estimated").as_bool().unwrap())
}

/// Runs one streaming call, collecting the text of its `chat.chunk` deltas (`seq` order checked
/// over every chunk; reasoning and tool-call chunks are counted, not collected).
async fn stream_call(
    c: &Client,
    notes: &mut UnboundedReceiver<Notification>,
    p: Vec<Value>,
) -> (Result<Value, ClientError>, Vec<String>) {
    let (id, rx) = c.start("chat", p).await.unwrap();
    let mut deltas = Vec::new();
    let mut seq = 0u64;
    let resp = Client::finish(id, rx);
    tokio::pin!(resp);
    let mut take = |(method, p): Notification, deltas: &mut Vec<String>| {
        assert_eq!(method, "chat.chunk");
        assert_eq!(p[0].as_u64(), Some(u64::from(id)));
        assert_eq!(field(&p[1], "seq").as_u64(), Some(seq));
        seq += 1;
        if let Some(text) = llm_sidecar::rpc::client::field(&p[1], "delta") {
            deltas.push(text.as_str().unwrap().to_string());
        } else {
            let other = ["reasoning_delta", "tool_call"];
            assert!(other.iter().any(|k| llm_sidecar::rpc::client::field(&p[1], k).is_some()), "{}", p[1]);
        }
    };
    let result = loop {
        tokio::select! {
            biased;
            Some(n) = notes.recv() => take(n, &mut deltas),
            r = &mut resp => break r,
        }
    };
    while let Ok(n) = notes.try_recv() {
        take(n, &mut deltas);
    }
    (result, deltas)
}

fn attempts(v: &Value) -> Vec<(String, String, Option<u64>)> {
    field(v, "attempts")
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                field(a, "provider").as_str().unwrap().to_string(),
                field(a, "outcome").as_str().unwrap().to_string(),
                field(a, "status").as_u64(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_adapter_streaming_and_not_with_exact_usage() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, None, "", ""));
    let c = d.client().await;
    let mut notes = c.take_notifications().unwrap();
    for model in ["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5", "gemini/gemini-2.5-flash", "local/phi3"] {
        let r = c.call("chat", chat_params(model, false)).await.unwrap_or_else(|e| panic!("{model}: {e}"));
        assert_eq!(field(&r, "content").as_str(), Some(REPLY), "{model}");
        assert_eq!(usage_of(&r), (USAGE_IN, USAGE_OUT, 0, 0, false), "{model}");
        assert_eq!(field(&r, "provider").as_str(), model.split('/').next());

        let (r, deltas) = stream_call(&c, &mut notes, chat_params(model, true)).await;
        let r = r.unwrap_or_else(|e| panic!("{model} stream: {e}"));
        assert_eq!(deltas.concat(), REPLY, "{model}");
        assert!(deltas.len() >= 4, "{model}: {deltas:?}");
        assert_eq!(field(&r, "content").as_str(), Some(REPLY));
        assert_eq!(usage_of(&r), (USAGE_IN, USAGE_OUT, 0, 0, false), "{model} stream");
        assert!(field(&r, "ttft_ms").as_u64().unwrap() <= field(&r, "latency_ms").as_u64().unwrap());
    }
    // gpt-4o-mini at $0.15/$0.60 per 1M: 12*0.15 + 7*0.6 = 6.0 micro-dollars.
    let r = c.call("chat", chat_params("openai/gpt-4o-mini", false)).await.unwrap();
    assert_eq!(field(&r, "cost_microusd").as_i64(), Some(6));
    // The key went where each wire format wants it, and nowhere else.
    let seen = mock.seen();
    let bearer = format!("Bearer {KEY}");
    for s in &seen {
        match s.path.as_str() {
            "/v1/chat/completions" => assert_eq!(s.authorization.as_deref(), Some(bearer.as_str())),
            "/v1/messages" => {
                assert_eq!(s.x_api_key.as_deref(), Some(KEY));
                assert_eq!(s.anthropic_version.as_deref(), Some("2023-06-01"));
                assert!(s.authorization.is_none());
            }
            "/api/chat" => assert!(s.authorization.is_none() && s.x_api_key.is_none()),
            p => {
                assert!(p.starts_with("/v1beta/models/gemini-2.5-flash:"), "{p}");
                assert_eq!(s.x_goog_api_key.as_deref(), Some(KEY));
            }
        }
    }
    let openai_stream = seen.iter().find(|s| s.path == "/v1/chat/completions" && s.body["stream"] == true).unwrap();
    assert_eq!(openai_stream.body["stream_options"]["include_usage"], true);
    assert!(!d.logs().contains(KEY));
}

/// (fixture, model, expected text, expected (input, output, cached, reasoning))
type FixtureCase = (&'static str, &'static str, Option<&'static str>, (u64, u64, u64, u64));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_fixtures_replayed_through_the_daemon() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, None, "", ""));
    let c = d.client().await;
    let mut notes = c.take_notifications().unwrap();
    // (fixture, model, text, (in, out, cached, reasoning))
    let cases: &[FixtureCase] = &[
        ("openai_chat_stream_usage.sse", "openai/gpt-4o-mini", Some("The capital of the UK is London."), (78, 9, 0, 0)),
        ("openrouter_chat_stream_usage_cost.sse", "openai/x", Some("Hello!"), (254, 5, 0, 0)),
        ("deepseek_chat_stream_usage.sse", "openai/deepseek-reasoner", None, (6, 212, 0, 198)),
        ("groq_chat_stream_x_groq.sse", "openai/gpt-oss-120b", Some(""), (304, 49, 0, 23)),
        ("anthropic_messages_stream.sse", "anthropic/claude-sonnet-4-5", Some("2"), (20, 5, 0, 0)),
        ("anthropic_messages_stream_legacy_usage.sse", "anthropic/claude-3-opus", Some("Hello there!"), (11, 6, 0, 0)),
        (
            "anthropic_messages_stream_cache_compaction.sse",
            "anthropic/claude-sonnet-4-6",
            Some("Hello! \u{1F44B}"),
            (55_377, 91, 55_096, 0),
        ),
        ("gemini_stream.sse", "gemini/gemini-2.5-flash", None, (18, 115, 0, 35)),
        ("ollama_chat_stream.ndjson", "local/phi3", Some(" these times of day."), (10, 239, 0, 0)),
    ];
    for (fixture, model, text, usage) in cases {
        mock.push([Fault::Fixture(fixture)]);
        let (r, deltas) = stream_call(&c, &mut notes, chat_params(model, true)).await;
        let r = r.unwrap_or_else(|e| panic!("{fixture}: {e}"));
        let (i, o, ca, re, est) = usage_of(&r);
        assert_eq!((i, o, ca, re), *usage, "{fixture}");
        assert!(!est, "{fixture}");
        assert_eq!(deltas.concat(), field(&r, "content").as_str().unwrap(), "{fixture}");
        if let Some(t) = text {
            assert_eq!(field(&r, "content").as_str(), Some(*t), "{fixture}");
        }
    }
    // Sonnet 4.5 pricing applies to the dated model the fixture reports: 20*3 + 5*15 = 135 µ$.
    mock.push([Fault::Fixture("anthropic_messages_stream.sse")]);
    let (r, _) = stream_call(&c, &mut notes, chat_params("anthropic/claude-sonnet-4-5", true)).await;
    assert_eq!(field(&r.unwrap(), "cost_microusd").as_i64(), Some(135));

    // An error inside a 200 stream, with usage: a request error, so no retry and no fallback,
    // and the reported usage is kept.
    mock.push([Fault::Fixture("openrouter_chat_stream_midstream_error.sse")]);
    let before = mock.requests();
    let (r, deltas) = stream_call(&c, &mut notes, chat_params("openai/minimax", true)).await;
    let e = rpc_err(r);
    assert_eq!(e.code, ErrorCode::ProviderError);
    assert!(e.message.contains("Token limit reached"), "{}", e.message);
    assert_eq!(e.data_field("status").and_then(Value::as_u64), Some(400));
    assert!(deltas.is_empty());
    assert_eq!(mock.requests(), before + 1);
    let usage = e.data_field("usage").unwrap();
    assert_eq!(
        (u(&Value::Map(vec![(Value::from("usage"), usage.clone())]), "input"), field(usage, "output").as_u64()),
        (43, Some(10))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_faults_are_retried_and_reported() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, None, "first_byte_timeout_ms = 400\nmax_retries = 3", ""));
    let c = d.client().await;
    let mut notes = c.take_notifications().unwrap();
    let overloaded = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#.to_string();
    mock.push([
        Fault::Status {
            status: 500,
            headers: vec![],
            body: r#"{"error":{"message":"boom","type":"server_error"}}"#.into(),
        },
        Fault::Hang,
        Fault::MalformedChunk,
    ]);
    let (r, deltas) = stream_call(&c, &mut notes, chat_params("openai/gpt-4o-mini", true)).await;
    let r = r.unwrap();
    assert_eq!(deltas.concat(), REPLY);
    let got: Vec<String> = attempts(&r).into_iter().map(|a| a.1).collect();
    assert_eq!(got, ["server_error", "timeout", "malformed", "ok"]);
    // Anthropic 529 overloaded, then a slow (but in time) first byte.
    mock.push([
        Fault::Status { status: 529, headers: vec![], body: overloaded },
        Fault::SlowFirstByte(Duration::from_millis(150)),
    ]);
    let r = c.call("chat", chat_params("anthropic/claude-haiku-4-5", false)).await.unwrap();
    assert_eq!(
        attempts(&r).iter().map(|a| (a.1.as_str(), a.2)).collect::<Vec<_>>(),
        [("server_error", Some(529)), ("ok", None)]
    );
    assert!(field(&r, "latency_ms").as_u64().unwrap() >= 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_within_bounds() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, None, "", ""));
    let c = d.client().await;
    for (headers, wait_ms) in [
        (vec![("retry-after", "1".to_string())], 1000u64),
        (vec![("retry-after-ms", "300".to_string()), ("retry-after", "9".to_string())], 300),
    ] {
        let before = mock.seen().len();
        mock.push([Fault::Status {
            status: 429,
            headers,
            body: r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#.into(),
        }]);
        let t0 = Instant::now();
        let r = c.call("chat", chat_params("openai/gpt-4o-mini", false)).await.unwrap();
        let took = t0.elapsed();
        let seen = mock.seen();
        assert_eq!(seen.len(), before + 2);
        let gap = seen[before + 1].at.duration_since(seen[before].at);
        assert!(gap >= Duration::from_millis(wait_ms), "retried after {gap:?}, wanted {wait_ms} ms");
        assert!(gap < Duration::from_millis(wait_ms + 700), "retried after {gap:?}, wanted about {wait_ms} ms");
        assert!(took < Duration::from_millis(wait_ms + 1500), "{took:?}");
        assert_eq!(
            attempts(&r).iter().map(|a| (a.1.as_str(), a.2)).collect::<Vec<_>>(),
            [("rate_limited", Some(429)), ("ok", None)]
        );
    }
    // A Retry-After beyond the router's limit falls back (here: no other target) instead of waiting.
    mock.push([Fault::Status { status: 429, headers: vec![("retry-after", "120".into())], body: "{}".into() }]);
    let t0 = Instant::now();
    let e = rpc_err(c.call("chat", chat_params("openai/gpt-4o-mini", false)).await);
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(e.code, ErrorCode::ProviderError);
    assert_eq!(e.data_field("status").and_then(Value::as_u64), Some(429));
    assert_eq!(e.data_field("provider").and_then(Value::as_str), Some("openai"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_order_auth_and_request_errors() {
    let primary = Mock::start().await;
    let backup = Mock::start().await;
    let routes = "[routes.smart]\ntargets = [\"openai/gpt-4o-mini\", \"backup/gpt-4o-mini\"]\n[routes.fast]\ntargets = [\"gemini/gemini-2.5-flash\", \"backup/gpt-4o-mini\"]\n";
    let d = start(&config(&primary, Some(&backup), "max_retries = 1\ncooldown_failures = 100", routes));
    let c = d.client().await;

    // Retryable failures: the target is retried (max_retries), then the next one answers.
    primary.set_default(Some(Fault::Status { status: 503, headers: vec![], body: "{}".into() }));
    let r = c.call("chat", chat_params("smart", false)).await.unwrap();
    assert_eq!(field(&r, "provider").as_str(), Some("backup"));
    let got: Vec<(String, String)> = attempts(&r).into_iter().map(|a| (a.0, a.1)).collect();
    let want = [("openai", "server_error"), ("openai", "server_error"), ("backup", "ok")];
    assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
    assert_eq!((primary.requests(), backup.requests()), (2, 1));

    // 401: the key is reported invalid and the next target is tried at once; the provider's
    // echo of the key is redacted.
    let echo = format!(
        r#"{{"error":{{"message":"Incorrect API key provided: {KEY}","type":"invalid_request_error","code":"invalid_api_key"}}}}"#
    );
    primary.set_default(Some(Fault::Status { status: 401, headers: vec![], body: echo.clone() }));
    let r = c.call("chat", chat_params("smart", false)).await.unwrap();
    let got: Vec<(String, String)> = attempts(&r).into_iter().map(|a| (a.0, a.1)).collect();
    assert_eq!(got[0], ("openai".to_string(), "key_invalid".to_string()));
    assert_eq!(got.len(), 2);
    let e = rpc_err(c.call("chat", chat_params("openai/gpt-4o-mini", false)).await);
    assert_eq!(e.code, ErrorCode::ProviderError);
    assert!(!format!("{e:?}").contains(KEY), "{e:?}");
    assert!(e.message.contains("[redacted]"), "{}", e.message);

    // 400: fails the same everywhere, so no fallback.
    let before = backup.requests();
    primary.set_default(Some(Fault::Status {
        status: 400,
        headers: vec![],
        body: r#"{"error":{"message":"max_tokens is too large","type":"invalid_request_error"}}"#.into(),
    }));
    let e = rpc_err(c.call("chat", chat_params("smart", false)).await);
    assert_eq!(e.code, ErrorCode::ProviderError);
    assert_eq!(e.data_field("status").and_then(Value::as_u64), Some(400));
    assert_eq!(e.data_field("provider").and_then(Value::as_str), Some("openai"));
    assert_eq!(backup.requests(), before);
    assert!(e.data_field("attempts").and_then(Value::as_array).is_some_and(|a| a.len() == 1));

    // Gemini's 429 with RetryInfo 34.4 s in the body is beyond max_retry_after: fall back now.
    primary.set_default(Some(Fault::Status {
        status: 429,
        headers: vec![],
        body: String::from_utf8(mock_provider::fixture("gemini_error_429_retryinfo.json")).unwrap(),
    }));
    let t0 = Instant::now();
    let r = c.call("chat", chat_params("fast", false)).await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(field(&r, "provider").as_str(), Some("backup"));
    assert_eq!(attempts(&r)[0].2, Some(429));
    assert!(!d.logs().contains(KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldown_skips_a_failing_target() {
    let primary = Mock::start().await;
    let backup = Mock::start().await;
    let routes = "[routes.smart]\ntargets = [\"openai/gpt-4o-mini\", \"backup/gpt-4o-mini\"]\n";
    let d =
        start(&config(&primary, Some(&backup), "max_retries = 0\ncooldown_failures = 2\ncooldown_secs = 60", routes));
    let c = d.client().await;
    primary.set_default(Some(Fault::Status { status: 500, headers: vec![], body: "{}".into() }));
    for _ in 0..2 {
        c.call("chat", chat_params("smart", false)).await.unwrap();
    }
    assert_eq!(primary.requests(), 2);
    let r = c.call("chat", chat_params("smart", false)).await.unwrap();
    assert_eq!(primary.requests(), 2, "cooled-down target must be skipped");
    assert_eq!(attempts(&r)[0].1, "cooldown");
    assert_eq!(field(&r, "provider").as_str(), Some("backup"));
    // daemon.info reports the cooled-down target.
    let info = c.call("daemon.info", vec![]).await.unwrap();
    let unhealthy = field(&info, "providers").as_array().unwrap();
    assert_eq!(unhealthy.len(), 1, "{info}");
    assert_eq!(field(&unhealthy[0], "target").as_str(), Some("openai/gpt-4o-mini"));
    assert!(field(&unhealthy[0], "cooldown_remaining_ms").as_u64().unwrap() > 50_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_fallback_after_the_first_chunk() {
    let primary = Mock::start().await;
    let backup = Mock::start().await;
    let routes = "[routes.smart]\ntargets = [\"openai/gpt-4o-mini\", \"backup/gpt-4o-mini\"]\n";
    let d = start(&config(&primary, Some(&backup), "", routes));
    let c = d.client().await;
    let mut notes = c.take_notifications().unwrap();
    primary.push([Fault::ResetAfter(2)]);
    let (r, deltas) = stream_call(&c, &mut notes, chat_params("smart", true)).await;
    let e = rpc_err(r);
    assert_eq!(e.code, ErrorCode::ProviderError);
    assert_eq!(deltas, ["Hello ", "from "]);
    assert_eq!(e.data_field("after_first_chunk").and_then(Value::as_bool), Some(true));
    assert_eq!(e.data_field("provider").and_then(Value::as_str), Some("openai"));
    assert_eq!(e.data_field("content").and_then(Value::as_str), Some("Hello from "));
    let usage = e.data_field("usage").unwrap();
    // Estimated: ceil(9 prompt chars / 4) = 3 in, ceil(11 chars / 4) = 3 out.
    assert_eq!(field(usage, "estimated").as_bool(), Some(true));
    assert_eq!((field(usage, "input").as_u64(), field(usage, "output").as_u64()), (Some(3), Some(3)));
    assert_eq!(backup.requests(), 0);
    assert_eq!(primary.requests(), 1);

    // Before the first chunk, the same failure is retried, then falls back.
    primary.set_default(Some(Fault::ResetAfter(0)));
    let (r, deltas) = stream_call(&c, &mut notes, chat_params("smart", true)).await;
    let r = r.unwrap();
    assert_eq!(deltas.concat(), REPLY);
    let got: Vec<(String, String)> = attempts(&r).into_iter().map(|a| (a.0, a.1)).collect();
    let want =
        [("openai", "connection_lost"), ("openai", "connection_lost"), ("openai", "connection_lost"), ("backup", "ok")];
    assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
    assert_eq!(field(&r, "provider").as_str(), Some("backup"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_closes_the_upstream_connection_and_bills_usage_so_far() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, None, "", ""));
    let c = d.client().await;
    let mut notes = c.take_notifications().unwrap();
    for (i, model) in ["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5", "gemini/gemini-2.5-flash"].iter().enumerate()
    {
        mock.push([Fault::Slow { every: Duration::from_millis(40), chunks: 500 }]);
        let (id, rx) = c.start("chat", chat_params(model, true)).await.unwrap();
        let mut got = 0;
        while got < 3 {
            let (_, p) = notes.recv().await.unwrap();
            assert_eq!(p[0].as_u64(), Some(u64::from(id)));
            got += 1;
        }
        let t0 = Instant::now();
        if i % 2 == 0 {
            c.cancel(id).await.unwrap();
        } else {
            let r = c.call("chat.cancel", params(&[("id", id.into())])).await.unwrap();
            assert_eq!(field(&r, "cancelled").as_bool(), Some(true));
        }
        let e = rpc_err(Client::finish(id, rx).await);
        assert_eq!(e.code, ErrorCode::Cancelled, "{model}");
        let usage = e.data_field("usage").unwrap();
        assert!(field(usage, "output").as_u64().unwrap() >= 1, "{model}: {usage}");
        assert!(field(usage, "input").as_u64().unwrap() >= 1, "{model}: {usage}");
        // The mock sees its body dropped (connection closed) promptly.
        while mock.disconnects() < i + 1 {
            assert!(t0.elapsed() < Duration::from_secs(3), "{model}: upstream not closed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        while notes.try_recv().is_ok() {}
    }
    let r = c.call("chat.cancel", params(&[("id", 9999.into())])).await.unwrap();
    assert_eq!(field(&r, "cancelled").as_bool(), Some(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_for_bad_requests_and_missing_keys() {
    let mock = Mock::start().await;
    let d = Daemon::start_with(&config(&mock, None, "", ""), &[]); // no MOCK_KEY
    let c = d.client().await;
    let e = rpc_err(c.call("chat", chat_params("openai/gpt-4o-mini", false)).await);
    assert_eq!(e.code, ErrorCode::KeyMissing);
    assert_eq!(e.data_field("provider").and_then(Value::as_str), Some("openai"));
    assert_eq!(mock.requests(), 0);
    // Keyless local providers need none.
    let r = c.call("chat", chat_params("local/phi3", false)).await.unwrap();
    assert_eq!(field(&r, "content").as_str(), Some(REPLY));
    let e = rpc_err(c.call("chat", chat_params("nosuch-model", false)).await);
    assert_eq!(e.code, ErrorCode::InvalidParams);
    let e =
        rpc_err(c.call("chat", params(&[("model", "local/phi3".into()), ("messages", Value::Array(vec![]))])).await);
    assert_eq!(e.code, ErrorCode::InvalidParams);
    let bad_role =
        Value::Map(vec![(Value::from("role"), Value::from("tool")), (Value::from("content"), Value::from("x"))]);
    let e = rpc_err(
        c.call("chat", params(&[("model", "local/phi3".into()), ("messages", Value::Array(vec![bad_role]))])).await,
    );
    assert_eq!(e.code, ErrorCode::InvalidParams);
    let e = rpc_err(c.call("chat", vec![Value::from(3)]).await);
    assert_eq!(e.code, ErrorCode::InvalidParams);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_list_shows_prices_keys_and_routes() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, None, "", "[routes.fast]\ntargets = [\"openai/gpt-4o-mini\"]\n"));
    let c = d.client().await;
    let r = c.call("models.list", vec![]).await.unwrap();
    let providers = field(&r, "providers").as_array().unwrap();
    let find = |n: &str| providers.iter().find(|p| field(p, "name").as_str() == Some(n)).unwrap();
    assert_eq!(field(find("openai"), "key_present").as_bool(), Some(true));
    assert_eq!(field(find("local"), "key_present").as_bool(), Some(true));
    let mini = field(find("openai"), "models")
        .as_array()
        .unwrap()
        .iter()
        .find(|m| field(m, "id").as_str() == Some("gpt-4o-mini"))
        .unwrap();
    assert_eq!(field(field(mini, "price"), "input").as_i64(), Some(150_000));
    assert_eq!(field(field(mini, "price"), "output").as_i64(), Some(600_000));
    let routes = field(&r, "routes").as_array().unwrap();
    assert_eq!(field(&routes[0], "name").as_str(), Some("fast"));
    let r = c.call("models.list", params(&[("provider", "gemini".into())])).await.unwrap();
    assert_eq!(field(&r, "providers").as_array().unwrap().len(), 1);
    assert!(!format!("{r:?}").contains(KEY));
}

/// Threads of `pid` that are tokio pool workers.
fn pool_workers(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter(|t| {
            let comm = std::fs::read_to_string(t.as_ref().unwrap().path().join("comm")).unwrap_or_default();
            comm.trim() == "tokio-rt-worker"
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_streams() {
    // The daemon's async work runs on its main thread: no pool.
    let d = concurrent_streams(&[]).await;
    assert_eq!(pool_workers(d.pid()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_streams_on_a_pool_of_worker_threads() {
    let d = concurrent_streams(&[("LLM_SIDECAR_WORKER_THREADS", "3")]).await;
    assert_eq!(pool_workers(d.pid()), 3);
}

/// 200 streamed calls, 20 at a time on each of 10 connections, over the four adapters, on a
/// daemon started with `env`: each gets its whole text, in chunks and in the result, and its usage.
async fn concurrent_streams(env: &[(&str, &str)]) -> Daemon {
    let mock = Mock::start().await;
    let mut env = env.to_vec();
    env.push(("MOCK_KEY", KEY));
    let d = Daemon::start_with(&config(&mock, None, "", ""), &env);
    let models = ["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5", "gemini/gemini-2.5-flash", "local/phi3"];
    let mut tasks = Vec::new();
    for conn in 0..10 {
        let c = d.client().await;
        tasks.push(tokio::spawn(async move {
            let c = std::sync::Arc::new(c);
            let mut notes = c.take_notifications().unwrap();
            // Demultiplex chunks of 20 concurrent calls on this connection by msgid.
            let (tx, mut done) = tokio::sync::mpsc::unbounded_channel();
            let mut calls = Vec::new();
            for i in 0..20 {
                let c = c.clone();
                let tx = tx.clone();
                let model = models[(conn + i) % models.len()];
                calls.push(tokio::spawn(async move {
                    let (id, rx) = c.start("chat", chat_params(model, true)).await.unwrap();
                    let r = Client::finish(id, rx).await;
                    tx.send(id).unwrap();
                    (id, model, r)
                }));
            }
            drop(tx);
            let mut chunks: std::collections::HashMap<u32, String> = std::collections::HashMap::new();
            let mut finished = 0;
            while finished < 20 {
                tokio::select! {
                    biased;
                    Some((_, p)) = notes.recv() => {
                        let id = p[0].as_u64().unwrap() as u32;
                        chunks.entry(id).or_default().push_str(field(&p[1], "delta").as_str().unwrap());
                    }
                    Some(_) = done.recv() => finished += 1,
                }
            }
            while let Ok((_, p)) = notes.try_recv() {
                let id = p[0].as_u64().unwrap() as u32;
                chunks.entry(id).or_default().push_str(field(&p[1], "delta").as_str().unwrap());
            }
            let mut ok = 0;
            for call in calls {
                let (id, model, r) = call.await.unwrap();
                let r = r.unwrap_or_else(|e| panic!("{model}: {e}"));
                assert_eq!(field(&r, "content").as_str(), Some(REPLY));
                assert_eq!(chunks.get(&id).map(String::as_str), Some(REPLY), "{model} chunks");
                assert_eq!(usage_of(&r), (USAGE_IN, USAGE_OUT, 0, 0, false));
                ok += 1;
            }
            ok
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 200);
    assert_eq!(mock.requests(), 200);
    assert!(!d.logs().contains(KEY));
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_chat_streams_prints_usage_and_ctrl_c_cancels() {
    use std::io::Read;
    let mock = Mock::start().await;
    let d = start(&config(&mock, None, "", ""));
    let (sock, dir) = (d.socket.clone(), d.dir.path().to_path_buf());
    let cli = move || {
        let mut cmd = common::command(&dir);
        cmd.arg("--socket").arg(&sock).args(["chat", "--model", "openai/gpt-4o-mini", "Say", "hello"]);
        cmd
    };
    let run = cli.clone();
    let out = tokio::task::spawn_blocking(move || run().output().unwrap()).await.unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, format!("{REPLY}\n"));
    assert!(stderr.contains("openai/gpt-4o-mini"), "{stderr}");
    assert!(stderr.contains("12 in / 7 out · $0.000006"), "{stderr}");
    assert_eq!(mock.seen().last().unwrap().body["messages"][0]["content"], "Say hello");

    // Ctrl-C while streaming: $/cancel, the upstream request is closed, usage so far printed.
    mock.push([Fault::Slow { every: Duration::from_millis(40), chunks: 500 }]);
    let run = cli;
    let out = tokio::task::spawn_blocking(move || {
        let mut child =
            run().stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut first = [0u8; 8];
        let n = stdout.read(&mut first).unwrap();
        assert!(n > 0);
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
        let mut rest = Vec::new();
        stdout.read_to_end(&mut rest).unwrap();
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        (child.wait().unwrap(), stderr)
    })
    .await
    .unwrap();
    assert_eq!(out.0.code(), Some(130), "{}", out.1);
    assert!(out.1.contains("cancelled; openai/"), "{}", out.1);
    assert!(out.1.contains("(estimated)"), "{}", out.1);
    let t0 = Instant::now();
    while mock.disconnects() < 1 {
        assert!(t0.elapsed() < Duration::from_secs(3), "upstream not closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn estimated_usage_when_the_provider_reports_none_and_optional_params() {
    let mock = Mock::start().await;
    let extra = format!(
        "[providers.oldserver]\nadapter = \"openai\"\nbase_url = \"{}/v1\"\nstream_usage = false\n",
        mock.url()
    );
    let d = start(&config(&mock, None, "", &extra));
    let c = d.client().await;
    let mut notes = c.take_notifications().unwrap();
    let (r, deltas) = stream_call(&c, &mut notes, chat_params("oldserver/some-model", true)).await;
    let r = r.unwrap();
    assert_eq!(deltas.concat(), REPLY);
    // ceil(len("Say hello") / 4) = 3; ceil(len(REPLY) = 29 / 4) = 8.
    assert_eq!(usage_of(&r), (3, 8, 0, 0, true));
    assert_eq!(field(&r, "cost_microusd").as_i64(), Some(0));
    let seen = mock.seen();
    assert!(seen[0].body.get("stream_options").is_none());
    assert!(seen[0].authorization.is_none(), "keyless custom provider sends no key");

    // stop as a string, system, max_tokens, temperature and metadata reach the wire correctly.
    let msg = Value::Map(vec![(Value::from("role"), Value::from("user")), (Value::from("content"), Value::from("hi"))]);
    let meta = Value::Map(vec![(Value::from("trace"), Value::from("abc"))]);
    let p = params(&[
        ("model", "anthropic/claude-haiku-4-5".into()),
        ("messages", Value::Array(vec![msg])),
        ("system", "be brief".into()),
        ("max_tokens", 64.into()),
        ("temperature", 0.5.into()),
        ("stop", "\n\n".into()),
        ("metadata", meta),
    ]);
    c.call("chat", p).await.unwrap();
    let body = &mock.seen()[1].body;
    assert_eq!(body["system"], "be brief");
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(body["stop_sequences"], serde_json::json!(["\n\n"]));
    assert!(body.get("metadata").is_none());
}

/// Keys stored in the vault (BYOK) are used before the platform key, in the user's order; a key
/// the provider rejects is marked invalid and the next one is tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_keys_are_used_in_order_and_rejected_ones_marked_invalid() {
    let mock = Mock::start().await;
    let d = Daemon::start_with(&config(&mock, None, "", ""), &[]); // no platform key
    let c = d.client().await;
    let set = |label: &str, secret: &str| {
        params(&[("provider", "openai".into()), ("label", label.into()), ("secret", secret.into())])
    };
    let first = c.call("keys.set", set("first", "sk-byok-first-REJECTED-000")).await.unwrap();
    c.call("keys.set", set("second", "sk-byok-second-GOOD-1111")).await.unwrap();
    mock.push([Fault::Status { status: 401, headers: vec![], body: r#"{"error":{"message":"bad key"}}"#.into() }]);
    let r = c.call("chat", chat_params("openai/gpt-4o-mini", false)).await.unwrap();
    assert_eq!(field(&r, "content").as_str(), Some(REPLY));
    let auths: Vec<String> = mock.seen().iter().filter_map(|s| s.authorization.clone()).collect();
    assert_eq!(auths, ["Bearer sk-byok-first-REJECTED-000", "Bearer sk-byok-second-GOOD-1111"]);
    let list = c.call("keys.list", vec![]).await.unwrap();
    let keys = field(&list, "keys").as_array().unwrap();
    let status_of = |id: &Value| {
        keys.iter().find(|k| field(k, "id") == id).map(|k| field(k, "status").as_str().unwrap().to_string()).unwrap()
    };
    assert_eq!(status_of(field(field(&first, "key"), "id")), "invalid");
    // The rejected key is skipped from now on.
    c.call("chat", chat_params("openai/gpt-4o-mini", false)).await.unwrap();
    assert_eq!(mock.seen().last().unwrap().authorization.as_deref(), Some("Bearer sk-byok-second-GOOD-1111"));
    let logs = d.logs();
    assert!(!logs.contains("sk-byok-first") && !logs.contains("sk-byok-second"), "a key leaked into the log");
}

/// Every chat leaves exactly one durable usage record with the numbers the app was told,
/// including a cancelled stream (billed so far) — read back over the socket after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_usage_is_recorded_durably_before_the_answer() {
    let mock = Mock::start().await;
    let mut d = start(&config(&mock, None, "", ""));
    let c = d.client().await;
    c.call("daemon.hello", params(&[("app", "recorder-test".into())])).await.unwrap();
    let r = c.call("chat", chat_params("openai/gpt-4o-mini", false)).await.unwrap();
    let cost = field(&r, "cost_microusd").as_i64().unwrap();
    d.kill9(); // acknowledged answers must survive a crash
    d.spawn();
    let c = d.client().await;
    let page = c.call("usage.records", vec![]).await.unwrap();
    let records = field(&page, "records").as_array().unwrap();
    assert_eq!(records.len(), 1, "{page}");
    let rec = &records[0];
    assert_eq!(field(rec, "app").as_str(), Some("recorder-test"));
    assert_eq!(field(rec, "provider").as_str(), Some("openai"));
    assert_eq!(field(rec, "key_source").as_str(), Some("platform"));
    assert_eq!(field(rec, "input_tokens").as_u64(), Some(USAGE_IN));
    assert_eq!(field(rec, "output_tokens").as_u64(), Some(USAGE_OUT));
    assert_eq!(field(rec, "cost_microusd").as_i64(), Some(cost));
    assert_eq!(field(rec, "status").as_str(), Some("ok"));
    assert!(!format!("{page:?}").contains(KEY));
}

/// Prices for the billing tests, in USD per million tokens (= micro-dollars per token).
const TEST_PRICES: &str = r#"
[pricing.models."anthropic/claude-haiku-4-5"]
input = 1.0
output = 5.0
cached = 0.1
cache_write = 1.25
[pricing.models."openai/gpt-4o-mini"]
input = 1.0
output = 4.0
[pricing.models."backup/gpt-4o-mini"]
input = 2.0
output = 8.0
"#;

/// `usage.records`, oldest first.
async fn records_oldest_first(c: &Client) -> Vec<Value> {
    let mut all = all_records(c).await;
    all.reverse();
    all
}

/// The fields of a usage record the billing tests check.
#[derive(Debug, Clone, PartialEq)]
struct Billed {
    provider: String,
    model: String,
    status: String,
    error_code: Option<String>,
    /// input, output, cached, cache_write, reasoning
    tokens: [u64; 5],
    estimated: bool,
    cost: i64,
    attempts: u64,
}

impl Billed {
    fn of(rec: &Value) -> Billed {
        let n = |k: &str| field(rec, k).as_u64().unwrap();
        Billed {
            provider: field(rec, "provider").as_str().unwrap().to_string(),
            model: field(rec, "model").as_str().unwrap().to_string(),
            status: field(rec, "status").as_str().unwrap().to_string(),
            error_code: field(rec, "error_code").as_str().map(str::to_string),
            tokens: [
                n("input_tokens"),
                n("output_tokens"),
                n("cached_tokens"),
                n("cache_write_tokens"),
                n("reasoning_tokens"),
            ],
            estimated: field(rec, "usage_estimated").as_bool().unwrap(),
            cost: field(rec, "cost_microusd").as_i64().unwrap(),
            attempts: n("attempts"),
        }
    }

    /// The answer's record: the mock's exact usage.
    fn ok(provider: &str, model: &str, cost: i64, attempts: u64) -> Billed {
        Billed {
            provider: provider.into(),
            model: model.into(),
            status: "ok".into(),
            error_code: None,
            tokens: [USAGE_IN, USAGE_OUT, 0, 0, 0],
            estimated: false,
            cost,
            attempts,
        }
    }

    /// A billed failed attempt's record.
    fn failed(provider: &str, model: &str, error_code: &str, tokens: [u64; 5], estimated: bool, cost: i64) -> Billed {
        Billed {
            provider: provider.into(),
            model: model.into(),
            status: "error".into(),
            error_code: Some(error_code.into()),
            tokens,
            estimated,
            cost,
            attempts: 1,
        }
    }
}

/// An attempt's own bill: [input, output, cached, cache_write, reasoning], estimated, cost.
type AttemptBill = ([u64; 5], bool, i64);

/// An attempt's own `usage` ([input, output, cached, cache_write, reasoning], estimated) and
/// `cost_microusd`, when it was billed on its own record.
fn attempt_bill(a: &Value) -> Option<AttemptBill> {
    let usage = llm_sidecar::rpc::client::field(a, "usage")?;
    let n = |k: &str| field(usage, k).as_u64().unwrap();
    Some((
        [n("input"), n("output"), n("cached"), n("cache_write"), n("reasoning")],
        field(usage, "estimated").as_bool().unwrap(),
        field(a, "cost_microusd").as_i64().unwrap(),
    ))
}

fn attempt_bills(v: &Value) -> Vec<(String, Option<AttemptBill>)> {
    field(v, "attempts")
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (field(a, "outcome").as_str().unwrap().to_string(), attempt_bill(a)))
        .collect()
}

fn summary_totals(s: &Value) -> (u64, u64, u64, u64, u64, u64, i64) {
    let t = field(s, "totals");
    let n = |k: &str| field(t, k).as_u64().unwrap();
    (
        n("requests"),
        n("failed"),
        n("input_tokens"),
        n("output_tokens"),
        n("cached_tokens"),
        n("cache_write_tokens"),
        field(t, "cost_microusd").as_i64().unwrap(),
    )
}

async fn month_summary(c: &Client) -> Value {
    c.call("usage.summary", params(&[("period", "month".into()), ("group_by", "provider".into())])).await.unwrap()
}

/// A failed attempt whose provider reported usage (Anthropic `message_start` then an
/// `overloaded_error` event; an OpenAI usage chunk then a reset) gets its own `error` record with
/// exactly those tokens and their cost, next to the answer's record; the `chat` result shows it
/// on the attempt. When every target fails, only those records are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billed_failed_attempts_get_their_own_records() {
    let primary = Mock::start().await;
    let backup = Mock::start().await;
    let routes = "[routes.smart]\ntargets = [\"openai/gpt-4o-mini\", \"backup/gpt-4o-mini\"]\n";
    let d = start(&config(
        &primary,
        Some(&backup),
        "max_retries = 1\ncooldown_failures = 100",
        &format!("{routes}{TEST_PRICES}"),
    ));
    let c = d.client().await;
    c.call("daemon.hello", params(&[("app", "billing-test".into())])).await.unwrap();
    let mut notes = c.take_notifications().unwrap();

    // Anthropic: 12 uncached + 200 cache reads + 40 cache writes reported, then overloaded; the
    // retry answers. Failed attempt: 12×1 + 200×0.1 + 40×1.25 = 82 µ$; answer: 12×1 + 7×5 = 47 µ$.
    primary.push([Fault::StartThenError { cache_read: 200, cache_write: 40, error_type: "overloaded_error" }]);
    let (r, deltas) = stream_call(&c, &mut notes, chat_params("anthropic/claude-haiku-4-5", true)).await;
    let r = r.unwrap();
    assert_eq!(deltas.concat(), REPLY);
    assert_eq!(usage_of(&r), (USAGE_IN, USAGE_OUT, 0, 0, false), "top-level usage is the answer's");
    assert_eq!(field(&r, "cost_microusd").as_i64(), Some(47));
    assert_eq!(
        attempts(&r).iter().map(|a| (a.1.as_str(), a.2)).collect::<Vec<_>>(),
        [("stream_error", Some(529)), ("ok", None)]
    );
    assert_eq!(
        attempt_bills(&r),
        [("stream_error".to_string(), Some(([252, 0, 200, 40, 0], true, 82))), ("ok".to_string(), None)]
    );
    let recs = records_oldest_first(&c).await;
    let haiku = "claude-haiku-4-5";
    assert_eq!(
        recs.iter().map(Billed::of).collect::<Vec<_>>(),
        [
            Billed::failed("anthropic", haiku, "stream_error", [252, 0, 200, 40, 0], true, 82),
            Billed::ok("anthropic", haiku, 47, 2),
        ]
    );
    for r in &recs {
        assert_eq!(field(r, "app").as_str(), Some("billing-test"));
        assert_eq!(field(r, "route").as_str(), Some("anthropic/claude-haiku-4-5"));
        assert_eq!(field(r, "key_source").as_str(), Some("platform"));
    }
    // (requests, failed, input, output, cached, cache_write, cost)
    assert_eq!(summary_totals(&month_summary(&c).await), (2, 1, 264, 7, 200, 40, 129));

    // OpenAI-compatible: the usage chunk (12 in, 30 out of which 30 reasoning) arrives, then the
    // connection breaks, twice (retry), then the route falls back to the backup, which answers.
    // Each failed attempt: 12×1 + 30×4 = 132 µ$; the backup's answer: 12×2 + 7×8 = 80 µ$.
    primary.push([
        Fault::UsageThenReset { output: 30, reasoning: 30 },
        Fault::UsageThenReset { output: 30, reasoning: 30 },
    ]);
    let (r, deltas) = stream_call(&c, &mut notes, chat_params("smart", true)).await;
    let r = r.unwrap();
    assert_eq!(deltas.concat(), REPLY);
    assert_eq!(field(&r, "provider").as_str(), Some("backup"));
    assert_eq!(field(&r, "cost_microusd").as_i64(), Some(80));
    let lost = Some(([USAGE_IN, 30, 0, 0, 30], false, 132));
    assert_eq!(
        attempt_bills(&r),
        [("connection_lost".to_string(), lost), ("connection_lost".to_string(), lost), ("ok".to_string(), None)]
    );
    let recs = records_oldest_first(&c).await;
    let mini = "gpt-4o-mini";
    let failed = Billed::failed("openai", mini, "connection_lost", [USAGE_IN, 30, 0, 0, 30], false, 132);
    assert_eq!(
        recs[2..].iter().map(Billed::of).collect::<Vec<_>>(),
        [failed.clone(), failed.clone(), Billed::ok("backup", mini, 80, 3)]
    );
    assert!(recs[2..].iter().all(|r| field(r, "route").as_str() == Some("smart")));
    assert_eq!(summary_totals(&month_summary(&c).await), (5, 3, 300, 74, 200, 40, 129 + 132 * 2 + 80));

    // Every target fails: no answer record, but both billed attempts are recorded and shown.
    primary.push([
        Fault::UsageThenReset { output: 30, reasoning: 30 },
        Fault::UsageThenReset { output: 30, reasoning: 30 },
    ]);
    let e = rpc_err(c.call("chat", chat_params("openai/gpt-4o-mini", true)).await);
    assert_eq!(e.code, ErrorCode::ProviderError);
    let data = Value::Map(vec![(Value::from("attempts"), e.data_field("attempts").unwrap().clone())]);
    assert_eq!(attempt_bills(&data), [("connection_lost".to_string(), lost), ("connection_lost".to_string(), lost)]);
    assert_eq!(e.data_field("cost_microusd").and_then(Value::as_i64), Some(0), "no answer, nothing else billed");
    let recs = records_oldest_first(&c).await;
    assert_eq!(recs[5..].iter().map(Billed::of).collect::<Vec<_>>(), [failed.clone(), failed]);
    assert_eq!(summary_totals(&month_summary(&c).await), (7, 5, 324, 134, 200, 40, 473 + 264));
    assert!(!d.logs().contains(KEY));
}

/// Refused (429, 5xx) or cut attempts the provider reported no usage for are not billed: only
/// the answer's record is written, and no attempt carries `usage`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_retries_write_no_extra_record() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, None, "max_retries = 3", TEST_PRICES));
    let c = d.client().await;
    let mut notes = c.take_notifications().unwrap();
    mock.push([
        Fault::Status { status: 429, headers: vec![("retry-after-ms", "10".into())], body: "{}".into() },
        Fault::Status { status: 500, headers: vec![], body: r#"{"error":{"message":"boom"}}"#.into() },
    ]);
    let r = c.call("chat", chat_params("openai/gpt-4o-mini", false)).await.unwrap();
    assert_eq!(
        attempt_bills(&r),
        [("rate_limited".to_string(), None), ("server_error".to_string(), None), ("ok".to_string(), None)]
    );
    // A stream cut before anything (no usage reported), and Anthropic's 529.
    mock.push([Fault::ResetAfter(0)]);
    let (r, _) = stream_call(&c, &mut notes, chat_params("openai/gpt-4o-mini", true)).await;
    assert_eq!(attempt_bills(&r.unwrap()), [("connection_lost".to_string(), None), ("ok".to_string(), None)]);
    let overloaded = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    mock.push([Fault::Status { status: 529, headers: vec![], body: overloaded.into() }]);
    let (r, _) = stream_call(&c, &mut notes, chat_params("anthropic/claude-haiku-4-5", true)).await;
    assert_eq!(attempt_bills(&r.unwrap()), [("server_error".to_string(), None), ("ok".to_string(), None)]);

    let recs = records_oldest_first(&c).await;
    let ok = Billed::ok;
    assert_eq!(
        recs.iter().map(Billed::of).collect::<Vec<_>>(),
        [
            ok("openai", "gpt-4o-mini", 40, 3),
            ok("openai", "gpt-4o-mini", 40, 2),
            ok("anthropic", "claude-haiku-4-5", 47, 2)
        ]
    );
    assert_eq!(summary_totals(&month_summary(&c).await), (3, 0, 36, 21, 0, 0, 127));
}

/// A 2xx body the adapter refuses (no content) but that reports usage was billed by the provider:
/// the attempt is retried like any malformed answer, and also gets its own record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_bodies_that_report_usage_are_billed() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, None, "max_retries = 1", TEST_PRICES));
    let c = d.client().await;
    let ok200 = |body: &str| Fault::Status { status: 200, headers: vec![], body: body.into() };
    // OpenAI: no choices, 12 in + 30 out reported: 12×1 + 30×4 = 132 µ$.
    mock.push([ok200(
        r#"{"object":"chat.completion","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":30}}"#,
    )]);
    let r = c.call("chat", chat_params("openai/gpt-4o-mini", false)).await.unwrap();
    assert_eq!(field(&r, "content").as_str(), Some(REPLY));
    let billed = Some(([USAGE_IN, 30, 0, 0, 0], false, 132));
    assert_eq!(attempt_bills(&r), [("malformed".to_string(), billed), ("ok".to_string(), None)]);
    // Anthropic: no content array, 12 in + 30 out reported: 12×1 + 30×5 = 162 µ$. Without usage
    // (or with a body that is not JSON) nothing extra is billed.
    mock.push([ok200(r#"{"type":"message","role":"assistant","usage":{"input_tokens":12,"output_tokens":30}}"#)]);
    let r = c.call("chat", chat_params("anthropic/claude-haiku-4-5", false)).await.unwrap();
    assert_eq!(attempt_bills(&r)[0], ("malformed".to_string(), Some(([USAGE_IN, 30, 0, 0, 0], false, 162))));
    mock.push([ok200(r#"{"type":"message","role":"assistant"}"#)]);
    let r = c.call("chat", chat_params("anthropic/claude-haiku-4-5", false)).await.unwrap();
    assert_eq!(attempt_bills(&r), [("malformed".to_string(), None), ("ok".to_string(), None)]);
    mock.push([ok200("{\"usage\":{\"prompt_tokens\":12")]);
    let r = c.call("chat", chat_params("openai/gpt-4o-mini", false)).await.unwrap();
    assert_eq!(attempt_bills(&r), [("malformed".to_string(), None), ("ok".to_string(), None)]);

    let recs = records_oldest_first(&c).await;
    assert_eq!(
        recs.iter().map(Billed::of).collect::<Vec<_>>(),
        [
            Billed::failed("openai", "gpt-4o-mini", "malformed", [USAGE_IN, 30, 0, 0, 0], false, 132),
            Billed::ok("openai", "gpt-4o-mini", 40, 2),
            Billed::failed("anthropic", "claude-haiku-4-5", "malformed", [USAGE_IN, 30, 0, 0, 0], false, 162),
            Billed::ok("anthropic", "claude-haiku-4-5", 47, 2),
            Billed::ok("anthropic", "claude-haiku-4-5", 47, 2),
            Billed::ok("openai", "gpt-4o-mini", 40, 2),
        ]
    );
}

/// Billed failed attempts count against the tier's token quota and carry their share of the
/// overage, in order, like the answer's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billed_failed_attempts_count_toward_quota_and_overage() {
    let mock = Mock::start().await;
    let tiers = "[policy]\ndefault_tier = \"pro\"\n[tiers.pro]\nrank = 0\nmonthly_tokens = 300\noverage = \"allow\"\noverage_price_per_1k_tokens_usd = 0.001\n";
    let d = start(&config(&mock, None, "", &format!("{TEST_PRICES}{tiers}")));
    let c = d.client().await;
    let mut notes = c.take_notifications().unwrap();
    for _ in 0..2 {
        mock.push([Fault::StartThenError { cache_read: 200, cache_write: 40, error_type: "overloaded_error" }]);
        let (r, _) = stream_call(&c, &mut notes, chat_params("anthropic/claude-haiku-4-5", true)).await;
        r.unwrap();
    }
    // Each call: a failed record of 252 tokens, then the answer's 19. The first call stays within
    // 300; the second passes it by 223 tokens in its failed record and 19 in its answer
    // (1 µ$ a token).
    let recs = records_oldest_first(&c).await;
    let over: Vec<(String, i64)> = recs
        .iter()
        .map(|r| (field(r, "status").as_str().unwrap().to_string(), field(r, "overage_microusd").as_i64().unwrap()))
        .collect();
    let want = [("error", 0), ("ok", 0), ("error", 223), ("ok", 19)];
    assert_eq!(over, want.map(|(s, o)| (s.to_string(), o)));
    let st = c.call("quota.status", vec![]).await.unwrap();
    let tokens = field(&st, "limits")
        .as_array()
        .unwrap()
        .iter()
        .find(|l| field(l, "metric").as_str() == Some("tokens"))
        .unwrap()
        .clone();
    assert_eq!(field(&tokens, "used").as_i64(), Some(2 * (252 + 19)));
}
