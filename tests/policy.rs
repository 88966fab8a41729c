//! Policies over the real socket against the mock provider: each example policy in
//! `examples/policies/` allowed and refused with the exact error data, BYOK bypass, overage,
//! period rollover with the injected clock, rate limits, entitlement tokens (good, bad signature,
//! expired, wrong algorithm, missing claims), offline grace, backend usage merge, and 200
//! concurrent calls against a quota with room for 50.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod mock_provider;

use common::{field, params, Daemon};
use llm_sidecar::rpc::{Client, ClientError, RpcError};
use mock_provider::Mock;
use rmpv::Value;
use std::time::Duration;

const KEY: &str = "sk-test-policy-PLATFORMkey-7781";

fn example(name: &str) -> String {
    std::fs::read_to_string(format!("{}/examples/policies/{name}.toml", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Every preset the examples name, pointed at the mock, plus the example policy (with textual
/// replacements) and `extra`.
fn config(mock: &Mock, policy: &str, replace: &[(&str, &str)], extra: &str) -> String {
    let u = mock.url();
    let mut policy = example(policy);
    for (from, to) in replace {
        assert!(policy.contains(from), "`{from}` not in the example");
        policy = policy.replace(from, to);
    }
    let mut out = String::new();
    for p in ["openai", "anthropic", "together", "openrouter", "cloudflare"] {
        out += &format!("[providers.{p}]\nbase_url = \"{u}/v1\"\nkey_env = \"MOCK_KEY\"\n");
    }
    out += &format!("[providers.ollama]\nbase_url = \"{u}/v1\"\n");
    format!("{out}{extra}\n{policy}")
}

fn start(config: &str, env: &[(&str, &str)]) -> Daemon {
    let mut all = vec![("MOCK_KEY", KEY)];
    all.extend_from_slice(env);
    Daemon::start_with(config, &all)
}

fn chat_params(model: &str, max_tokens: u64) -> Vec<Value> {
    let msg = Value::Map(vec![
        (Value::from("role"), Value::from("user")),
        (Value::from("content"), Value::from("Say hello")),
    ]);
    params(&[("model", model.into()), ("messages", Value::Array(vec![msg])), ("max_tokens", max_tokens.into())])
}

async fn chat(c: &Client, model: &str, max_tokens: u64) -> Result<Value, RpcError> {
    match c.call("chat", chat_params(model, max_tokens)).await {
        Ok(v) => Ok(v),
        Err(ClientError::Rpc(e)) => Err(e),
        Err(e) => panic!("transport: {e}"),
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    field(v, k).as_str().unwrap_or_else(|| panic!("`{k}` not a string in {v}"))
}

fn i(v: &Value, k: &str) -> i64 {
    field(v, k).as_i64().unwrap_or_else(|| panic!("`{k}` not an integer in {v}"))
}

fn month_start(ms: i64) -> String {
    llm_sidecar::policy::Bounds::rfc3339(llm_sidecar::policy::Bounds::calendar_month(ms).start_ms)
}

fn month_end(ms: i64) -> String {
    llm_sidecar::policy::Bounds::rfc3339(llm_sidecar::policy::Bounds::calendar_month(ms).end_ms)
}

fn now_ms() -> i64 {
    llm_sidecar::clock::now_ms()
}

/// Asserts a `quota_exceeded` error with exactly these numbers in the current month.
fn assert_quota(e: &RpcError, metric: &str, limit: i64, used: i64, remaining: i64) {
    assert_eq!(e.code.as_str(), "quota_exceeded", "{e:?}");
    let d = &e.data;
    assert_eq!(
        (s(d, "metric"), i(d, "limit"), i(d, "used"), i(d, "remaining")),
        (metric, limit, used, remaining),
        "{d}"
    );
    assert_eq!(s(d, "period_start"), month_start(now_ms()));
    assert_eq!(s(d, "period_end"), month_end(now_ms()));
}

fn limit_of<'a>(status: &'a Value, metric: &str) -> &'a Value {
    field(status, "limits").as_array().unwrap().iter().find(|l| s(l, "metric") == metric).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_tiers_means_everything_is_allowed() {
    let mock = Mock::start().await;
    let d = start(&format!("[providers.openai]\nbase_url = \"{}/v1\"\nkey_env = \"MOCK_KEY\"\n", mock.url()), &[]);
    let c = d.client().await;
    chat(&c, "openai/gpt-4o", 100_000).await.unwrap();
    let st = c.call("quota.status", vec![]).await.unwrap();
    assert_eq!(field(&st, "enabled").as_bool(), Some(false));
    assert!(field(&st, "limits").as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desktop_writing_app_gates_providers_and_caps_cost() {
    let mock = Mock::start().await;
    let routes = "[routes.write]\ntargets = [\"openai/gpt-4o\", \"ollama/llama3.2\"]\n";
    let d = start(&config(&mock, "desktop-writing-app", &[], routes), &[]);
    let c = d.client().await;
    // Free: local Ollama only.
    let r = chat(&c, "ollama/llama3.2", 50).await.unwrap();
    assert_eq!(s(&r, "provider"), "ollama");
    let e = chat(&c, "openai/gpt-4o", 50).await.unwrap_err();
    assert_eq!(e.code.as_str(), "tier_required");
    assert_eq!((s(&e.data, "required_tier"), s(&e.data, "provider"), s(&e.data, "model")), ("pro", "openai", "gpt-4o"));
    let e = chat(&c, "together/meta-llama/Llama-3.3-70B-Instruct-Turbo", 50).await.unwrap_err();
    assert_eq!(s(&e.data, "required_tier"), "member");
    // A route: the target the tier does not allow is skipped and listed.
    let r = chat(&c, "write", 50).await.unwrap();
    assert_eq!(s(&r, "provider"), "ollama");
    let attempts = field(&r, "attempts").as_array().unwrap();
    assert_eq!((s(&attempts[0], "provider"), s(&attempts[0], "outcome")), ("openai", "skipped_tier"));
    assert_eq!(s(&attempts[1], "outcome"), "ok");
    // models.list says what this tier may use.
    let list = c.call("models.list", params(&[("provider", "openai".into())])).await.unwrap();
    let models = field(&field(&list, "providers").as_array().unwrap()[0], "models").as_array().unwrap().clone();
    assert!(models.iter().all(|m| field(m, "allowed").as_bool() == Some(false)));
    drop(c);
    drop(d);

    // Member: hosted open models, $5 a month. At $0.10 a token a call costs $1.90 (19 tokens)
    // and reserves $4.50 (20 output tokens + the prompt's bound of 25): the second cannot fit.
    let price = "[pricing.models]\n\"together/test-model\" = { input = 100000.0, output = 100000.0 }\n";
    let d = start(
        &config(&mock, "desktop-writing-app", &[("default_tier = \"free\"", "default_tier = \"member\"")], price),
        &[],
    );
    let c = d.client().await;
    let r = chat(&c, "together/test-model", 20).await.unwrap();
    assert_eq!(i(&r, "cost_microusd"), 1_900_000);
    let e = chat(&c, "together/test-model", 20).await.unwrap_err();
    assert_eq!(e.code.as_str(), "quota_exceeded");
    assert_eq!(
        (s(&e.data, "metric"), i(&e.data, "limit"), i(&e.data, "used")),
        ("cost_microusd", 5_000_000, 1_900_000)
    );
    assert_eq!(i(&e.data, "remaining"), 3_100_000);
    let e = chat(&c, "openai/gpt-4o", 10).await.unwrap_err();
    assert_eq!(s(&e.data, "required_tier"), "pro");
    let st = c.call("quota.status", vec![]).await.unwrap();
    assert_eq!(s(&st, "tier"), "member");
    let cost = limit_of(&st, "cost_microusd");
    assert_eq!(
        (i(cost, "limit"), i(cost, "used"), i(cost, "remaining"), i(cost, "reserved")),
        (5_000_000, 1_900_000, 3_100_000, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_platform_counts_messages_and_gates_models() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, "chat-platform", &[], ""), &[]);
    let c = d.client().await;
    let e = chat(&c, "anthropic/claude-sonnet-4-5", 50).await.unwrap_err();
    assert_eq!(e.code.as_str(), "tier_required");
    assert_eq!(
        (s(&e.data, "required_tier"), s(&e.data, "provider"), s(&e.data, "model")),
        ("alchemist", "anthropic", "claude-sonnet-4-5")
    );
    let e = chat(&c, "openai/gpt-4o", 50).await.unwrap_err();
    assert_eq!(s(&e.data, "required_tier"), "adept");
    // quota.check answers exactly what chat would.
    let ck = c
        .call(
            "quota.check",
            params(&[("model", "anthropic/claude-sonnet-4-5".into()), ("estimated_tokens", 10.into())]),
        )
        .await
        .unwrap();
    assert_eq!(field(&ck, "allowed").as_bool(), Some(false));
    assert_eq!(s(field(&ck, "error"), "code"), "tier_required");
    assert_eq!(s(field(field(&ck, "error"), "data"), "required_tier"), "alchemist");
    for _ in 0..50 {
        chat(&c, "anthropic/claude-3-5-haiku-latest", 50).await.unwrap();
    }
    let e = chat(&c, "anthropic/claude-3-5-haiku-latest", 50).await.unwrap_err();
    assert_quota(&e, "requests", 50, 50, 0);
    let ck = c.call("quota.check", params(&[("model", "anthropic/claude-3-5-haiku-latest".into())])).await.unwrap();
    assert_eq!(s(field(&ck, "error"), "code"), "quota_exceeded");
    // Seeker may not use own keys: a vault key for anthropic is not used, the quota still holds.
    c.call("keys.set", params(&[("provider", "anthropic".into()), ("secret", "sk-ant-byok-USERKEY-5521".into())]))
        .await
        .unwrap();
    let e = chat(&c, "anthropic/claude-3-5-haiku-latest", 50).await.unwrap_err();
    assert_eq!(e.code.as_str(), "quota_exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_fix_bot_token_limit_with_byok_bypass() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, "code-fix-bot", &[], ""), &[]);
    let c = d.client().await;
    // 19 tokens used; the next call reserves 970 + its prompt's bound (25): over 1,000.
    chat(&c, "openai/gpt-4o-mini", 970).await.unwrap();
    let e = chat(&c, "openai/gpt-4o-mini", 970).await.unwrap_err();
    assert_quota(&e, "tokens", 1000, 19, 981);
    chat(&c, "openai/gpt-4o-mini", 100).await.unwrap();
    // Own key: no limit, still recorded (as byok).
    c.call("keys.set", params(&[("provider", "openai".into()), ("secret", "sk-byok-USERKEY-0099".into())]))
        .await
        .unwrap();
    for _ in 0..3 {
        chat(&c, "openai/gpt-4o-mini", 970).await.unwrap();
    }
    let recs = c.call("usage.records", params(&[("limit", 100.into())])).await.unwrap();
    let recs = field(&recs, "records").as_array().unwrap().clone();
    assert_eq!(recs.len(), 5);
    assert_eq!(recs.iter().filter(|r| s(r, "key_source") == "byok").count(), 3);
    let st = c.call("quota.status", vec![]).await.unwrap();
    assert_eq!(i(limit_of(&st, "tokens"), "used"), 38, "byok calls do not count: {st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screen_assistant_blocks_free_and_bills_pro_overage() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, "screen-assistant", &[], ""), &[]);
    let c = d.client().await;
    chat(&c, "openai/gpt-4o-mini", 1000).await.unwrap();
    let e = chat(&c, "openai/gpt-4o-mini", 100_000).await.unwrap_err();
    assert_quota(&e, "tokens", 100_000, 19, 99_981);
    drop(c);
    drop(d);
    // Pro with a 20-token month (same shape as 2M, quicker to reach): overage allowed and billed
    // at $0.02 per 1k tokens on the row.
    let d = start(
        &config(
            &mock,
            "screen-assistant",
            &[
                ("default_tier = \"free\"", "default_tier = \"pro\""),
                ("monthly_tokens = 2000000", "monthly_tokens = 20"),
            ],
            "",
        ),
        &[],
    );
    let c = d.client().await;
    chat(&c, "openai/gpt-4o-mini", 1000).await.unwrap();
    chat(&c, "openai/gpt-4o-mini", 1000).await.unwrap();
    let recs = c.call("usage.records", params(&[("order", "asc".into())])).await.unwrap();
    let recs = field(&recs, "records").as_array().unwrap().clone();
    let over: Vec<i64> = recs.iter().map(|r| i(r, "overage_microusd")).collect();
    assert_eq!(over, [0, 18 * 20]); // 18 tokens past the limit at 20 micro-dollars a token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn developer_api_resets_on_the_first_of_the_month() {
    let mock = Mock::start().await;
    let cfg = config(&mock, "developer-api", &[], "");
    // Last month (fake clock): use up the 5 calls.
    let last_month = llm_sidecar::policy::Bounds::calendar_month(now_ms()).start_ms - 3 * 86_400_000;
    let fake = last_month.to_string();
    let mut d = Daemon::prepare(&cfg, &[("MOCK_KEY", KEY), ("LLM_SIDECAR_FAKE_NOW", &fake)]);
    d.spawn();
    let c = d.client().await;
    for _ in 0..5 {
        chat(&c, "openai/gpt-4o-mini", 10).await.unwrap();
    }
    let e = chat(&c, "openai/gpt-4o-mini", 10).await.unwrap_err();
    assert_eq!(e.code.as_str(), "quota_exceeded");
    assert_eq!((i(&e.data, "used"), s(&e.data, "period_end")), (5, month_start(now_ms()).as_str()));
    drop(c);
    d.kill9();
    // This month, same data dir: a fresh quota, last month's records still in the ledger.
    d.set_env("LLM_SIDECAR_FAKE_NOW", &now_ms().to_string());
    d.spawn();
    let c = d.client().await;
    let st = c.call("quota.status", vec![]).await.unwrap();
    assert_eq!((s(&st, "period_start"), i(limit_of(&st, "requests"), "used")), (month_start(now_ms()).as_str(), 0));
    for _ in 0..5 {
        chat(&c, "openai/gpt-4o-mini", 10).await.unwrap();
    }
    let e = chat(&c, "openai/gpt-4o-mini", 10).await.unwrap_err();
    assert_quota(&e, "requests", 5, 5, 0);
    let recs = c.call("usage.records", params(&[("limit", 100.into())])).await.unwrap();
    assert_eq!(field(&recs, "records").as_array().unwrap().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn developer_api_rate_limit_answers_retry_after() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, "developer-api", &[("default_tier = \"free\"", "default_tier = \"paid\"")], ""), &[]);
    let c = d.client().await;
    let events = d.client().await;
    events.call("events.subscribe", params(&[("kinds", Value::Array(vec!["rate_limited".into()]))])).await.unwrap();
    let mut notes = events.take_notifications().unwrap();
    // 120 at once: exactly 100 fit the rolling minute (a sliding window: no refill within it,
    // however slow the machine), and nothing more gets in until the first of them is 60 s old.
    let t0 = std::time::Instant::now();
    let calls = (0..120).map(|_| chat(&c, "openai/gpt-4o-mini", 10));
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let limited: Vec<&RpcError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!((ok, limited.len()), (100, 20));
    let e = limited.first().expect("some calls are rate limited");
    assert_eq!(e.code.as_str(), "rate_limited");
    let wait = i(&e.data, "retry_after_ms");
    let elapsed = i64::try_from(t0.elapsed().as_millis()).unwrap();
    assert!(wait > 60_000 - elapsed - 1000 && wait <= 60_000, "{wait} after {elapsed} ms");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(chat(&c, "openai/gpt-4o-mini", 10).await.is_err(), "still full a moment later");
    assert_eq!(i(&e.data, "limit"), 100);
    let (_, args) = tokio::time::timeout(Duration::from_secs(5), notes.recv()).await.unwrap().unwrap();
    assert_eq!(s(&args[0], "kind"), "rate_limited");
    // Nothing was spent on the refused calls.
    let recs = c.call("usage.records", params(&[("limit", 1000.into())])).await.unwrap();
    assert_eq!(field(&recs, "records").as_array().unwrap().len(), ok);
}

/// The developer-api example with its free tier's limit replaced by `limit` and no rate limit,
/// then 200 `chat` calls (10 output tokens each) at once over 4 connections.
async fn two_hundred_at_once(mock: &Mock, limit: &str) -> (Daemon, Vec<Client>, Vec<Result<Value, RpcError>>) {
    let d = start(
        &config(mock, "developer-api", &[("monthly_requests = 5\n", limit), ("requests_per_minute = 100\n", "")], ""),
        &[],
    );
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(d.client().await);
    }
    let calls = (0..200).map(|n| chat(&clients[n % 4], "openai/gpt-4o-mini", 10));
    let results = futures::future::join_all(calls).await;
    (d, clients, results)
}

/// 200 calls at once against a quota with room for 50: exactly 50 run, the rest are refused,
/// and the ledger never holds more than the quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_never_exceed_the_quota() {
    let mock = Mock::start().await;
    let (_d, clients, results) = two_hundred_at_once(&mock, "monthly_requests = 50\n").await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused = results.iter().filter(|r| r.as_ref().is_err_and(|e| e.code.as_str() == "quota_exceeded")).count();
    assert_eq!((ok, refused), (50, 150));
    let c = &clients[0];
    let recs = c.call("usage.records", params(&[("limit", 1000.into())])).await.unwrap();
    assert_eq!(field(&recs, "records").as_array().unwrap().len(), 50);
    let st = c.call("quota.status", vec![]).await.unwrap();
    let req = limit_of(&st, "requests");
    assert_eq!((i(req, "used"), i(req, "remaining"), i(req, "reserved")), (50, 0, 0));
}

/// 200 calls at once against a 1,000-token quota: reservations are an upper bound of what a call
/// can cost (prompt bytes + framing + max_tokens), so the ledger never holds more than the limit.
/// The mock bills 12 + 7 tokens per call, more than the old chars/4 estimate of the prompt
/// (which let the ledger reach 141 % of the limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_never_exceed_a_token_quota() {
    let mock = Mock::start().await;
    let (_d, clients, results) = two_hundred_at_once(&mock, "monthly_tokens = 1000\n").await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused = results.iter().filter(|r| r.as_ref().is_err_and(|e| e.code.as_str() == "quota_exceeded")).count();
    assert_eq!(ok + refused, 200, "{:?}", results.iter().find(|r| r.is_err()));
    assert!(ok > 0 && refused > 0, "{ok} ok, {refused} refused");
    let c = &clients[0];
    let recs = c.call("usage.records", params(&[("limit", 1000.into())])).await.unwrap();
    let records = field(&recs, "records").as_array().unwrap().clone();
    let total: u64 = records
        .iter()
        .map(|r| field(r, "input_tokens").as_u64().unwrap() + field(r, "output_tokens").as_u64().unwrap())
        .sum();
    assert_eq!(records.len(), ok);
    assert!(total <= 1000, "the ledger holds {total} tokens against a limit of 1000");
    let st = c.call("quota.status", vec![]).await.unwrap();
    let tokens = limit_of(&st, "tokens");
    assert_eq!((i(tokens, "used"), i(tokens, "reserved")), (total as i64, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threshold_and_exceeded_events_once_per_period() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, "developer-api", &[], ""), &[]);
    let c = d.client().await;
    let events = d.client().await;
    let kinds = Value::Array(vec!["quota.threshold".into(), "quota.exceeded".into()]);
    events.call("events.subscribe", params(&[("kinds", kinds)])).await.unwrap();
    let mut notes = events.take_notifications().unwrap();
    for _ in 0..5 {
        chat(&c, "openai/gpt-4o-mini", 10).await.unwrap();
    }
    chat(&c, "openai/gpt-4o-mini", 10).await.unwrap_err();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (_, args) = tokio::time::timeout(Duration::from_secs(5), notes.recv()).await.unwrap().unwrap();
        let e = &args[0];
        let what = match s(e, "kind") {
            "quota.threshold" => format!("threshold {} at {}", field(e, "fraction").as_f64().unwrap(), i(e, "used")),
            k => format!("{k} {} {}", s(e, "metric"), i(e, "used")),
        };
        seen.push(what);
    }
    assert_eq!(seen, ["threshold 0.8 at 4", "threshold 0.9 at 5", "quota.exceeded requests 5"]);
    assert!(tokio::time::timeout(Duration::from_millis(300), notes.recv()).await.is_err(), "no repeats");
}

/// A chat call with `extra` JSON params (tools, image parts, ...) and its result or error.
async fn chat_json(c: &Client, params: serde_json::Value) -> Result<Value, RpcError> {
    match c.call("chat", vec![rmpv::ext::to_value(&params).unwrap()]).await {
        Ok(v) => Ok(v),
        Err(ClientError::Rpc(e)) => Err(e),
        Err(e) => panic!("transport: {e}"),
    }
}

fn tool(name: &str) -> serde_json::Value {
    serde_json::json!({"name": name, "description": "a tool", "parameters": {"type": "object", "properties": {}}})
}

/// Tiers gate features: `tools = false`, tool-name globs and `images = false` refuse the call with
/// `tier_required` naming the feature and the cheapest tier that allows it; nothing reaches the
/// provider and nothing is billed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_gate_tools_and_images_by_feature() {
    let mock = Mock::start().await;
    let policy = |default: &str| {
        format!(
            "[providers.openai]\nbase_url = \"{}/v1\"\nkey_env = \"MOCK_KEY\"\n[policy]\ndefault_tier = \"{default}\"\n\
             [tiers.free]\nrank = 0\ntools = false\nimages = false\n\
             [tiers.basic]\nrank = 1\ntools = [\"search_*\"]\n[tiers.pro]\nrank = 2\n",
            mock.url()
        )
    };
    let d = start(&policy("free"), &[]);
    let c = d.client().await;
    let user = serde_json::json!([{"role": "user", "content": "Say hello"}]);
    let e =
        chat_json(&c, serde_json::json!({"model": "openai/gpt-4o", "messages": user, "tools": [tool("search_web")]}))
            .await
            .unwrap_err();
    assert_eq!(e.code.as_str(), "tier_required");
    assert_eq!((s(&e.data, "feature"), s(&e.data, "required_tier")), ("tools", "basic"));
    assert!(e.message.contains("does not allow tools"), "{}", e.message);
    let image = serde_json::json!([{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image", "url": "https://example.com/a.png"}]}]);
    let e = chat_json(&c, serde_json::json!({"model": "openai/gpt-4o", "messages": image})).await.unwrap_err();
    assert_eq!(
        (e.code.as_str(), s(&e.data, "feature"), s(&e.data, "required_tier")),
        ("tier_required", "images", "basic")
    );
    // A conversation that already holds a tool call uses tools too.
    let history = serde_json::json!([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "tool_call", "id": "c1", "name": "search_web", "arguments": {}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]);
    let e = chat_json(&c, serde_json::json!({"model": "openai/gpt-4o", "messages": history})).await.unwrap_err();
    assert_eq!(s(&e.data, "feature"), "tools");
    // Plain text still works on the free tier.
    chat_json(&c, serde_json::json!({"model": "openai/gpt-4o", "messages": user})).await.unwrap();
    assert_eq!(mock.requests(), 1);
    drop(d);

    // basic: tools whose names match `search_*` only.
    let d = start(&policy("basic"), &[]);
    let c = d.client().await;
    let ok =
        chat_json(&c, serde_json::json!({"model": "openai/gpt-4o", "messages": user, "tools": [tool("search_web")]}));
    ok.await.unwrap();
    let e = chat_json(
        &c,
        serde_json::json!({"model": "openai/gpt-4o", "messages": user, "tools": [tool("search_web"), tool("run_code")]}),
    )
    .await
    .unwrap_err();
    assert_eq!((s(&e.data, "feature"), s(&e.data, "required_tier")), ("tool:run_code", "pro"));
    assert!(e.message.contains("the tool `run_code`"), "{}", e.message);
    let recs = c.call("usage.records", params(&[("limit", 100.into())])).await.unwrap();
    assert_eq!(field(&recs, "records").as_array().unwrap().len(), 1, "refused calls are not billed");
}

/// 200 concurrent calls each carrying an image, against a 20,000-token quota: the reservation
/// counts each image at its provider's published maximum (1,445 tokens for gpt-4o at high
/// detail), so the ledger never passes the limit although the provider bills each image (765
/// tokens for a 1024×1024 image) on top of the text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_image_calls_never_exceed_a_token_quota() {
    let mock = Mock::start().await;
    let (input, output) = (12 + 765, 7);
    mock.set_default(Some(mock_provider::Fault::Json(serde_json::json!({
        "id": "chatcmpl-img", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "A logo."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}}))));
    let d = start(
        &config(
            &mock,
            "developer-api",
            &[("monthly_requests = 5\n", "monthly_tokens = 20000\n"), ("requests_per_minute = 100\n", "")],
            "",
        ),
        &[],
    );
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(d.client().await);
    }
    let image = serde_json::json!([{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "url": "https://upload.wikimedia.org/wikipedia/commons/a/a7/Wikipedia-logo.png"}]}]);
    let calls = (0..200).map(|n| {
        chat_json(&clients[n % 4], serde_json::json!({"model": "openai/gpt-4o", "messages": image, "max_tokens": 10}))
    });
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused = results.iter().filter(|r| r.as_ref().is_err_and(|e| e.code.as_str() == "quota_exceeded")).count();
    assert_eq!(ok + refused, 200, "{:?}", results.iter().find(|r| r.is_err()));
    assert!(ok > 0 && refused > 0, "{ok} ok, {refused} refused");
    let recs = clients[0].call("usage.records", params(&[("limit", 1000.into())])).await.unwrap();
    let records = field(&recs, "records").as_array().unwrap().clone();
    let total: u64 = records
        .iter()
        .map(|r| field(r, "input_tokens").as_u64().unwrap() + field(r, "output_tokens").as_u64().unwrap())
        .sum();
    assert_eq!(records.len(), ok);
    assert_eq!(total, ok as u64 * (input + output));
    assert!(total <= 20_000, "the ledger holds {total} tokens against a limit of 20000");
    let st = clients[0].call("quota.status", vec![]).await.unwrap();
    let tokens = limit_of(&st, "tokens");
    assert_eq!((i(tokens, "used"), i(tokens, "reserved")), (total as i64, 0));
}

/// A provider that bills more than the call's reserved bound (here a mock claiming 5,000 prompt
/// tokens for "Say hello"): the record keeps the actual numbers and `usage.overshoot` says by how
/// much.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_above_the_reservation_is_recorded_and_reported() {
    let mock = Mock::start().await;
    mock.set_default(Some(mock_provider::Fault::Json(serde_json::json!({
        "id": "chatcmpl-big", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5000, "completion_tokens": 7, "total_tokens": 5007}}))));
    let d = start(&config(&mock, "developer-api", &[("monthly_requests = 5\n", "monthly_tokens = 100000\n")], ""), &[]);
    let c = d.client().await;
    let events = d.client().await;
    let kinds = Value::Array(vec!["usage.overshoot".into()]);
    events.call("events.subscribe", params(&[("kinds", kinds)])).await.unwrap();
    let mut notes = events.take_notifications().unwrap();
    let r = chat(&c, "openai/gpt-4o-mini", 10).await.unwrap();
    assert_eq!(i(field(&r, "usage"), "input"), 5000);
    let (_, args) = tokio::time::timeout(Duration::from_secs(5), notes.recv()).await.unwrap().unwrap();
    let e = &args[0];
    // "Say hello": 9 bytes + 8 (message) + 8 (request) = 25 prompt tokens, + 10 output.
    assert_eq!(
        (s(e, "kind"), s(e, "provider"), s(e, "model"), i(e, "reserved_tokens"), i(e, "actual_tokens")),
        ("usage.overshoot", "openai", "gpt-4o-mini", 35, 5007)
    );
    let st = c.call("quota.status", vec![]).await.unwrap();
    assert_eq!(i(limit_of(&st, "tokens"), "used"), 5007);
    assert!(d.logs().contains("usage above the reserved bound"));
}

/// `cost_source`: the provider's own cost when it reports one (OpenRouter's `usage.cost`), the
/// price table's otherwise, and `unknown` (cost 0) for a model without a price.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_source_says_where_the_cost_comes_from() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, "developer-api", &[("monthly_requests = 5\n", "monthly_requests = 50\n")], ""), &[]);
    let c = d.client().await;
    mock.push([mock_provider::Fault::Fixture("openrouter_chat_stream_usage_cost.sse")]);
    let mut p = chat_params("openrouter/anthropic/claude-sonnet-4.6", 50);
    if let Value::Map(m) = &mut p[0] {
        m.push((Value::from("stream"), Value::from(true)));
    }
    let r = c.call("chat", p).await.unwrap();
    assert_eq!((s(&r, "cost_source"), i(&r, "cost_microusd")), ("provider", 837));
    let r = chat(&c, "openai/gpt-4o-mini", 50).await.unwrap();
    // 12 in, 7 out at $0.15 / $0.60 per million: 1.8 + 4.2 = 6 µ$.
    assert_eq!((s(&r, "cost_source"), i(&r, "cost_microusd")), ("table", 6));
    let r = chat(&c, "openai/not-a-priced-model", 50).await.unwrap();
    assert_eq!((s(&r, "cost_source"), i(&r, "cost_microusd")), ("unknown", 0));
    let recs = c.call("usage.records", params(&[("limit", 10.into())])).await.unwrap();
    let costs: Vec<i64> = field(&recs, "records").as_array().unwrap().iter().map(|r| i(r, "cost_microusd")).collect();
    assert_eq!(costs.iter().sum::<i64>(), 837 + 6);
}
