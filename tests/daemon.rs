//! Integration tests of the daemon foundation over its real socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{field, params, Daemon};
use rmpv::Value;

#[tokio::test]
async fn hello_info_and_methods() {
    let d = Daemon::start();
    let c = d.client().await;
    let hello = c.call("daemon.hello", params(&[("app", "test-app".into()), ("version", "1.2".into())])).await.unwrap();
    assert_eq!(field(&hello, "app").as_str(), Some("test-app"));
    assert_eq!(field(&hello, "protocol").as_u64(), Some(u64::from(llm_sidecar::rpc::PROTOCOL)));
    let info = c.call("daemon.info", vec![]).await.unwrap();
    assert_eq!(field(&info, "version").as_str(), Some(llm_sidecar::VERSION));
    assert_eq!(field(&info, "app").as_str(), Some("test-app"));
    assert_eq!(field(&info, "socket").as_str(), Some(d.socket.to_str().unwrap()));
    let methods = c.call("daemon.methods", vec![]).await.unwrap();
    let names: Vec<&str> =
        field(&methods, "methods").as_array().unwrap().iter().map(|m| field(m, "name").as_str().unwrap()).collect();
    for expected in ["daemon.hello", "daemon.info", "daemon.methods", "daemon.ping", "$/cancel", "events.subscribe"] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    // Neovim's rpcrequest(ch, "daemon.info") sends an empty params array; a nil argument works too.
    assert!(c.call("daemon.info", vec![Value::Nil]).await.is_ok());
}
