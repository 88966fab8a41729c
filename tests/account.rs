//! Entitlement tokens and the account backend over the real socket: login with a signed token
//! (EdDSA, keys generated here), refusal of bad signature / expired / wrong algorithm / missing
//! claims, logout, offline grace until `exp` then the default tier, and the backend's usage
//! count merged with local unsynced usage (axum mock backend).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod mock_provider;

use axum::extract::State as AxState;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Json;
use common::entitlement::{keypair, now_s, sign, Keys};
use common::{call, field, params, wait_until, Daemon};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use llm_sidecar::rpc::{Client, RpcError};
use mock_provider::Mock;
use rmpv::Value;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "sk-test-account-PLATFORM-3321";

fn claims(tier: &str, exp: i64) -> serde_json::Value {
    let b = llm_sidecar::policy::Bounds::calendar_month(llm_sidecar::clock::now_ms());
    json!({"sub": "user-42", "tier": tier, "period_start": b.start_ms / 1000, "period_end": b.end_ms / 1000, "exp": exp})
}

fn config(mock: &Mock, keys: &Keys, url: Option<&str>) -> String {
    let policy =
        std::fs::read_to_string(format!("{}/examples/policies/developer-api.toml", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
    let url = url.map_or(String::new(), |u| format!("url = \"{u}\"\n"));
    format!(
        "[providers.openai]\nbase_url = \"{}/v1\"\nkey_env = \"MOCK_KEY\"\n{policy}\n[account]\n{url}public_key_pem = '''\n{}'''\n",
        mock.url(),
        keys.public_pem
    )
}

async fn login(c: &Client, token: &str) -> Result<Value, RpcError> {
    call(c, "account.login", params(&[("token", token.into())])).await
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    field(v, k).as_str().unwrap_or_else(|| panic!("`{k}` not a string in {v}"))
}

async fn chat(c: &Client) -> Result<Value, RpcError> {
    let msg = Value::Map(vec![(Value::from("role"), Value::from("user")), (Value::from("content"), Value::from("hi"))]);
    call(
        c,
        "chat",
        params(&[
            ("model", "openai/gpt-4o-mini".into()),
            ("messages", Value::Array(vec![msg])),
            ("max_tokens", 10.into()),
        ]),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_verified_and_bad_ones_refused_clearly() {
    let mock = Mock::start().await;
    let keys = keypair();
    let d = Daemon::start_with(&config(&mock, &keys, None), &[("MOCK_KEY", KEY)]);
    let c = d.client().await;
    let reason = |e: &RpcError| (e.code.as_str().to_string(), s(&e.data, "reason").to_string());

    let other = keypair();
    let e = login(&c, &sign(&other, &claims("paid", now_s() + 3600))).await.unwrap_err();
    assert_eq!(reason(&e), ("unauthorized".into(), "bad_signature".into()));
    let e = login(&c, &sign(&keys, &claims("paid", now_s() - 10))).await.unwrap_err();
    assert_eq!(reason(&e), ("unauthorized".into(), "expired".into()));
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("paid", now_s() + 3600),
        &EncodingKey::from_secret(b"shared"),
    )
    .unwrap();
    let e = login(&c, &hs).await.unwrap_err();
    assert_eq!(reason(&e), ("unauthorized".into(), "wrong_algorithm".into()));
    assert!(e.message.contains("HS256"), "{}", e.message);
    let mut no_tier = claims("paid", now_s() + 3600);
    no_tier.as_object_mut().unwrap().remove("tier");
    let e = login(&c, &sign(&keys, &no_tier)).await.unwrap_err();
    assert_eq!(reason(&e), ("unauthorized".into(), "missing_claim".into()));
    assert!(e.message.contains("`tier`"), "{}", e.message);
    let e = login(&c, &sign(&keys, &claims("gold", now_s() + 3600))).await.unwrap_err();
    assert_eq!(reason(&e), ("unauthorized".into(), "unknown_tier".into()));
    let e = login(&c, "not-a-jwt").await.unwrap_err();
    assert_eq!(reason(&e), ("unauthorized".into(), "malformed".into()));
    assert_eq!(s(&call(&c, "quota.status", vec![]).await.unwrap(), "tier"), "free");

    let events = d.client().await;
    events.call("events.subscribe", params(&[("kinds", Value::Array(vec!["tier.changed".into()]))])).await.unwrap();
    let mut notes = events.take_notifications().unwrap();
    let good = sign(&keys, &claims("paid", now_s() + 3600));
    let st = login(&c, &good).await.unwrap();
    assert_eq!((s(&st, "tier"), s(&st, "tier_source"), s(&st, "sub")), ("paid", "entitlement", "user-42"));
    let (_, args) = tokio::time::timeout(Duration::from_secs(5), notes.recv()).await.unwrap().unwrap();
    assert_eq!((s(&args[0], "kind"), s(&args[0], "from"), s(&args[0], "to")), ("tier.changed", "free", "paid"));
    let q = call(&c, "quota.status", vec![]).await.unwrap();
    let limits = field(&q, "limits").as_array().unwrap();
    assert_eq!(field(&limits[0], "limit").as_i64(), Some(500));
    let out = call(&c, "account.logout", vec![]).await.unwrap();
    assert_eq!((field(&out, "logged_out").as_bool(), s(&out, "tier")), (Some(true), "free"));
    let keys_list = call(&c, "keys.list", vec![]).await.unwrap();
    assert!(field(&keys_list, "keys").as_array().unwrap().is_empty(), "logout removed the stored token");
    assert!(!d.logs().contains(&good), "the token must not be logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_the_token_holds_until_exp_then_the_default_tier() {
    let mock = Mock::start().await;
    let keys = keypair();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let now_ms = llm_sidecar::clock::now_ms();
    let mut d = Daemon::prepare(
        &config(&mock, &keys, Some(&url)),
        &[("MOCK_KEY", KEY), ("LLM_SIDECAR_FAKE_NOW", &now_ms.to_string())],
    );
    d.spawn();
    let c = d.client().await;
    login(&c, &sign(&keys, &claims("paid", now_s() + 3600))).await.unwrap();
    let e = call(&c, "account.refresh", vec![]).await.unwrap_err();
    assert_eq!(e.code.as_str(), "internal", "backend down: {e:?}");
    assert_eq!(s(&call(&c, "account.status", vec![]).await.unwrap(), "tier"), "paid");
    drop(c);
    d.kill9();
    // Restarted 30 minutes later, still offline: the stored token holds.
    d.set_env("LLM_SIDECAR_FAKE_NOW", &(now_ms + 1_800_000).to_string());
    d.spawn();
    let c = d.client().await;
    wait_until(&c, "account.status", Duration::from_secs(10), |v| field(v, "tier").as_str() == Some("paid")).await;
    drop(c);
    d.kill9();
    // Two hours later the token expired: back to the default tier.
    d.set_env("LLM_SIDECAR_FAKE_NOW", &(now_ms + 7_200_000).to_string());
    d.spawn();
    let c = d.client().await;
    let st = call(&c, "account.status", vec![]).await.unwrap();
    assert_eq!((s(&st, "tier"), field(&st, "logged_in").as_bool()), ("free", Some(false)));
}

#[derive(Clone, Default)]
struct Backend {
    token: Arc<Mutex<String>>,
    requests: u64,
    seen_auth: Arc<Mutex<Vec<String>>>,
}

async fn entitlement(AxState(b): AxState<Backend>, headers: HeaderMap) -> Json<serde_json::Value> {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    b.seen_auth.lock().unwrap().push(auth);
    let start = llm_sidecar::policy::Bounds::calendar_month(llm_sidecar::clock::now_ms()).start_ms / 1000;
    let token = b.token.lock().unwrap().clone();
    Json(
        json!({"token": token, "usage": {"tokens": 1000, "requests": b.requests, "cost_microusd": 0, "period_start": start}}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_usage_is_merged_with_local_unsynced_usage() {
    let mock = Mock::start().await;
    let keys = keypair();
    let fresh_exp = now_s() + 7200;
    let fresh = sign(&keys, &claims("paid", fresh_exp));
    let backend = Backend { token: Arc::new(Mutex::new(fresh.clone())), requests: 497, ..Backend::default() };
    let app = axum::Router::new()
        .route("/entitlement", get(entitlement))
        .route(
            "/checkout",
            post(|Json(b): Json<serde_json::Value>| async move {
                Json(json!({"url": format!("https://pay.example/checkout?tier={}", b["tier"].as_str().unwrap_or(""))}))
            }),
        )
        .route("/portal", post(|| async { Json(json!({"url": "https://pay.example/portal"})) }))
        .with_state(backend.clone());
    let url = common::serve(app).await;

    let d = Daemon::start_with(&config(&mock, &keys, Some(&url)), &[("MOCK_KEY", KEY)]);
    let c = d.client().await;
    let first = sign(&keys, &claims("paid", now_s() + 3600));
    login(&c, &first).await.unwrap();
    chat(&c).await.unwrap(); // one local call the backend has not seen
    let st = call(&c, "account.refresh", vec![]).await.unwrap();
    assert_eq!(field(field(&st, "backend_usage"), "requests").as_u64(), Some(497));
    assert_eq!(backend.seen_auth.lock().unwrap().last().unwrap(), &format!("Bearer {first}"));
    assert_eq!(
        s(&st, "expires_at"),
        llm_sidecar::policy::Bounds::rfc3339(fresh_exp * 1000),
        "the fresh token replaced the old one"
    );
    // 497 on other devices + 1 local unsynced = 498 of 500.
    let q = call(&c, "quota.status", vec![]).await.unwrap();
    assert_eq!(field(&field(&q, "limits").as_array().unwrap()[0], "used").as_i64(), Some(498));
    chat(&c).await.unwrap();
    chat(&c).await.unwrap();
    let e = chat(&c).await.unwrap_err();
    assert_eq!(
        (e.code.as_str(), field(&e.data, "used").as_i64(), field(&e.data, "limit").as_i64()),
        ("quota_exceeded", Some(500), Some(500))
    );

    let link = call(&c, "account.checkout_url", params(&[("tier", "paid".into())])).await.unwrap();
    assert_eq!(s(&link, "url"), "https://pay.example/checkout?tier=paid");
    let link = call(&c, "account.portal_url", vec![]).await.unwrap();
    assert_eq!(s(&link, "url"), "https://pay.example/portal");
    assert!(!d.logs().contains(&fresh) && !d.logs().contains(&first));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_account_login_and_quota() {
    let mock = Mock::start().await;
    let keys = keypair();
    let d = Daemon::start_with(&config(&mock, &keys, None), &[("MOCK_KEY", KEY)]);
    let c = d.client().await;
    chat(&c).await.unwrap();
    let file = d.dir.path().join("token.jwt");
    let token = sign(&keys, &claims("paid", now_s() + 3600));
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let run = |args: &[&str]| {
        let out = common::command(d.dir.path()).arg("--socket").arg(&d.socket).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let out = run(&["account", "login", "--token-file", file.to_str().unwrap()]);
    assert!(out.contains("paid (from entitlement)") && out.contains("user-42"), "{out}");
    assert!(!out.contains(&token));
    let out = run(&["quota"]);
    let end = llm_sidecar::policy::Bounds::rfc3339(
        llm_sidecar::policy::Bounds::calendar_month(llm_sidecar::clock::now_ms()).end_ms,
    );
    assert!(out.contains("tier      paid"), "{out}");
    assert!(out.contains(&end), "{out}");
    assert!(out.contains("requests  [") && out.contains("1 of 500"), "{out}");
    let out = run(&["account", "logout"]);
    assert!(out.contains("tier is now free"), "{out}");
    let out = run(&["account", "status"]);
    assert!(out.contains("not logged in"), "{out}");
}

fn reason_of(e: &RpcError) -> (String, String) {
    (e.code.as_str().to_string(), s(&e.data, "reason").to_string())
}

fn with(mut c: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// Each claim rule: `nbf` and `iat` (60 s of leeway), issuer and audience when configured,
/// signed limits range-checked, the 16 KiB size limit; no refusal quotes the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_checked_rule_by_rule() {
    let mock = Mock::start().await;
    let keys = keypair();
    let cfg =
        format!("{}issuer = \"https://billing.example\"\naudience = \"llm-sidecar\"\n", config(&mock, &keys, None));
    let d = Daemon::start_with(&cfg, &[("MOCK_KEY", KEY)]);
    let c = d.client().await;
    let base = with(claims("paid", now_s() + 3600), json!({"iss": "https://billing.example", "aud": "llm-sidecar"}));
    let refused = |e: RpcError| reason_of(&e).1;

    // nbf and iat: in the future beyond the leeway refused, within it accepted.
    let e = login(&c, &sign(&keys, &with(base.clone(), json!({"nbf": now_s() + 600})))).await.unwrap_err();
    assert_eq!(refused(e), "not_yet_valid");
    let e = login(&c, &sign(&keys, &with(base.clone(), json!({"iat": now_s() + 600})))).await.unwrap_err();
    assert_eq!(refused(e), "issued_in_future");
    login(&c, &sign(&keys, &with(base.clone(), json!({"nbf": now_s() + 20, "iat": now_s() + 20})))).await.unwrap();

    // Issuer and audience must match when configured (aud may be a list).
    let e = login(&c, &sign(&keys, &with(base.clone(), json!({"iss": "https://evil.example"})))).await.unwrap_err();
    assert_eq!(refused(e.clone()), "wrong_issuer");
    assert!(!e.message.contains("evil"), "{}", e.message);
    let mut no_iss = base.clone();
    no_iss.as_object_mut().unwrap().remove("iss");
    assert_eq!(refused(login(&c, &sign(&keys, &no_iss)).await.unwrap_err()), "wrong_issuer");
    let e = login(&c, &sign(&keys, &with(base.clone(), json!({"aud": "someone-else"})))).await.unwrap_err();
    assert_eq!(refused(e), "wrong_audience");
    login(&c, &sign(&keys, &with(base.clone(), json!({"aud": ["x", "llm-sidecar"]})))).await.unwrap();

    // Signed limits: non-negative, whole where counts, with sane maxima.
    for (limits, field_name) in [
        (json!({"monthly_cost_usd": -5.0}), "monthly_cost_usd"),
        (json!({"monthly_cost_usd": 1e12}), "monthly_cost_usd"),
        (json!({"monthly_tokens": -1}), "monthly_tokens"),
        (json!({"monthly_tokens": 1e18}), "monthly_tokens"),
        (json!({"monthly_requests": 2.5}), "monthly_requests"),
    ] {
        let e = login(&c, &sign(&keys, &with(base.clone(), json!({"limits": limits})))).await.unwrap_err();
        assert!(e.message.contains(field_name), "{}", e.message);
        assert_eq!(refused(e), "bad_limit", "{limits}");
    }
    let st = login(&c, &sign(&keys, &with(base.clone(), json!({"limits": {"monthly_requests": 7}})))).await.unwrap();
    assert_eq!(s(&st, "tier"), "paid");

    // Up to 16 KiB is stored (it did not fit the vault's 4 KiB before); more is refused.
    let big = |n: usize| sign(&keys, &with(base.clone(), json!({"pad": "p".repeat(n)})));
    let fits = big(11_500);
    assert!(fits.len() > 12_000 && fits.len() <= 16 * 1024, "{}", fits.len());
    login(&c, &fits).await.unwrap();
    assert_eq!(field(&call(&c, "account.status", vec![]).await.unwrap(), "logged_in").as_bool(), Some(true));
    let too_big = big(13_000);
    assert!(too_big.len() > 16 * 1024);
    let e = login(&c, &too_big).await.unwrap_err();
    assert!(e.message.contains("16384"), "{}", e.message);
    assert_eq!(reason_of(&e), ("unauthorized".into(), "too_large".into()));

    // A malformed header is not echoed back.
    use base64::Engine;
    let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let forged = format!("{}.{}.c2ln", b64(r#"{"alg":"CANARY-7731","typ":"JWT"}"#), b64(r#"{"sub":"CANARY-7731"}"#));
    let e = login(&c, &forged).await.unwrap_err();
    assert_eq!(refused(e.clone()), "malformed");
    assert!(!e.message.contains("CANARY"), "{}", e.message);
    assert!(!d.logs().contains("CANARY") && !d.logs().contains(&fits));
}

/// When the backend's fresh token is refused, the usage in the same reply still applies and the
/// current token is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_fresh_token_keeps_the_old_one_and_applies_the_usage() {
    let mock = Mock::start().await;
    let keys = keypair();
    let bad_fresh = sign(&keys, &with(claims("paid", now_s() + 7200), json!({"limits": {"monthly_cost_usd": -5.0}})));
    let backend = Backend { token: Arc::new(Mutex::new(bad_fresh)), requests: 321, ..Backend::default() };
    let app = axum::Router::new().route("/entitlement", get(entitlement)).with_state(backend.clone());
    let url = common::serve(app).await;
    let d = Daemon::start_with(&config(&mock, &keys, Some(&url)), &[("MOCK_KEY", KEY)]);
    let c = d.client().await;
    let exp = now_s() + 3600;
    login(&c, &sign(&keys, &claims("paid", exp))).await.unwrap();
    let e = call(&c, "account.refresh", vec![]).await.unwrap_err();
    assert_eq!(reason_of(&e), ("unauthorized".into(), "bad_limit".into()));
    assert_eq!(field(&e.data, "kept_current").as_bool(), Some(true));
    let st = call(&c, "account.status", vec![]).await.unwrap();
    assert_eq!(field(&st, "logged_in").as_bool(), Some(true));
    assert_eq!(s(&st, "expires_at"), llm_sidecar::policy::Bounds::rfc3339(exp * 1000), "the old token is kept");
    assert_eq!(field(field(&st, "backend_usage"), "requests").as_u64(), Some(321), "the usage was applied");
}

/// After `account.login`, every event's subject is the entitlement's `sub` (the customer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_subject_is_the_entitlement_sub_after_login() {
    let mock = Mock::start().await;
    let keys = keypair();
    let col = common::collector::Collector::start().await;
    let cfg = format!(
        "{}\n[sync]\nurl = \"{}\"\ninterval_secs = 3600\nflush_threshold = 1000000\nsubject = \"team-fallback\"\n",
        config(&mock, &keys, None),
        col.url
    );
    let d = Daemon::start_with(&cfg, &[("MOCK_KEY", KEY)]);
    let c = d.client().await;
    let before = common::record_many(&c, 1, "app").await;
    assert_eq!(s(&call(&c, "sync.status", vec![]).await.unwrap(), "subject"), "team-fallback");
    call(&c, "sync.now", vec![]).await.unwrap();
    assert_eq!(col.event(&before[0]).unwrap()["subject"], "team-fallback");
    login(&c, &sign(&keys, &claims("paid", now_s() + 3600))).await.unwrap();
    let after = common::record_many(&c, 2, "app").await;
    call(&c, "sync.now", vec![]).await.unwrap();
    for id in &after {
        assert_eq!(col.event(id).unwrap()["subject"], "user-42");
    }
    assert_eq!(s(&call(&c, "sync.status", vec![]).await.unwrap(), "subject"), "user-42");
}
