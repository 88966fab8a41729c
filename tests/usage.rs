//! `usage.*` over the real socket: validation, durability across kills, counters that match the
//! records, summaries, paging, export/import round trip, clear, and the CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{all_records, field, params, Daemon};
use llm_sidecar::rpc::{Client, ClientError, ErrorCode};
use rmpv::Value;
use std::collections::HashMap;
use std::time::Duration;

fn u(v: &Value, name: &str) -> u64 {
    field(v, name).as_u64().unwrap_or_else(|| panic!("`{name}` is not an integer in {v}"))
}

fn i(v: &Value, name: &str) -> i64 {
    field(v, name).as_i64().unwrap_or_else(|| panic!("`{name}` is not an integer in {v}"))
}

fn s<'a>(v: &'a Value, name: &str) -> &'a str {
    field(v, name).as_str().unwrap_or_else(|| panic!("`{name}` is not a string in {v}"))
}

fn invalid(r: Result<Value, ClientError>) -> String {
    match r {
        Err(ClientError::Rpc(e)) if e.code == ErrorCode::InvalidParams => e.message,
        other => panic!("expected invalid_params, got {other:?}"),
    }
}

/// `usage.record` with provider openai / model gpt-4o unless `extra` says otherwise.
async fn rec(c: &Client, extra: &[(&str, Value)]) -> Result<Value, ClientError> {
    let mut p: Vec<(&str, Value)> = vec![("provider", Value::from("openai")), ("model", Value::from("gpt-4o"))];
    p.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    p.extend(extra.iter().cloned());
    c.call("usage.record", params(&p)).await
}

async fn summary(c: &Client, period: &str, by: &str) -> Value {
    c.call("usage.summary", params(&[("period", period.into()), ("group_by", by.into())])).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_validates_and_is_idempotent_by_id() {
    let d = Daemon::start();
    let c = d.client().await;
    c.call("daemon.hello", params(&[("app", "my-editor".into())])).await.unwrap();
    let r = rec(&c, &[("input_tokens", 12.into()), ("output_tokens", 3.into()), ("cost_usd", 0.0125.into())])
        .await
        .unwrap();
    assert_eq!(i(&r, "cost_microusd"), 12_500);
    assert_eq!(field(&r, "duplicate").as_bool(), Some(false));
    let id = s(&r, "id").to_string();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    let recs = all_records(&c).await;
    assert_eq!(s(&recs[0], "app"), "my-editor", "app comes from daemon.hello");
    assert_eq!(u(&recs[0], "input_tokens"), 12);

    // Retrying with the same id is harmless.
    let again = rec(&c, &[("id", id.as_str().into()), ("input_tokens", 12.into())]).await.unwrap();
    assert_eq!(field(&again, "duplicate").as_bool(), Some(true));
    let other = rec(&c, &[("app", "other".into())]).await.unwrap();
    assert_eq!(all_records(&c).await.len(), 2);
    assert_ne!(s(&other, "id"), id);

    let cases: Vec<(&str, Vec<(&str, Value)>)> = vec![
        ("input_tokens", vec![("input_tokens", Value::from(-1))]),
        ("output_tokens", vec![("output_tokens", Value::from(1_000_000_001u64))]),
        ("cached_tokens", vec![("cached_tokens", Value::F64(f64::NAN))]),
        ("reasoning_tokens", vec![("reasoning_tokens", Value::F64(1.5))]),
        ("cost_usd", vec![("cost_usd", Value::F64(f64::INFINITY))]),
        ("cost_usd", vec![("cost_usd", Value::F64(10_000.01))]),
        ("cost_microusd", vec![("cost_microusd", Value::from(-5))]),
        ("cost_microusd", vec![("cost_microusd", Value::from(10_000_000_001u64))]),
        ("either", vec![("cost_microusd", Value::from(1)), ("cost_usd", Value::F64(1.0))]),
        ("app", vec![("app", Value::from(""))]),
        ("ts", vec![("ts", Value::from(1000))]),
        ("id", vec![("id", Value::from("not-a-uuid"))]),
        ("id", vec![("id", Value::from(uuid::Uuid::new_v4().to_string()))]),
        ("latency_ms", vec![("latency_ms", Value::from(-3))]),
        ("key_source", vec![("key_source", Value::from("stolen"))]),
        ("unknown field", vec![("tokens", Value::from(3))]),
    ];
    for (what, extra) in cases {
        let msg = invalid(rec(&c, &extra).await);
        assert!(msg.contains(what), "{what}: {msg}");
    }
    let missing = invalid(c.call("usage.record", params(&[("provider", "openai".into())])).await);
    assert!(missing.contains("model"), "{missing}");
    assert_eq!(all_records(&c).await.len(), 2, "nothing invalid was stored");
    // A backdated record gets an id from its own time, so time filters find it.
    let ts = llm_sidecar::clock::now_ms() - 3 * 86_400_000;
    rec(&c, &[("ts", ts.into())]).await.unwrap();
    let window = c.call("usage.records", params(&[("from", (ts - 1).into()), ("to", (ts + 1).into())])).await.unwrap();
    assert_eq!(field(&window, "records").as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_groups_totals_and_projection() {
    let d = Daemon::start();
    let c = d.client().await;
    let rows: [(&str, &str, &str, &str, u64, u64, u64); 5] = [
        ("ed", "openai", "gpt-4o", "byok", 100, 10, 1000),
        ("ed", "openai", "gpt-4o-mini", "byok", 50, 5, 100),
        ("term", "anthropic", "claude-3-5-haiku", "platform", 30, 20, 700),
        ("term", "ollama", "llama3", "local", 500, 100, 0),
        ("ed", "anthropic", "claude-3-5-haiku", "platform", 1, 1, 7),
    ];
    for (app, provider, model, ks, input, output, cost) in rows {
        c.call(
            "usage.record",
            params(&[
                ("app", app.into()),
                ("provider", provider.into()),
                ("model", model.into()),
                ("key_source", ks.into()),
                ("input_tokens", input.into()),
                ("output_tokens", output.into()),
                ("cost_microusd", cost.into()),
                ("status", if provider == "ollama" { "error" } else { "ok" }.into()),
            ]),
        )
        .await
        .unwrap();
    }
    let by_provider = summary(&c, "month", "provider").await;
    let totals = field(&by_provider, "totals");
    assert_eq!((u(totals, "requests"), u(totals, "failed")), (5, 1));
    assert_eq!((u(totals, "input_tokens"), u(totals, "output_tokens"), u(totals, "total_tokens")), (681, 136, 817));
    assert_eq!(i(totals, "cost_microusd"), 1807);
    let groups: Vec<(String, i64)> = field(&by_provider, "groups")
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (s(g, "key").to_string(), i(g, "cost_microusd")))
        .collect();
    assert_eq!(groups, vec![("openai".into(), 1100), ("anthropic".into(), 707), ("ollama".into(), 0)]);
    let month = s(&by_provider, "from").to_string();
    assert_eq!(s(&by_provider, "to"), month);
    let proj = field(&by_provider, "projected_month_end");
    assert_eq!(s(proj, "month"), month);
    assert_eq!(i(field(proj, "month_to_date"), "cost_microusd"), 1807);
    assert!(i(proj, "cost_microusd") >= 1807);
    assert!(u(proj, "requests") >= 5);

    let by_model = summary(&c, "day", "model").await;
    let keys: Vec<&str> = field(&by_model, "rows").as_array().unwrap().iter().map(|r| s(r, "key")).collect();
    assert!(keys.contains(&"anthropic/claude-3-5-haiku") && keys.contains(&"openai/gpt-4o-mini"), "{keys:?}");
    let haiku = field(&by_model, "groups")
        .as_array()
        .unwrap()
        .iter()
        .find(|g| s(g, "key") == "anthropic/claude-3-5-haiku")
        .unwrap();
    assert_eq!(u(haiku, "requests"), 2);
    let by_ks = summary(&c, "day", "key_source").await;
    assert_eq!(field(&by_ks, "groups").as_array().unwrap().len(), 3);
    let by_app = summary(&c, "month", "app").await;
    let ed = field(&by_app, "groups").as_array().unwrap().iter().find(|g| s(g, "key") == "ed").unwrap();
    assert_eq!(u(ed, "requests"), 3);

    let past = c
        .call(
            "usage.summary",
            params(&[("period", "day".into()), ("from", "2021-01-01".into()), ("to", "2021-01-31".into())]),
        )
        .await
        .unwrap();
    assert_eq!(u(field(&past, "totals"), "requests"), 0);
    let msg = invalid(c.call("usage.summary", params(&[("period", "month".into()), ("from", "2024-13".into())])).await);
    assert!(msg.contains("from"), "{msg}");
    let msg = invalid(c.call("usage.summary", params(&[("group_by", "colour".into())])).await);
    assert!(msg.contains("colour"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_paged_and_filtered() {
    let d = Daemon::start();
    let c = d.client().await;
    for n in 0..12u64 {
        let app = if n % 3 == 0 { "three" } else { "other" };
        rec(&c, &[("app", app.into()), ("input_tokens", n.into())]).await.unwrap();
    }
    let page = c.call("usage.records", params(&[("limit", 5.into()), ("app", "other".into())])).await.unwrap();
    let first: Vec<u64> = field(&page, "records").as_array().unwrap().iter().map(|r| u(r, "input_tokens")).collect();
    assert_eq!(first, vec![11, 10, 8, 7, 5], "newest first");
    let next = s(&page, "next_cursor").to_string();
    let page2 = c
        .call("usage.records", params(&[("limit", 5.into()), ("app", "other".into()), ("cursor", next.into())]))
        .await
        .unwrap();
    let second: Vec<u64> = field(&page2, "records").as_array().unwrap().iter().map(|r| u(r, "input_tokens")).collect();
    assert_eq!(second, vec![4, 2, 1]);
    assert!(field(&page2, "next_cursor").is_nil());
    let asc = c.call("usage.records", params(&[("order", "asc".into()), ("app", "three".into())])).await.unwrap();
    let asc: Vec<u64> = field(&asc, "records").as_array().unwrap().iter().map(|r| u(r, "input_tokens")).collect();
    assert_eq!(asc, vec![0, 3, 6, 9]);
    let none = c.call("usage.records", params(&[("model", "nope".into())])).await.unwrap();
    assert!(field(&none, "records").as_array().unwrap().is_empty());
    let today = c
        .call("usage.records", params(&[("from", "2020-01-01".into()), ("to", "2100-01-01T00:00:00Z".into())]))
        .await
        .unwrap();
    assert_eq!(field(&today, "records").as_array().unwrap().len(), 12);
    assert!(invalid(c.call("usage.records", params(&[("limit", 0.into())])).await).contains("limit"));
    assert!(invalid(c.call("usage.records", params(&[("from", "yesterday".into())])).await).contains("from"));
}

/// Sums the records by provider, to compare with the counters.
fn sums(records: &[Value]) -> HashMap<String, (u64, u64, i64)> {
    let mut m: HashMap<String, (u64, u64, i64)> = HashMap::new();
    for r in records {
        let e = m.entry(s(r, "provider").to_string()).or_default();
        e.0 += 1;
        e.1 += u(r, "input_tokens") + u(r, "output_tokens");
        e.2 += i(r, "cost_microusd");
    }
    m
}

fn counter_sums(summary: &Value) -> HashMap<String, (u64, u64, i64)> {
    field(summary, "groups")
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (s(g, "key").to_string(), (u(g, "requests"), u(g, "total_tokens"), i(g, "cost_microusd"))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_match_records_after_kills_and_restarts() {
    let mut d = Daemon::start();
    let mut acked = 0usize;
    for round in 0..4u64 {
        let c = d.client().await;
        let calls = (0..200u64).map(|n| {
            let provider = ["openai", "anthropic", "gemini"][(n % 3) as usize];
            rec_owned(&c, provider, n * round, n % 17, (n * 7) as i64)
        });
        acked += futures::future::join_all(calls).await.into_iter().filter(Result::is_ok).count();
        let recs = all_records(&c).await;
        assert_eq!(recs.len(), acked);
        assert_eq!(sums(&recs), counter_sums(&summary(&c, "day", "provider").await));
        drop(c);
        if round % 2 == 0 {
            d.kill9();
        } else {
            d.terminate(Duration::from_secs(10));
        }
        d.spawn();
        let c = d.client().await;
        let recs = all_records(&c).await;
        assert_eq!(recs.len(), acked, "every acknowledged record survived the restart");
        assert_eq!(sums(&recs), counter_sums(&summary(&c, "month", "provider").await));
        assert_eq!(u(&c.call("sync.status", vec![]).await.unwrap(), "pending"), acked as u64);
    }
}

async fn rec_owned(c: &Client, provider: &str, input: u64, output: u64, cost: i64) -> Result<Value, ClientError> {
    rec(
        c,
        &[
            ("provider", provider.into()),
            ("input_tokens", input.into()),
            ("output_tokens", output.into()),
            ("cost_microusd", cost.into()),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_import_round_trip_is_idempotent() {
    let a = Daemon::start();
    let ca = a.client().await;
    for n in 0..30u64 {
        rec(
            &ca,
            &[
                ("input_tokens", n.into()),
                ("cost_microusd", (n * 3).into()),
                ("route", "fast".into()),
                ("ttft_ms", 40.into()),
            ],
        )
        .await
        .unwrap();
    }
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut p = vec![("limit", Value::from(7))];
        if let Some(cur) = &cursor {
            p.push(("cursor", cur.as_str().into()));
        }
        let page = ca.call("usage.export", params(&p)).await.unwrap();
        assert_eq!(s(&page, "format"), "llm-sidecar.usage");
        assert_eq!(u(&page, "version"), 1);
        cursor = field(&page, "next_cursor").as_str().map(str::to_string);
        pages.push(page);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(pages.len(), 5);

    let b = Daemon::start();
    let cb = b.client().await;
    let mut imported = 0;
    for page in &pages {
        // An export page is accepted as it is.
        let r = cb.call("usage.import", vec![page.clone()]).await.unwrap();
        imported += u(&r, "imported");
        assert_eq!(u(&r, "duplicates"), 0);
    }
    assert_eq!(imported, 30);
    for page in &pages {
        let r = cb.call("usage.import", vec![page.clone()]).await.unwrap();
        assert_eq!(u(&r, "imported"), 0, "import is idempotent by id");
    }
    // The same records; on B each names A, where it was made, as its source (provenance).
    let source_a = s(&ca.call("sync.status", vec![]).await.unwrap(), "source").to_string();
    let mut on_b = all_records(&cb).await;
    for r in &mut on_b {
        let Value::Map(m) = r else { panic!("{r}") };
        let at = m.iter().position(|(k, _)| k.as_str() == Some("source")).expect("imported records keep a source");
        assert_eq!(m.remove(at).1.as_str(), Some(source_a.as_str()));
    }
    assert_eq!(all_records(&ca).await, on_b);
    let (sa, sb) = (summary(&ca, "month", "model").await, summary(&cb, "month", "model").await);
    assert_eq!(field(&sa, "groups"), field(&sb, "groups"));
    assert_eq!(u(&cb.call("sync.status", vec![]).await.unwrap(), "pending"), 30, "new records are queued for sync");

    let wrong_version =
        params(&[("format", "llm-sidecar.usage".into()), ("version", 99.into()), ("records", Value::Array(vec![]))]);
    assert!(invalid(cb.call("usage.import", wrong_version).await).contains("version"));
    // One bad record and nothing is imported.
    let mut recs = field(&pages[0], "records").as_array().unwrap().clone();
    let fresh = uuid::Uuid::now_v7().to_string();
    set(&mut recs[0], "id", Value::from(fresh.as_str()));
    set(&mut recs[1], "cost_microusd", Value::from(-1));
    let bad = params(&[("format", "llm-sidecar.usage".into()), ("version", 1.into()), ("records", Value::Array(recs))]);
    assert!(invalid(cb.call("usage.import", bad).await).contains("record 1"));
    assert_eq!(all_records(&cb).await.len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_keeps_unsynced_records_unless_forced() {
    let d = Daemon::start();
    let c = d.client().await;
    common::record_many(&c, 6, "app").await;
    let r = c.call("usage.clear", vec![]).await.unwrap();
    assert_eq!((u(&r, "records_removed"), u(&r, "outbox_removed"), u(&r, "pending_kept")), (6, 0, 6));
    assert!(all_records(&c).await.is_empty());
    assert_eq!(u(field(&summary(&c, "month", "app").await, "totals"), "requests"), 0);
    assert_eq!(u(&c.call("sync.status", vec![]).await.unwrap(), "pending"), 6);
    let r = c.call("usage.clear", params(&[("force", true.into())])).await.unwrap();
    assert_eq!((u(&r, "outbox_removed"), u(&r, "pending_kept")), (6, 0));
    assert_eq!(u(&c.call("sync.status", vec![]).await.unwrap(), "pending"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_usage_table_and_sync_commands() {
    let col = common::collector::Collector::start().await;
    let d = Daemon::start_with(&format!("[sync]\nurl = \"{}\"\ninterval_secs = 3600\n", col.url), &[]);
    let c = d.client().await;
    rec(&c, &[("provider", "openai".into()), ("cost_microusd", 2_500_000.into()), ("input_tokens", 1000.into())])
        .await
        .unwrap();
    rec(&c, &[("provider", "anthropic".into()), ("cost_microusd", 500_000.into()), ("input_tokens", 10.into())])
        .await
        .unwrap();
    let run = |args: &[&str]| {
        let out = common::command(d.dir.path()).arg("--socket").arg(&d.socket).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = run(&["usage", "--by", "provider", "--period", "month"]);
    assert_eq!(code, Some(0), "{err}");
    let openai = out.lines().find(|l| l.starts_with("openai")).unwrap_or_else(|| panic!("{out}"));
    let anthropic = out.lines().find(|l| l.starts_with("anthropic")).unwrap_or_else(|| panic!("{out}"));
    assert!(openai.contains("$2.50") && openai.contains('█'), "{out}");
    assert!(openai.matches('█').count() > anthropic.matches('█').count(), "{out}");
    assert!(out.contains("total") && out.contains("$3.00"), "{out}");
    assert!(out.to_lowercase().contains("projected"), "{out}");
    let (code, out, _) = run(&["usage", "--by", "model", "--period", "day"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("openai/gpt-4o"), "{out}");

    let (code, out, err) = run(&["sync", "status"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("pending") && out.contains('2'), "{out}");
    let (code, out, err) = run(&["sync", "now"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("sent 2"), "{out}");
    assert_eq!(col.count(), 2);
    let (code, out, _) = run(&["sync", "status", "--json"]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["pending"], 0);
}

fn set(v: &mut Value, name: &str, new: Value) {
    if let Value::Map(m) = v {
        for (k, slot) in m.iter_mut() {
            if k.as_str() == Some(name) {
                *slot = new.clone();
            }
        }
    }
}

/// The ledger is a plain SQLite file: the `sqlite3` CLI (Debian's) reads it while the daemon
/// writes, with the query docs/usage-sync.md shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite3_reads_the_ledger_while_the_daemon_writes() {
    if std::process::Command::new("sqlite3").arg("-version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI must have the sqlite3 CLI (scripts/install-test-deps.sh)");
        eprintln!("skipping: no sqlite3 CLI (run scripts/install-test-deps.sh)");
        return;
    }
    let d = Daemon::start();
    // The socket accepts before the services are open: an answered call means the ledger is.
    d.client().await.call("daemon.info", vec![]).await.unwrap();
    let file = d.data_dir.join("ledger.sqlite");
    assert!(file.exists());
    let writer = {
        let c = d.client().await;
        tokio::spawn(async move {
            let mut n = 0u64;
            let extra = [("model", Value::from("gpt-4o-mini")), ("cost_microusd", Value::from(3))];
            for _ in 0..40 {
                let calls = (0..25).map(|_| rec(&c, &extra));
                for r in futures::future::join_all(calls).await {
                    r.unwrap();
                    n += 1;
                }
            }
            n
        })
    };
    let query = |sql: &str| {
        let out = std::process::Command::new("sqlite3").arg(&file).arg(sql).output().unwrap();
        assert!(out.status.success(), "sqlite3 failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let row = query("select model, sum(cost_microusd) from records group by model");
        if let Some(sum) = row.strip_prefix("gpt-4o-mini|") {
            assert_eq!(sum.parse::<u64>().unwrap() % 3, 0, "{row}");
        }
        reads += 1;
    }
    let n = writer.await.unwrap();
    assert!(reads > 0);
    assert_eq!(query("select model, sum(cost_microusd) from records group by model"), format!("gpt-4o-mini|{}", n * 3));
    assert_eq!(query("pragma user_version"), llm_sidecar::ledger::schema::VERSION.to_string());
    assert_eq!(
        query("select requests from counters where period = 'month' and dim = 'total'"),
        n.to_string(),
        "counters equal the records"
    );
    // Reading took no lock the daemon needed: it still answers.
    rec(&d.client().await, &[]).await.unwrap();
}
