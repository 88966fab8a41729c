//! Prepaid credits over the real socket against the mock provider: the balance from the
//! entitlement token and the backend's `/entitlement` reply, admission that never lets the
//! balance go below zero (200 concurrent calls against a balance for 50), `after_quota` and
//! `always` tiers, nothing deducted for an unbilled failure, the billed part of a cancelled
//! stream deducted, the audit log, and `credits.low` / `credits.exhausted` / `credits.granted`
//! once per crossing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod mock_provider;

use axum::routing::get;
use axum::Json;
use common::entitlement::{keypair, now_s, sign, Keys};
use common::{call, field, params, wait_until, Daemon};
use llm_sidecar::rpc::{Client, ClientError, RpcError};
use mock_provider::{Fault, Mock};
use rmpv::Value;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "sk-test-credits-PLATFORM-5512";

/// A signed entitlement for `tier` carrying a credit balance.
fn token(keys: &Keys, tier: &str, balance: i64) -> String {
    let b = llm_sidecar::policy::Bounds::calendar_month(llm_sidecar::clock::now_ms());
    let claims = json!({"sub": "user-7", "tier": tier, "period_start": b.start_ms / 1000, "period_end": b.end_ms / 1000,
                        "exp": now_s() + 3600, "iat": now_s(), "credits": {"balance": balance, "as_of": now_s()}});
    sign(keys, &claims)
}

/// The tiers of these tests: a credit is one micro-dollar, so the mock's calls (12 + 7 tokens of
/// gpt-4o-mini: 6 µ$) cost whole, distinct numbers of credits.
const TIERS: &str = r#"
[policy]
default_tier = "free"
[credits]
unit_microusd = 1
markup = 2.0
low_balance = 20
[tiers.free]
rank = 0
monthly_requests = 1
[tiers.payg]
rank = 1
credits = "always"
[tiers.plus]
rank = 2
monthly_requests = 2
credits = "after_quota"
credits_per_request = 3
[tiers.flat]
rank = 3
credits = "always"
credits_per_request = 1
"#;

fn config(mock: &Mock, keys: &Keys, backend: Option<&str>) -> String {
    let url = backend.map_or(String::new(), |u| format!("url = \"{u}\"\npoll_secs = 3600\n"));
    format!(
        "[providers.openai]\nbase_url = \"{}/v1\"\nkey_env = \"MOCK_KEY\"\n[router]\nmax_retries = 0\n{TIERS}\n[account]\n{url}public_key_pem = '''\n{}'''\n",
        mock.url(),
        keys.public_pem
    )
}

fn chat_params(stream: bool) -> Vec<Value> {
    let msg = Value::Map(vec![(Value::from("role"), Value::from("user")), (Value::from("content"), Value::from("hi"))]);
    params(&[
        ("model", "openai/gpt-4o-mini".into()),
        ("messages", Value::Array(vec![msg])),
        ("max_tokens", 10.into()),
        ("stream", stream.into()),
    ])
}

async fn chat(c: &Client) -> Result<Value, RpcError> {
    call(c, "chat", chat_params(false)).await
}

fn i(v: &Value, k: &str) -> i64 {
    field(v, k).as_i64().unwrap_or_else(|| panic!("`{k}` not an integer in {v}"))
}

async fn balance(c: &Client) -> Value {
    call(c, "credits.balance", vec![]).await.unwrap()
}

async fn transactions(c: &Client) -> Vec<Value> {
    let t = call(c, "credits.transactions", params(&[("limit", 1000.into())])).await.unwrap();
    field(&t, "transactions").as_array().unwrap().clone()
}

fn deductions(txs: &[Value]) -> Vec<&Value> {
    txs.iter().filter(|t| field(t, "kind").as_str() == Some("deduction")).collect()
}

fn start(mock: &Mock, keys: &Keys, backend: Option<&str>) -> Daemon {
    Daemon::start_with(&config(mock, keys, backend), &[("MOCK_KEY", KEY)])
}

/// A daemon (no account backend) logged in to `tier` with a balance of `credits`, and a client.
async fn logged_in(tier: &str, credits: i64) -> (Mock, Keys, Daemon, Client) {
    let mock = Mock::start().await;
    let keys = keypair();
    let d = start(&mock, &keys, None);
    let c = d.client().await;
    call(&c, "account.login", params(&[("token", token(&keys, tier, credits).into())])).await.unwrap();
    (mock, keys, d, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_calls_against_a_balance_for_fifty() {
    let (_mock, _keys, d, c) = logged_in("flat", 50).await;
    assert_eq!((i(&balance(&c).await, "balance"), i(&balance(&c).await, "available")), (50, 50));
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(d.client().await);
    }
    let results = futures::future::join_all((0..200).map(|n| chat(&clients[n % 4]))).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused: Vec<&RpcError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(refused.iter().all(|e| e.code.as_str() == "insufficient_credits"), "{:?}", refused.first());
    assert_eq!((ok, refused.len()), (50, 150));
    let e = refused[0];
    assert_eq!(i(&e.data, "required"), 1);
    assert!(i(&e.data, "balance") <= 0 || i(&e.data, "balance") < i(&e.data, "required"));
    assert!(field(&e.data, "checkout").is_nil(), "no backend, no checkout");
    let b = balance(&c).await;
    assert_eq!((i(&b, "balance"), i(&b, "reserved"), i(&b, "available")), (0, 0, 0));
    assert_eq!(
        (field(&b, "uses").as_str(), field(field(&b, "price"), "basis").as_str()),
        (Some("always"), Some("fixed"))
    );
    let txs = transactions(&c).await;
    let ded = deductions(&txs);
    assert_eq!(ded.len(), 50);
    assert_eq!(ded.iter().map(|t| i(t, "credits")).sum::<i64>(), -50, "the deductions sum to the balance change");
    // Each deduction names its usage record, and each record is paid once.
    let records = call(&c, "usage.records", params(&[("limit", 1000.into())])).await.unwrap();
    let mut ids: Vec<String> = field(&records, "records")
        .as_array()
        .unwrap()
        .iter()
        .map(|r| field(r, "id").as_str().unwrap().to_string())
        .collect();
    let mut paid: Vec<String> = ded.iter().map(|t| field(t, "record_id").as_str().unwrap().to_string()).collect();
    ids.sort();
    paid.sort();
    assert_eq!(ids, paid);
    // The opening balance is in the log as a grant.
    let grants: Vec<i64> =
        txs.iter().filter(|t| field(t, "kind").as_str() == Some("grant")).map(|t| i(t, "credits")).collect();
    assert_eq!(grants, [50]);
    // The CLI shows the same.
    let (st, out, err) = d.cli(&["credits"], None);
    assert!(st.success(), "{err}");
    assert!(out.contains("balance    0 credits") && out.contains("deduction"), "{out}");
    let (st, out, _) = d.cli(&["credits", "--json", "--limit", "3"], None);
    assert!(st.success());
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((j["balance"]["balance"].as_i64(), j["transactions"].as_array().map(Vec::len)), (Some(0), Some(3)));
    // The store holds the same log for sqlite3 users, with the record and the deduction together.
    let ledger = d.data_dir.join("ledger.sqlite");
    let conn = rusqlite::Connection::open_with_flags(&ledger, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM credit_transactions t JOIN records r ON r.id = t.record_id", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_quota_uses_the_quota_then_credits_then_refuses() {
    let (mock, _keys, _d, c) = logged_in("plus", 7).await;
    chat(&c).await.unwrap();
    chat(&c).await.unwrap();
    assert!(deductions(&transactions(&c).await).is_empty(), "the included quota first");
    chat(&c).await.unwrap();
    chat(&c).await.unwrap();
    let txs = transactions(&c).await;
    assert_eq!(deductions(&txs).iter().map(|t| i(t, "credits")).collect::<Vec<_>>(), [-3, -3]);
    assert_eq!(i(&balance(&c).await, "balance"), 1);
    let e = chat(&c).await.unwrap_err();
    assert_eq!(e.code.as_str(), "insufficient_credits", "{e:?}");
    assert_eq!((i(&e.data, "balance"), i(&e.data, "required")), (1, 3));
    assert_eq!(mock.requests(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_deducts_what_was_billed_nothing_for_a_failure_and_the_billed_part_of_a_cancel() {
    let (mock, _keys, d, c) = logged_in("payg", 1000).await;
    // A call at markup 2 on a 1 µ$ credit: twice its cost.
    let r = chat(&c).await.unwrap();
    let cost = i(&r, "cost_microusd");
    assert!(cost > 0);
    let ded = transactions(&c).await;
    let ded = deductions(&ded);
    assert_eq!(ded.len(), 1);
    assert_eq!((i(ded[0], "credits"), i(ded[0], "cost_microusd")), (-2 * cost, cost));
    assert_eq!(field(ded[0], "basis").as_str(), Some("markup"));
    assert_eq!(i(&balance(&c).await, "balance"), 1000 - 2 * cost);

    // A provider failure that billed nothing deducts nothing.
    mock.push([Fault::Status { status: 500, headers: vec![], body: r#"{"error":{"message":"boom"}}"#.into() }]);
    let e = chat(&c).await.unwrap_err();
    assert_eq!(e.code.as_str(), "provider_error");
    assert_eq!(deductions(&transactions(&c).await).len(), 1);
    assert_eq!(i(&balance(&c).await, "balance"), 1000 - 2 * cost);

    // A stream cancelled after a few chunks deducts the usage billed so far.
    mock.push([Fault::Slow { every: Duration::from_millis(50), chunks: 200 }]);
    let s = d.client().await;
    let mut notes = s.take_notifications().unwrap();
    let (id, rx) = s.start("chat", chat_params(true)).await.unwrap();
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(5), notes.recv()).await.unwrap().unwrap();
    }
    s.cancel(id).await.unwrap();
    match Client::finish(id, rx).await {
        Err(ClientError::Rpc(e)) => assert_eq!(e.code.as_str(), "cancelled"),
        other => panic!("expected cancelled, got {other:?}"),
    }
    let txs = transactions(&c).await;
    let last = deductions(&txs)[0];
    let records = call(&c, "usage.records", params(&[("limit", 10.into())])).await.unwrap();
    let rec = field(&records, "records")
        .as_array()
        .unwrap()
        .iter()
        .find(|r| field(r, "id") == field(last, "record_id"))
        .cloned()
        .unwrap();
    assert_eq!(field(&rec, "status").as_str(), Some("cancelled"));
    let billed = i(&rec, "cost_microusd");
    assert_eq!(i(last, "credits"), -(2 * billed).max(0), "{rec}");
    assert_eq!(i(&balance(&c).await, "reserved"), 0);
}

/// The account backend's state: its balance and when it last changed (its `as_of`, as a real
/// backend reports it; the time of the request would make every fetch look like a new report).
#[derive(Clone, Default)]
struct Backend {
    balance: Arc<Mutex<(i64, i64)>>,
}

impl Backend {
    fn set(&self, balance: i64) {
        *self.balance.lock().unwrap() = (balance, now_s());
    }
}

/// The account backend: `/entitlement` reports [`Backend`]'s balance (as a purchase, order-1), and
/// `/checkout` answers a link naming the kind asked for.
fn backend_app(backend: &Backend) -> axum::Router {
    axum::Router::new()
        .route(
            "/entitlement",
            get(|axum::extract::State(b): axum::extract::State<Backend>| async move {
                let (balance, as_of) = *b.balance.lock().unwrap();
                Json(json!({"credits": {"balance": balance, "as_of": as_of, "kind": "purchase", "reference": "order-1"}}))
            }),
        )
        .route(
            "/checkout",
            axum::routing::post(|Json(b): Json<serde_json::Value>| async move {
                Json(json!({"url": format!("https://pay.example/checkout?kind={}", b["kind"].as_str().unwrap_or("tier"))}))
            }),
        )
        .with_state(backend.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_from_the_backend_and_events_once_per_crossing() {
    let mock = Mock::start().await;
    let keys = keypair();
    let backend = Backend::default();
    let app = backend_app(&backend);
    let url = common::serve(app).await;
    let d = start(&mock, &keys, Some(&url));
    let c = d.client().await;
    let events = d.client().await;
    let kinds = Value::Array(vec!["credits.low".into(), "credits.exhausted".into(), "credits.granted".into()]);
    call(&events, "events.subscribe", params(&[("kinds", kinds)])).await.unwrap();
    let mut notes = events.take_notifications().unwrap();
    async fn next(n: &mut tokio::sync::mpsc::UnboundedReceiver<llm_sidecar::rpc::client::Notification>) -> String {
        let (_, args) = tokio::time::timeout(Duration::from_secs(5), n.recv()).await.expect("an event").unwrap();
        let e = &args[0];
        format!("{} {}", field(e, "kind").as_str().unwrap(), i(e, "balance"))
    }
    call(&c, "account.login", params(&[("token", token(&keys, "flat", 22).into())])).await.unwrap();
    assert_eq!(next(&mut notes).await, "credits.granted 22");
    // 22 -> 0 at one credit a call: low once (below 20), exhausted once.
    for _ in 0..22 {
        chat(&c).await.unwrap();
    }
    assert_eq!(chat(&c).await.unwrap_err().code.as_str(), "insufficient_credits");
    assert_eq!(next(&mut notes).await, "credits.low 19");
    assert_eq!(next(&mut notes).await, "credits.exhausted 0");
    // The backend reports a bought pack of 500: the balance is 500 and a purchase is logged.
    backend.set(22 + 500);
    call(&c, "account.refresh", vec![]).await.unwrap();
    assert_eq!(next(&mut notes).await, "credits.granted 500");
    let b = balance(&c).await;
    assert_eq!((i(&b, "balance"), i(&b, "backend_balance"), i(&b, "unacknowledged")), (500, 522, 22));
    let txs = transactions(&c).await;
    let purchase = txs.iter().find(|t| field(t, "kind").as_str() == Some("purchase")).unwrap();
    assert_eq!((i(purchase, "credits"), field(purchase, "reference").as_str()), (500, Some("order-1")));
    // The same report again changes nothing; down below 20 again is a new crossing.
    call(&c, "account.refresh", vec![]).await.unwrap();
    for _ in 0..481 {
        chat(&c).await.unwrap();
    }
    assert_eq!(next(&mut notes).await, "credits.low 19");
    assert!(tokio::time::timeout(Duration::from_millis(300), notes.recv()).await.is_err(), "no repeats");
    assert_eq!(txs.iter().filter(|t| field(t, "kind").as_str() == Some("purchase")).count(), 1);
    // With a backend, a refusal says where to buy credits.
    for _ in 0..19 {
        chat(&c).await.unwrap();
    }
    let e = chat(&c).await.unwrap_err();
    assert_eq!(e.code.as_str(), "insufficient_credits");
    let checkout = field(&e.data, "checkout");
    assert_eq!(field(checkout, "method").as_str(), Some("account.checkout_url"));
    assert_eq!(field(checkout, "url").as_str(), Some("https://pay.example/checkout?kind=credits"));
    let link =
        call(&c, "account.checkout_url", params(&[("kind", "credits".into()), ("pack", "2500".into())])).await.unwrap();
    assert_eq!(field(&link, "url").as_str(), Some("https://pay.example/checkout?kind=credits"));
    assert_eq!(
        call(&c, "account.checkout_url", params(&[("kind", "gold".into())])).await.unwrap_err().code.as_str(),
        "invalid_params"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balance_survives_a_restart_and_bad_credit_claims_are_refused() {
    let (_mock, keys, mut d, c) = logged_in("flat", 10).await;
    chat(&c).await.unwrap();
    chat(&c).await.unwrap();
    drop(c);
    d.kill9();
    let d = d.spawn_again();
    let c = d.client().await;
    wait_until(&c, "credits.balance", Duration::from_secs(10), |b| field(b, "tier").as_str() == Some("flat")).await;
    let b = balance(&c).await;
    assert_eq!((i(&b, "balance"), i(&b, "backend_balance")), (8, 10), "{b}");
    assert_eq!(transactions(&c).await.iter().filter(|t| field(t, "kind").as_str() == Some("grant")).count(), 1);
    // A negative or fractional balance in a token is refused with the reason.
    for bad in [json!(-1), json!(1.5)] {
        let b = llm_sidecar::policy::Bounds::calendar_month(llm_sidecar::clock::now_ms());
        let claims = json!({"sub": "u", "tier": "flat", "period_start": b.start_ms / 1000, "period_end": b.end_ms / 1000,
                            "exp": now_s() + 60, "credits": {"balance": bad}});
        let t = sign(&keys, &claims);
        let e = call(&c, "account.login", params(&[("token", t.into())])).await.unwrap_err();
        assert!(e.message.contains("credits.balance"), "{e:?}");
    }
}

/// A deduction travels with its usage record: a SIGKILL while their batch is in flight (the
/// backend stored it, the answer never came), then the re-send after the restart under the same
/// Idempotency-Key: the backend sees each deduction once, as a `dev.llm-sidecar.credits.v1`
/// event whose id is the transaction's. After the ack the deductions are acknowledged, so a
/// backend balance that counts them (as of after the sync) is not charged for them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deductions_sync_once_across_a_kill_9_and_the_backend_balance_then_counts_them() {
    use common::collector::{Collector, Fault as SyncFault};
    let col = Collector::start().await;
    col.push_fault(SyncFault::CommitThenHang(Duration::from_secs(60)));
    let mock = Mock::start().await;
    let keys = keypair();
    let backend = Backend::default();
    backend.set(10);
    let app = backend_app(&backend);
    let url = common::serve(app).await;
    let sync = format!(
        "[sync]\nurl = \"{}\"\ninterval_secs = 3600\nflush_threshold = 1000000\nbackoff_initial_ms = 50\nbackoff_max_ms = 200\ntimeout_secs = 60\n",
        col.url
    );
    let mut d = Daemon::start_with(&format!("{sync}{}", config(&mock, &keys, Some(&url))), &[("MOCK_KEY", KEY)]);
    let c = d.client().await;
    call(&c, "account.login", params(&[("token", token(&keys, "flat", 10).into())])).await.unwrap();
    for _ in 0..3 {
        chat(&c).await.unwrap();
    }
    let txs: Vec<String> =
        deductions(&transactions(&c).await).iter().map(|t| field(t, "id").as_str().unwrap().to_string()).collect();
    assert_eq!(txs.len(), 3);
    let now = tokio::spawn(async move { c.call("sync.now", vec![]).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while col.requests().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no batch was sent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    d.kill9();
    let _ = now.await;
    assert_eq!(col.count(), 6, "3 usage and 3 credit events, stored before the crash");
    d.spawn();
    let c = d.client().await;
    wait_until(&c, "sync.status", Duration::from_secs(10), |v| field(v, "pending").as_u64() == Some(0)).await;
    let reqs = col.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!((reqs[1].idempotency_key.as_ref(), &reqs[1].body), (reqs[0].idempotency_key.as_ref(), &reqs[0].body));
    assert_eq!((col.replayed_batches(), col.duplicate_events()), (1, 0));
    for id in &txs {
        let e = col.event(id).unwrap_or_else(|| panic!("deduction {id} not at the backend"));
        assert_eq!(e["type"], "dev.llm-sidecar.credits.v1");
        assert_eq!((e["data"]["kind"].as_str(), e["data"]["credits"].as_i64()), (Some("deduction"), Some(-1)));
        assert!(col.event(e["data"]["record_id"].as_str().unwrap()).is_some(), "its usage record went with it");
    }
    // Acknowledged with their records; the balance is still 10 - 3 until the backend says more.
    let now_txs = transactions(&c).await;
    assert!(deductions(&now_txs).iter().all(|t| field(t, "synced_ms").as_i64().is_some()), "{now_txs:?}");
    assert_eq!(i(&balance(&c).await, "balance"), 7);
    // The backend, having received them, reports 7: nothing is deducted twice, no adjustment.
    backend.set(7);
    call(&c, "account.refresh", vec![]).await.unwrap();
    let b = balance(&c).await;
    assert_eq!((i(&b, "balance"), i(&b, "backend_balance"), i(&b, "unacknowledged")), (7, 7, 0), "{b}");
    assert_eq!(transactions(&c).await.len(), now_txs.len(), "no adjustment entry");
}

/// The example plan (`examples/policies/credit-packs.toml`) as shipped: a pay-as-you-go call is
/// priced at markup 1.25 over one-cent credits (a few micro-dollars round up to 1 credit), and
/// the flat tier charges 1 per call plus 1 per 1,000 tokens (started).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credit_packs_example_plan() {
    let mock = Mock::start().await;
    let keys = keypair();
    let plan =
        std::fs::read_to_string(format!("{}/examples/policies/credit-packs.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let config = format!(
        "[providers.openai]\nbase_url = \"{}/v1\"\nkey_env = \"MOCK_KEY\"\n{plan}\n[account]\npublic_key_pem = '''\n{}'''\n",
        mock.url(),
        keys.public_pem
    );
    let d = Daemon::start_with(&config, &[("MOCK_KEY", KEY)]);
    let c = d.client().await;
    call(&c, "account.login", params(&[("token", token(&keys, "payg", 500).into())])).await.unwrap();
    chat(&c).await.unwrap();
    let b = balance(&c).await;
    assert_eq!((i(&b, "balance"), field(&b, "uses").as_str()), (499, Some("always")));
    assert_eq!(field(field(&b, "price"), "markup").as_f64(), Some(1.25));
    call(&c, "account.login", params(&[("token", token(&keys, "flat", 500).into())])).await.unwrap();
    chat(&c).await.unwrap();
    let ded = transactions(&c).await;
    assert_eq!(i(deductions(&ded)[0], "credits"), -2, "1 per call + 1 per started 1,000 tokens");
    // Without a token the default tier (payg) has nothing to spend.
    call(&c, "account.logout", vec![]).await.unwrap();
    assert_eq!(chat(&c).await.unwrap_err().code.as_str(), "insufficient_credits");
}
