//! App tokens through the daemon: `apps add|list|rm` with the real binary, `apps.*` over RPC, and
//! the token never reaching the daemon's log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{field, params, rpc_err, Daemon};
use llm_sidecar::rpc::ErrorCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_add_list_rm_through_the_cli() {
    let d = Daemon::start();
    let (status, token, err) = d.cli(&["apps", "add", "my-editor"], None);
    assert!(status.success(), "{err}");
    let token = token.trim_end_matches('\n');
    assert!(token.starts_with("lsk_") && !token.contains(char::is_whitespace), "stdout is the token alone: {token:?}");
    assert!(err.contains("will not be shown again"), "{err}");

    common::record_many(&d.client().await, 3, "my-editor").await;
    let (status, out, err) = d.cli(&["apps", "list"], None);
    assert!(status.success(), "{err}");
    assert!(out.contains("NAME") && out.contains("CALLS THIS MONTH"), "{out}");
    let row = out.lines().find(|l| l.starts_with("my-editor")).expect("a row for the app");
    assert!(row.contains("never") && row.trim_end().ends_with('3'), "{row}");
    assert!(!out.contains(token));

    let (status, json, err) = d.cli(&["apps", "list", "--json"], None);
    assert!(status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let app = &v["apps"][0];
    assert_eq!(app["name"], "my-editor");
    assert_eq!(app["calls_this_month"], 3);
    assert!(app["last_used"].is_null());
    let created = app["created"].as_str().unwrap();
    assert!(time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339).is_ok(), "{created}");

    let (status, _, err) = d.cli(&["apps", "add", "my-editor"], None);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("already exists"), "{err}");

    let (status, out, err) = d.cli(&["apps", "rm", "my-editor"], None);
    assert!(status.success(), "{err}");
    assert!(out.contains("removed app `my-editor`"), "{out}");
    let (status, out, err) = d.cli(&["apps", "rm", "my-editor"], None);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(err.contains("no app named `my-editor`"), "{err}");
    let (_, out, _) = d.cli(&["apps", "list"], None);
    assert!(out.contains("no apps"), "{out}");

    assert!(!d.logs().contains(token), "the token reached the daemon log");
    assert!(!d.logs().contains(&token["lsk_".len()..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_rpc_refuses_bad_names_and_never_echoes_the_token() {
    let d = Daemon::start();
    let c = d.client().await;
    for bad in ["", "a\nb", &"x".repeat(65)] {
        let e = rpc_err(c.call("apps.add", params(&[("name", bad.into())])).await);
        assert_eq!(e.code, ErrorCode::InvalidParams, "{bad:?}: {e:?}");
    }
    let e = rpc_err(c.call("apps.add", params(&[])).await);
    assert_eq!(e.code, ErrorCode::InvalidParams);

    let added = c.call("apps.add", params(&[("name", "notes".into())])).await.unwrap();
    assert_eq!(field(&added, "name").as_str(), Some("notes"));
    let token = field(&added, "token").as_str().unwrap().to_string();
    let dup = rpc_err(c.call("apps.add", params(&[("name", "notes".into())])).await);
    assert_eq!(dup.code, ErrorCode::InvalidParams);
    assert_eq!(field(&dup.data, "name").as_str(), Some("notes"));
    assert!(!dup.message.contains(&token) && !dup.data.to_string().contains(&token));

    let listed = c.call("apps.list", params(&[])).await.unwrap();
    assert!(!listed.to_string().contains(&token));
    let apps = field(&listed, "apps").as_array().unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(field(&apps[0], "calls_this_month").as_u64(), Some(0));

    let gone = c.call("apps.remove", params(&[("name", "nobody".into())])).await.unwrap();
    assert_eq!(field(&gone, "removed").as_bool(), Some(false));
    let removed = c.call("apps.remove", params(&[("name", "notes".into())])).await.unwrap();
    assert_eq!(field(&removed, "removed").as_bool(), Some(true));

    let methods = c.call("daemon.methods", params(&[])).await.unwrap();
    for m in ["apps.add", "apps.list", "apps.remove"] {
        assert!(methods.to_string().contains(m), "{m} missing from daemon.methods");
    }
    assert!(!d.logs().contains(&token), "the token reached the daemon log");
}
