//! The router's logic against a scripted transport, on a paused clock: every wait (backoff,
//! `Retry-After`, deadline, cooldown) is virtual, so the tests assert exact times.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::chat::{joined_text, ChatRequest, Delta, Message, Role};
use crate::keystore::{KeyOutcome, ResolvedKey};
use crate::providers::transport::script::{Reply, Scripted};
use crate::providers::{estimate_usage, FailureKind};
use crate::usage_record::TokenUsage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Two OpenAI-compatible providers and an Anthropic one, all keyless unless a store has keys.
const PROVIDERS: &str = r#"
[a]
adapter = "openai"
base_url = "http://a.test/v1"
[b]
adapter = "openai"
base_url = "http://b.test/v1"
[c]
adapter = "anthropic"
base_url = "http://c.test/v1"
"#;

const ROUTES: &str = r#"
[ab]
targets = ["a/m1", "b/m2"]
[a]
targets = ["a/m1"]
[cb]
targets = ["c/claude", "b/m2"]
"#;

const MS: Duration = Duration::from_millis(1);

fn router(settings: RouterConfig) -> (Router, Arc<Scripted>) {
    let script = Arc::new(Scripted::default());
    let r = Router::with_transport(
        &toml::from_str(PROVIDERS).unwrap(),
        &toml::from_str(ROUTES).unwrap(),
        &settings,
        script.clone(),
    )
    .unwrap();
    (r, script)
}

fn call(route: &str, stream: bool) -> ChatCall {
    ChatCall {
        route: route.into(),
        request: ChatRequest { messages: vec![Message::text(Role::User, "Say hello")], ..ChatRequest::default() },
        stream,
        targets: None,
    }
}

/// Runs `call` with no keys in the store; streamed deltas are collected.
async fn run(r: &Router, call: &ChatCall) -> (ChatOutcome, Vec<Delta>) {
    run_with(r, call, &crate::keystore::NoKeys).await
}

async fn run_with(r: &Router, call: &ChatCall, store: &dyn KeyStore) -> (ChatOutcome, Vec<Delta>) {
    let (mut tx, mut rx) = mpsc::channel(64);
    let out = r.chat(call, store, Some(&mut tx), &CancellationToken::new()).await;
    drop(tx);
    let mut deltas = Vec::new();
    while let Some(d) = rx.recv().await {
        deltas.push(d);
    }
    (out, deltas)
}

fn outcomes(out: &ChatOutcome) -> Vec<String> {
    out.attempts.iter().map(|a| format!("{}/{}:{}", a.provider, a.model, a.outcome.as_str())).collect()
}

fn hosts(script: &Scripted) -> Vec<String> {
    script.sent().into_iter().map(|s| s.host).collect()
}

/// Gaps between consecutive requests.
fn gaps(script: &Scripted) -> Vec<Duration> {
    script.sent().windows(2).map(|w| w[1].at - w[0].at).collect()
}

fn ok_json(model: &str) -> Reply {
    Reply::status(200).chunk(format!(
        r#"{{"id":"x","object":"chat.completion","model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"Hello"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}}}"#
    ))
}

fn sse_text(text: &str) -> String {
    format!("data: {{\"model\":\"m2\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n")
}

/// A complete OpenAI stream: "Hello" in two chunks, usage 5/2, `[DONE]`.
fn ok_sse() -> Reply {
    Reply::status(200)
        .chunk(sse_text("Hel"))
        .chunk(sse_text("lo"))
        .chunk("data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n")
        .chunk("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n")
        .chunk("data: [DONE]\n\n")
}

fn error(status: u16, kind: &str) -> Reply {
    Reply::status(status).chunk(format!(r#"{{"error":{{"message":"scripted {status}","type":"{kind}"}}}}"#))
}

fn exact(input: u64, output: u64) -> TokenUsage {
    TokenUsage { input, output, ..TokenUsage::default() }
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_waited_exactly_then_retried() {
    let (r, script) = router(RouterConfig::default());
    script.on("a.test", [error(429, "rate_limit_error").header("retry-after", "2"), ok_json("m1")]);
    let t0 = Instant::now();
    let (out, _) = run(&r, &call("ab", false)).await;
    assert_eq!(out.result, None);
    assert_eq!(out.attempts.iter().map(|a| a.outcome.as_str()).collect::<Vec<_>>(), ["rate_limited", "ok"]);
    assert_eq!(out.attempts[0].status, Some(429));
    assert_eq!(hosts(&script), ["a.test", "a.test"]);
    assert_eq!(gaps(&script), [Duration::from_secs(2)], "the second attempt waits exactly the hint");
    assert_eq!(t0.elapsed(), Duration::from_secs(2));
    assert_eq!(out.latency, Duration::from_secs(2));
    assert_eq!(joined_text(&out.parts), "Hello");
    assert_eq!(out.usage, Some(exact(5, 2)));
    assert!(out.billed_failures.is_empty());
}

#[tokio::test(start_paused = true)]
async fn retry_after_above_the_cap_falls_back_at_once() {
    let (r, script) = router(RouterConfig { max_retry_after_ms: 30_000, ..RouterConfig::default() });
    script.on("a.test", [error(429, "rate_limit_error").header("retry-after", "31")]);
    script.on("b.test", [ok_json("m2")]);
    let (out, _) = run(&r, &call("ab", false)).await;
    assert_eq!(out.result, None);
    assert_eq!(outcomes(&out), ["a/m1:rate_limited", "b/m2:ok"]);
    assert_eq!(hosts(&script), ["a.test", "b.test"]);
    assert_eq!(gaps(&script), [Duration::ZERO]);
    assert_eq!(out.latency, Duration::ZERO);
    assert_eq!((out.provider.as_str(), out.model.as_str()), ("b", "m2"));

    // At the cap exactly, the hint is honoured.
    script.on("a.test", [error(429, "rate_limit_error").header("retry-after-ms", "30000"), ok_json("m1")]);
    let (out, _) = run(&r, &call("ab", false)).await;
    assert_eq!(outcomes(&out), ["a/m1:rate_limited", "a/m1:ok"]);
    assert_eq!(out.latency, Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn server_errors_exhaust_retries_with_bounded_exponential_backoff_then_fall_back() {
    let settings = RouterConfig {
        max_retries: 3,
        backoff_base_ms: 100,
        backoff_max_ms: 300,
        cooldown_failures: 1_000_000,
        ..RouterConfig::default()
    };
    let (r, script) = router(settings);
    // Ceilings before retries 1, 2, 3: 100, 200, then 400 capped at 300.
    let ceilings = [100 * MS, 200 * MS, 300 * MS];
    let mut longest = [Duration::ZERO; 3];
    for _ in 0..40 {
        let before = script.sent().len();
        script.on("a.test", (0..4).map(|_| error(500, "server_error")));
        script.on("b.test", [ok_json("m2")]);
        let (out, _) = run(&r, &call("ab", false)).await;
        assert_eq!(out.result, None);
        assert_eq!(
            outcomes(&out),
            ["a/m1:server_error", "a/m1:server_error", "a/m1:server_error", "a/m1:server_error", "b/m2:ok"]
        );
        let sent = script.sent();
        let sent = &sent[before..];
        let sent_to: Vec<&str> = sent.iter().map(|s| s.host.as_str()).collect();
        assert_eq!(sent_to, ["a.test", "a.test", "a.test", "a.test", "b.test"]);
        let gap = |i: usize| sent[i + 1].at - sent[i].at;
        for (n, ceiling) in ceilings.iter().enumerate() {
            assert!(gap(n) <= *ceiling, "retry {} waited {:?} > {ceiling:?}", n + 1, gap(n));
            longest[n] = longest[n].max(gap(n));
        }
        assert_eq!(gap(3), Duration::ZERO, "no backoff before the next target");
        assert_eq!(out.latency, (0..3).map(gap).sum::<Duration>());
    }
    // Over 40 calls the random waits use the growing ceilings (each fails with p < 1e-7).
    assert!(longest[1] > 100 * MS, "{longest:?}");
    assert!(longest[2] > 200 * MS, "{longest:?}");
    assert_eq!(script.unused(), 0);
}

#[tokio::test(start_paused = true)]
async fn request_error_does_not_fall_back() {
    let (r, script) = router(RouterConfig::default());
    script.on("a.test", [error(400, "invalid_request_error")]);
    script.on("b.test", [ok_json("m2")]);
    let (out, _) = run(&r, &call("ab", false)).await;
    assert_eq!(outcomes(&out), ["a/m1:rejected"]);
    assert_eq!(hosts(&script), ["a.test"]);
    match &out.result {
        Some(ChatFailure::Provider { provider, error, after_first_chunk: false }) => {
            assert_eq!((provider.as_str(), error.status()), ("a", Some(400)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(out.usage, None, "nothing reported, nothing billed");
    assert!(r.health_report().is_empty(), "a request error says nothing about the target's health");
}

/// Two keys for provider `a`; records what the router reports.
#[derive(Debug, Default)]
struct Keys {
    reports: Mutex<Vec<(String, KeyOutcome)>>,
}

impl KeyStore for Keys {
    fn keys_for(&self, provider: &str) -> Result<Vec<ResolvedKey>, KeyError> {
        if provider != "a" {
            return Ok(Vec::new());
        }
        Ok(["k1", "k2"]
            .iter()
            .map(|id| ResolvedKey {
                id: id.to_string(),
                source: KeySource::Byok,
                secret: SecretString::from(format!("sk-secret-{id}")),
            })
            .collect())
    }
    fn report(&self, id: &str, outcome: KeyOutcome) {
        self.reports.lock().unwrap().push((id.to_string(), outcome));
    }
}

#[tokio::test(start_paused = true)]
async fn rejected_key_tries_the_next_key_then_the_next_target() {
    let (r, script) = router(RouterConfig::default());
    script.on("a.test", [error(401, "invalid_api_key"), error(403, "permission_error")]);
    script.on("b.test", [ok_json("m2")]);
    let keys = Keys::default();
    let (out, _) = run_with(&r, &call("ab", false), &keys).await;
    assert_eq!(out.result, None);
    assert_eq!(outcomes(&out), ["a/m1:key_invalid", "a/m1:key_invalid", "b/m2:ok"]);
    let auth: Vec<Option<String>> =
        script.sent().iter().map(|s| s.headers.get("authorization").map(|v| v.to_str().unwrap().to_string())).collect();
    assert_eq!(auth, [Some("Bearer sk-secret-k1".into()), Some("Bearer sk-secret-k2".into()), None]);
    assert_eq!(gaps(&script), [Duration::ZERO, Duration::ZERO], "no backoff after a rejected key");
    assert_eq!(
        *keys.reports.lock().unwrap(),
        [("k1".to_string(), KeyOutcome::Invalid), ("k2".to_string(), KeyOutcome::Invalid)],
        "the keyless target's success reports no key"
    );
    assert_eq!(out.key_source, Some(KeySource::Local));

    // A key that works is reported as such.
    script.on("a.test", [ok_json("m1")]);
    let (out, _) = run_with(&r, &call("ab", false), &keys).await;
    assert_eq!(outcomes(&out), ["a/m1:ok"]);
    assert_eq!(out.key_source, Some(KeySource::Byok));
    assert_eq!(keys.reports.lock().unwrap().last(), Some(&("k1".to_string(), KeyOutcome::Ok)));
}

#[tokio::test(start_paused = true)]
async fn stream_broken_after_a_delivered_chunk_neither_retries_nor_falls_back() {
    let (r, script) = router(RouterConfig::default());
    script.on(
        "a.test",
        [Reply::status(200)
            .chunk(sse_text("Hello"))
            .pause(Duration::from_millis(40))
            .fail(ProviderError::Transport("connection reset".into()))],
    );
    script.on("b.test", [ok_sse()]);
    let c = call("ab", true);
    let (out, deltas) = run(&r, &c).await;
    assert_eq!(deltas, [Delta::Text("Hello".into())]);
    assert_eq!(outcomes(&out), ["a/m1:connection_lost"]);
    assert_eq!(hosts(&script), ["a.test"]);
    assert!(out.delivered);
    match &out.result {
        Some(ChatFailure::Provider { provider, error: ProviderError::Transport(_), after_first_chunk: true }) => {
            assert_eq!(provider, "a");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(joined_text(&out.parts), "Hello");
    // Nothing reported: the prompt and the delivered text are billed as an estimate.
    let billed = estimate_usage(&c.request, "Hello".len());
    assert!(billed.estimated && billed.output == 2 && billed.input > 0, "{billed:?}");
    assert_eq!(out.usage, Some(billed));
    assert!(out.billed_failures.is_empty());
    assert_eq!(out.latency, Duration::from_millis(40));
    assert_eq!(out.ttft, Some(Duration::ZERO));
}

#[tokio::test(start_paused = true)]
async fn failed_stream_with_reported_usage_is_billed_as_reported_and_falls_back() {
    let (r, script) = router(RouterConfig { max_retries: 0, ..RouterConfig::default() });
    let start = r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-x-1","content":[],"stop_reason":null,"usage":{"input_tokens":7,"cache_read_input_tokens":0,"output_tokens":1}}}"#;
    let overloaded = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    script.on(
        "c.test",
        [Reply::status(200)
            .chunk(format!("event: message_start\ndata: {start}\n\n"))
            .pause(Duration::from_millis(25))
            .chunk(format!("event: error\ndata: {overloaded}\n\n"))],
    );
    script.on("b.test", [ok_sse()]);
    let (out, deltas) = run(&r, &call("cb", true)).await;
    assert_eq!(out.result, None);
    assert_eq!(outcomes(&out), ["c/claude:stream_error", "b/m2:ok"]);
    assert_eq!(out.attempts[0].status, Some(529));
    assert_eq!(deltas, [Delta::Text("Hel".into()), Delta::Text("lo".into())]);
    assert_eq!(
        out.billed_failures,
        [BilledAttempt {
            attempt: 0,
            provider: "c".into(),
            target_model: "claude".into(),
            model: "claude-x-1".into(),
            key_source: KeySource::Local,
            usage: TokenUsage { input: 7, output: 0, estimated: true, ..TokenUsage::default() },
            outcome: FailureKind::StreamError,
            ms: 25,
        }]
    );
    assert_eq!(out.usage, Some(exact(5, 2)), "the answering attempt is billed once, exactly");
    assert_eq!((out.provider.as_str(), out.model.as_str()), ("b", "m2"));
    assert_eq!(gaps(&script), [Duration::from_millis(25)], "fallback without backoff");
}

#[tokio::test(start_paused = true)]
async fn failed_stream_without_reported_usage_is_not_billed() {
    let (r, script) = router(RouterConfig { max_retries: 0, ..RouterConfig::default() });
    script.on("a.test", [Reply::status(200).fail(ProviderError::Transport("connection reset".into()))]);
    script.on("b.test", [ok_sse()]);
    let (out, _) = run(&r, &call("ab", true)).await;
    assert_eq!(outcomes(&out), ["a/m1:connection_lost", "b/m2:ok"]);
    assert!(out.billed_failures.is_empty());
    assert_eq!(out.usage, Some(exact(5, 2)));

    // Nor is a request that never got an answer.
    script.on("a.test", [Reply::error(ProviderError::Connect("connection refused".into())).after(3 * MS)]);
    script.on("b.test", [ok_sse()]);
    let (out, _) = run(&r, &call("ab", true)).await;
    assert_eq!(outcomes(&out), ["a/m1:connect_error", "b/m2:ok"]);
    assert_eq!(out.attempts[0].ms, 3);
    assert!(out.billed_failures.is_empty());
}

#[tokio::test(start_paused = true)]
async fn backoff_that_would_pass_the_deadline_is_not_slept() {
    let (r, script) = router(RouterConfig { deadline_ms: 1_000, ..RouterConfig::default() });
    script.on(
        "a.test",
        [
            error(429, "rate_limit_error").header("retry-after-ms", "600"),
            error(429, "rate_limit_error").header("retry-after-ms", "600"),
        ],
    );
    let (out, _) = run(&r, &call("a", false)).await;
    assert_eq!(outcomes(&out), ["a/m1:rate_limited", "a/m1:rate_limited"]);
    assert_eq!(gaps(&script), [Duration::from_millis(600)]);
    // The second hint would end at 1.2 s, past the deadline: the call ends at 0.6 s with the
    // provider's failure (and its hint for the app), not after sleeping into the deadline.
    assert_eq!(out.latency, Duration::from_millis(600));
    match &out.result {
        Some(ChatFailure::Provider { error, .. }) => {
            assert_eq!(error.retry_after(), Some(Duration::from_millis(600)));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn deadline_bounds_the_first_byte_wait_and_skips_later_targets() {
    let (r, script) = router(RouterConfig { deadline_ms: 1_000, ..RouterConfig::default() });
    script.on("a.test", [ok_json("m1").after(Duration::from_secs(5))]);
    script.on("b.test", [ok_json("m2")]);
    let (out, _) = run(&r, &call("ab", false)).await;
    assert_eq!(outcomes(&out), ["a/m1:timeout", "b/m2:deadline"]);
    assert_eq!(hosts(&script), ["a.test"]);
    assert_eq!(out.latency, Duration::from_secs(1), "cut at the deadline exactly");
    assert!(
        matches!(out.result, Some(ChatFailure::Provider { error: ProviderError::Timeout(_), .. })),
        "{:?}",
        out.result
    );
}

#[tokio::test(start_paused = true)]
async fn deadline_with_no_target_to_try() {
    let (r, _script) = router(RouterConfig::default());
    let c = ChatCall { targets: Some(Vec::new()), ..call("ab", false) };
    let (out, _) = run(&r, &c).await;
    assert_eq!(out.result, Some(ChatFailure::Deadline { provider: String::new() }));
}

#[tokio::test(start_paused = true)]
async fn failing_target_cools_down_and_comes_back() {
    let settings = RouterConfig { max_retries: 0, cooldown_failures: 2, cooldown_secs: 30, ..RouterConfig::default() };
    let (r, script) = router(settings);
    for n in 1..=2 {
        script.on("a.test", [error(503, "server_error")]);
        script.on("b.test", [ok_json("m2")]);
        let (out, _) = run(&r, &call("ab", false)).await;
        assert_eq!(outcomes(&out), ["a/m1:server_error", "b/m2:ok"], "call {n}");
    }
    assert_eq!(
        r.health_report(),
        [TargetHealth { target: "a/m1".into(), consecutive_failures: 0, cooldown_remaining_ms: Some(30_000) }]
    );

    // Cooling: skipped without a request.
    script.on("b.test", [ok_json("m2")]);
    let (out, _) = run(&r, &call("ab", false)).await;
    assert_eq!(outcomes(&out), ["a/m1:cooldown", "b/m2:ok"]);
    assert_eq!(hosts(&script).last().map(String::as_str), Some("b.test"));

    // A call whose every target cools down tries them anyway.
    script.on("a.test", [error(503, "server_error")]);
    let (out, _) = run(&r, &call("a", false)).await;
    assert_eq!(outcomes(&out), ["a/m1:server_error"]);

    tokio::time::advance(Duration::from_millis(29_999)).await;
    script.on("b.test", [ok_json("m2")]);
    let (out, _) = run(&r, &call("ab", false)).await;
    assert_eq!(outcomes(&out), ["a/m1:cooldown", "b/m2:ok"], "still cooling at 29.999 s");

    tokio::time::advance(MS).await;
    assert_eq!(
        r.health_report(),
        [TargetHealth { target: "a/m1".into(), consecutive_failures: 1, cooldown_remaining_ms: None }]
    );
    script.on("a.test", [ok_json("m1")]);
    let (out, _) = run(&r, &call("ab", false)).await;
    assert_eq!(outcomes(&out), ["a/m1:ok"], "used again once the cooldown is over");
    assert!(r.health_report().is_empty(), "a success clears the target's health");
    assert_eq!(script.unused(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_target_lacking_a_feature_is_skipped_for_the_next() {
    let (r, script) = router(RouterConfig::default());
    script.on("b.test", [ok_json("m2")]);
    let mut c = call("cb", false);
    // Anthropic's Messages API has no JSON mode: `c` refuses to build the request.
    c.request.response_format = Some(crate::chat::ResponseFormat::JsonObject);
    let (out, _) = run(&r, &c).await;
    assert_eq!(out.result, None);
    assert_eq!(outcomes(&out), ["c/claude:unsupported", "b/m2:ok"]);
    assert_eq!(hosts(&script), ["b.test"]);
    // With no other target, the call fails naming the provider and the feature; nothing is sent.
    let (r, script) = router(RouterConfig::default());
    let mut c = call("cb", false);
    c.targets = Some(vec![Target::parse("c/claude").unwrap()]);
    c.request.response_format = Some(crate::chat::ResponseFormat::JsonObject);
    let (out, _) = run(&r, &c).await;
    assert_eq!(out.result, Some(ChatFailure::Unsupported { provider: "c".into(), feature: "response_format" }));
    assert!(out.usage.is_none() && hosts(&script).is_empty());
}
