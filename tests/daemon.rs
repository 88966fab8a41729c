//! Integration tests of the daemon foundation over its real socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{field, params, read_to_eof, request, rpc_err, Daemon};
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
    assert_eq!(field(field(&info, "vault"), "state").as_str(), Some("unlocked"));
    assert_eq!(field(&info, "providers").as_array().map(Vec::len), Some(0));
    assert_eq!(field(field(&info, "sync"), "enabled").as_bool(), Some(false));
    // The ledger's commit counts: eight records sent at once are eight writes in one to eight
    // durable commits.
    let ledger_counts = |info: &Value| {
        let l = field(info, "ledger");
        (
            field(l, "commits").as_u64().unwrap(),
            field(l, "writes").as_u64().unwrap(),
            field(l, "busy_us").as_u64().unwrap(),
        )
    };
    let (commits0, writes0, busy0) = ledger_counts(&info);
    let records = (0..8u64).map(|i| {
        c.call(
            "usage.record",
            params(&[("provider", "openai".into()), ("model", "m".into()), ("input_tokens", i.into())]),
        )
    });
    for r in futures::future::join_all(records).await {
        r.unwrap();
    }
    let (commits, writes, busy) = ledger_counts(&c.call("daemon.info", vec![]).await.unwrap());
    assert_eq!(writes - writes0, 8, "every record is one write");
    assert!((1..=8).contains(&(commits - commits0)), "{commits0} -> {commits} commits for 8 writes");
    assert!(busy > busy0, "a commit with its fsync takes time: {busy0} -> {busy} us");
    let methods = c.call("daemon.methods", vec![]).await.unwrap();
    let names: Vec<&str> =
        field(&methods, "methods").as_array().unwrap().iter().map(|m| field(m, "name").as_str().unwrap()).collect();
    for expected in ["daemon.hello", "daemon.info", "daemon.methods", "daemon.ping", "$/cancel", "events.subscribe"] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    // Neovim's rpcrequest(ch, "daemon.info") sends an empty params array; a nil argument works too.
    assert!(c.call("daemon.info", vec![Value::Nil]).await.is_ok());
}

use llm_sidecar::rpc::{ErrorCode, Message};
use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

fn decode_all(bytes: &[u8]) -> Vec<Message> {
    let mut rd = bytes;
    let mut out = Vec::new();
    while !rd.is_empty() {
        let v = rmpv::decode::read_value(&mut rd).expect("valid msgpack from daemon");
        out.push(Message::from_value(v).expect("valid message"));
    }
    out
}

async fn assert_still_serving(d: &Daemon) {
    let c = d.client().await;
    let info = tokio::time::timeout(Duration::from_secs(5), c.call("daemon.info", vec![])).await.expect("timely");
    assert!(info.is_ok(), "daemon no longer serves other clients: {info:?}");
}

#[tokio::test]
async fn structured_errors_for_unknown_methods_and_bad_params() {
    let d = Daemon::start();
    let c = d.client().await;
    let e = rpc_err(c.call("no.such.method", vec![]).await);
    assert_eq!(e.code, ErrorCode::MethodNotFound);
    assert_eq!(e.data_field("method").and_then(Value::as_str), Some("no.such.method"));
    let e = rpc_err(c.call("daemon.hello", params(&[("app", Value::from(42))])).await);
    assert_eq!(e.code, ErrorCode::InvalidParams);
    let e = rpc_err(c.call("daemon.hello", vec![]).await);
    assert_eq!(e.code, ErrorCode::InvalidParams);
    assert!(e.message.contains("app"), "{}", e.message);
    let e = rpc_err(c.call("daemon.hello", params(&[("app", "".into())])).await);
    assert_eq!(e.code, ErrorCode::InvalidParams);
    let e = rpc_err(c.call("daemon.info", vec![Value::from("x")]).await);
    assert_eq!(e.code, ErrorCode::InvalidParams);
    let e = rpc_err(c.call("daemon.ping", params(&[("delay_ms", Value::from(10_000_000))])).await);
    assert_eq!(e.code, ErrorCode::InvalidParams);
    let e = rpc_err(c.call("events.subscribe", params(&[("kinds", Value::Array(vec!["nope".into()]))])).await);
    assert_eq!(e.code, ErrorCode::InvalidParams);
    // The connection survives all of that.
    assert!(c.call("daemon.info", vec![]).await.is_ok());
}

/// Sends one request on a raw connection and returns the response's error element.
async fn raw_error(s: &mut UnixStream, id: u32, method: &str, params: Vec<Value>) -> (Value, Value) {
    s.write_all(&request(id, method, params)).await.unwrap();
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await.expect("timely").unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        if let Ok(v) = rmpv::decode::read_value(&mut &buf[..]) {
            let a = v.as_array().unwrap().clone();
            assert_eq!(a[1].as_u64(), Some(u64::from(id)));
            return (a[2].clone(), a[3].clone());
        }
    }
}

#[tokio::test]
async fn string_errors_for_neovim_and_last_error() {
    let d = Daemon::start();
    let mut s = UnixStream::connect(&d.socket).await.unwrap();
    // Before hello {errors: "string"}: the map.
    let (err, _) = raw_error(&mut s, 1, "no.such.method", vec![]).await;
    assert_eq!(field(&err, "code").as_str(), Some("method_not_found"));
    let (err, hello) =
        raw_error(&mut s, 2, "daemon.hello", params(&[("app", "nvim".into()), ("errors", "string".into())])).await;
    assert!(err.is_nil(), "{err}");
    assert_eq!(field(&hello, "errors").as_str(), Some("string"));
    // After: "<code>: <message>", and daemon.last_error has the whole error.
    let (err, _) = raw_error(&mut s, 3, "no.such.method", vec![]).await;
    let text = err.as_str().unwrap_or_else(|| panic!("a string error, got {err}"));
    assert!(text.starts_with("method_not_found: "), "{text}");
    assert!(text.contains("no.such.method"), "{text}");
    let (err, last) = raw_error(&mut s, 4, "daemon.last_error", vec![]).await;
    assert!(err.is_nil());
    assert_eq!(field(&last, "code").as_str(), Some("method_not_found"));
    assert_eq!(field(&last, "message").as_str(), text.strip_prefix("method_not_found: "));
    assert_eq!(field(field(&last, "data"), "method").as_str(), Some("no.such.method"));
    let (err, _) = raw_error(&mut s, 5, "daemon.ping", params(&[("delay_ms", Value::from(10_000_000))])).await;
    assert!(err.as_str().is_some_and(|t| t.starts_with("invalid_params: ")), "{err}");
    let (_, last) = raw_error(&mut s, 6, "daemon.last_error", vec![]).await;
    assert_eq!(field(&last, "code").as_str(), Some("invalid_params"));
    // Another connection keeps maps and has no last error of its own; a bad style is refused.
    let c = d.client().await;
    assert!(c.call("daemon.last_error", vec![]).await.unwrap().is_nil());
    let e = rpc_err(c.call("daemon.hello", params(&[("app", "x".into()), ("errors", "xml".into())])).await);
    assert_eq!(e.code, ErrorCode::InvalidParams);
    assert_eq!(rpc_err(c.call("no.such.method", vec![]).await).code, ErrorCode::MethodNotFound);
    // hello {errors: "map"} switches back.
    raw_error(&mut s, 7, "daemon.hello", params(&[("app", "nvim".into()), ("errors", "map".into())])).await;
    let (err, _) = raw_error(&mut s, 8, "no.such.method", vec![]).await;
    assert_eq!(field(&err, "code").as_str(), Some("method_not_found"));
}

#[tokio::test]
async fn thousand_pipelined_requests_on_one_connection() {
    let d = Daemon::start();
    let mut s = UnixStream::connect(&d.socket).await.unwrap();
    let mut batch = Vec::new();
    for id in 0..1000u32 {
        batch.extend(request(id, "daemon.info", vec![]));
    }
    s.write_all(&batch).await.unwrap();
    let mut seen = HashSet::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    while seen.len() < 1000 {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await.expect("timely").unwrap();
        assert!(n > 0, "daemon closed early after {} responses", seen.len());
        buf.extend_from_slice(&chunk[..n]);
        let mut rd = &buf[..];
        loop {
            let before = rd;
            match rmpv::decode::read_value(&mut rd) {
                Ok(v) => match Message::from_value(v).unwrap() {
                    Message::Response { id, result } => {
                        assert!(result.is_ok());
                        assert!(seen.insert(id), "duplicate response {id}");
                    }
                    other => panic!("unexpected {other:?}"),
                },
                Err(_) => {
                    rd = before;
                    break;
                }
            }
        }
        buf = rd.to_vec();
    }
    assert_eq!(seen.len(), 1000);
}

#[tokio::test]
async fn fifty_connections_at_once() {
    let d = Daemon::start();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let socket = d.socket.clone();
        tasks.push(tokio::spawn(async move {
            let c = llm_sidecar::rpc::Client::connect(&socket).await.unwrap();
            c.call("daemon.hello", params(&[("app", format!("app-{i}").into())])).await.unwrap();
            for _ in 0..20 {
                let info = c.call("daemon.info", vec![]).await.unwrap();
                assert_eq!(field(&info, "app").as_str(), Some(format!("app-{i}").as_str()));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn slow_call_does_not_block_fast_one_and_cancel_works() {
    let d = Daemon::start();
    let c = std::sync::Arc::new(d.client().await);
    let (slow_id, slow) = c.start("daemon.ping", params(&[("delay_ms", Value::from(30_000))])).await.unwrap();
    let t0 = Instant::now();
    c.call("daemon.info", vec![]).await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5), "fast call waited for the slow one");
    c.cancel(slow_id).await.unwrap();
    let e = rpc_err(
        tokio::time::timeout(Duration::from_secs(5), llm_sidecar::rpc::Client::finish(slow_id, slow)).await.unwrap(),
    );
    assert_eq!(e.code, ErrorCode::Cancelled);
    // Cancelling something unknown is harmless.
    c.cancel(999_999).await.unwrap();
    assert!(c.call("daemon.info", vec![]).await.is_ok());
}

#[tokio::test]
async fn malformed_input_closes_only_that_connection() {
    let d = Daemon::start();
    let bystander = d.client().await;
    bystander.call("daemon.hello", params(&[("app", "bystander".into())])).await.unwrap();

    // Bytes that are not MessagePack at all.
    let mut s = UnixStream::connect(&d.socket).await.unwrap();
    s.write_all(b"\xc1\xc1 this is not msgpack").await.unwrap();
    assert!(read_to_eof(&mut s, Duration::from_secs(5)).await.1, "garbage must close the connection");

    // A valid value that is not a message.
    let mut s = UnixStream::connect(&d.socket).await.unwrap();
    s.write_all(&llm_sidecar::rpc::message::encode_value(&Value::from("hello"))).await.unwrap();
    assert!(read_to_eof(&mut s, Duration::from_secs(5)).await.1);

    // A 20 MiB frame: refused from its header, connection closed.
    let s = UnixStream::connect(&d.socket).await.unwrap();
    let mut big = Vec::new();
    rmp::encode::write_array_len(&mut big, 4).unwrap();
    rmp::encode::write_uint(&mut big, 0).unwrap();
    rmp::encode::write_uint(&mut big, 1).unwrap();
    rmp::encode::write_str(&mut big, "daemon.info").unwrap();
    rmp::encode::write_array_len(&mut big, 1).unwrap();
    rmp::encode::write_bin_len(&mut big, 20 * 1024 * 1024).unwrap();
    big.resize(big.len() + 20 * 1024 * 1024, 0xab);
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move { wr.write_all(&big).await });
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "20 MiB frame must close the connection");
    let _ = writer.await;

    // Nesting deeper than 64.
    let mut s = UnixStream::connect(&d.socket).await.unwrap();
    s.write_all(&[0x91; 100]).await.unwrap();
    assert!(read_to_eof(&mut s, Duration::from_secs(5)).await.1);

    // A truncated frame followed by EOF.
    let mut s = UnixStream::connect(&d.socket).await.unwrap();
    let req = request(1, "daemon.info", vec![]);
    s.write_all(&req[..req.len() - 2]).await.unwrap();
    s.shutdown().await.unwrap();
    let (bytes, eof) = read_to_eof(&mut s, Duration::from_secs(5)).await;
    assert!(eof && bytes.is_empty());

    // Wrong shapes with a recoverable msgid get an `invalid_request` answer, and the connection stays.
    let mut s = UnixStream::connect(&d.socket).await.unwrap();
    let bad_method = Value::Array(vec![Value::from(0), Value::from(7), Value::from(5), Value::Array(vec![])]);
    let bad_params = Value::Array(vec![Value::from(0), Value::from(8), Value::from("daemon.info"), Value::from(1)]);
    let mut out = llm_sidecar::rpc::message::encode_value(&bad_method);
    out.extend(llm_sidecar::rpc::message::encode_value(&bad_params));
    out.extend(request(9, "daemon.info", vec![]));
    s.write_all(&out).await.unwrap();
    // The write side stays open: an ended connection (EOF included) cancels what runs on it.
    let (bytes, eof) = read_to_eof(&mut s, Duration::from_secs(1)).await;
    assert!(!eof, "the connection stays open");
    let msgs = decode_all(&bytes);
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    for m in &msgs {
        match m {
            Message::Response { id: 7 | 8, result: Err(e) } => assert_eq!(e.code, ErrorCode::InvalidRequest),
            Message::Response { id: 9, result: Ok(_) } => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    // Other clients, including the one connected all along, are still served.
    assert!(bystander.call("daemon.info", vec![]).await.is_ok());
    assert_still_serving(&d).await;
    assert!(d.logs().contains("closing connection"), "reasons are logged");
}

#[tokio::test]
async fn client_that_stops_reading_cannot_grow_the_daemon() {
    let d = Daemon::start();
    let s = UnixStream::connect(&d.socket).await.unwrap();
    let (_rd, mut wr) = s.into_split(); // never read
    let req = request(1, "daemon.methods", vec![]);
    // Keep writing requests (ids may repeat once earlier ones finished; duplicates are answered too).
    let writer = tokio::spawn(async move {
        let mut batch = Vec::new();
        for _ in 0..1000 {
            batch.extend_from_slice(&req);
        }
        for _ in 0..200 {
            if tokio::time::timeout(Duration::from_secs(2), wr.write_all(&batch)).await.is_err() {
                return true; // the daemon stopped reading: backpressure reached us
            }
        }
        false
    });
    let blocked = writer.await.unwrap();
    assert!(blocked, "the daemon kept reading from a client that never reads responses");
    let rss_kb = std::fs::read_to_string(format!("/proc/{}/status", d.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().unwrap()))
        .unwrap();
    assert!(rss_kb < 256 * 1024, "daemon RSS {rss_kb} kB while a client does not read");
    assert_still_serving(&d).await;
}

#[tokio::test]
async fn socket_and_directory_modes() {
    let d = Daemon::start();
    let dir_mode = std::fs::metadata(d.socket.parent().unwrap()).unwrap().permissions().mode() & 0o777;
    let sock_mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    assert_eq!(sock_mode, 0o600);
}

#[tokio::test]
async fn refuses_a_directory_other_users_can_enter() {
    let d = Daemon::prepare("", &[]);
    let open_dir = d.dir.path().join("open");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = common::command(d.dir.path())
        .args(["--socket", open_dir.join("sock").to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not safe") && err.contains("755"), "{err}");
}

#[tokio::test]
async fn stale_socket_is_reclaimed_after_kill9() {
    let mut d = Daemon::start();
    d.kill9();
    assert!(d.socket.exists(), "kill -9 leaves the socket file behind");
    d.spawn();
    assert_still_serving(&d).await;
}

#[tokio::test]
async fn second_instance_refuses_to_start() {
    let d = Daemon::start();
    let out = d.serve_command().output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running"), "{err}");
    assert!(d.socket.exists());
    assert_still_serving(&d).await;
}

#[tokio::test]
async fn sigterm_finishes_running_calls_and_removes_socket() {
    let mut d = Daemon::start();
    let c = d.client().await;
    let (id, slow) = c.start("daemon.ping", params(&[("delay_ms", Value::from(700))])).await.unwrap();
    // Make sure the request is running before the signal.
    c.call("daemon.info", vec![]).await.unwrap();
    d.signal(rustix::process::Signal::TERM);
    let answer =
        tokio::time::timeout(Duration::from_secs(10), llm_sidecar::rpc::Client::finish(id, slow)).await.unwrap();
    assert!(answer.is_ok(), "in-flight call must finish during graceful shutdown: {answer:?}");
    let status = d.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    assert!(!d.socket.exists(), "socket file must be removed");
}

#[tokio::test]
async fn cli_status_config_check_and_version() {
    let d = Daemon::start();
    let status =
        common::command(d.dir.path()).args(["--socket", d.socket.to_str().unwrap(), "status"]).output().unwrap();
    assert!(status.status.success());
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("is running") && text.contains(llm_sidecar::VERSION), "{text}");

    let missing = d.dir.path().join("nowhere.sock");
    let none = common::command(d.dir.path()).args(["--socket", missing.to_str().unwrap(), "status"]).output().unwrap();
    assert_eq!(none.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no llm-sidecar daemon is running"));

    let bad = d.dir.path().join("bad.toml");
    std::fs::write(&bad, "[daemon]\nmax_connections = 10\nbogus_key = 1\n").unwrap();
    let check =
        common::command(d.dir.path()).args(["--config", bad.to_str().unwrap(), "config", "check"]).output().unwrap();
    assert!(!check.status.success());
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(err.contains("line 3") && err.contains("bogus_key"), "{err}");
    let good = common::command(d.dir.path())
        .args(["--config", d.config.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    assert!(good.status.success());

    let v = common::command(d.dir.path()).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).contains(llm_sidecar::VERSION));
}

#[tokio::test]
async fn unreadable_config_stops_the_daemon_with_a_clear_error() {
    let d = Daemon::prepare("[daemon]\nmax_connections = \"lots\"\n", &[]);
    let out = d.serve_command().output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("max_connections"), "{err}");
}

#[tokio::test]
async fn json_logs() {
    let d = Daemon::prepare("", &[]);
    let mut child =
        d.serve_command().arg("--log-format").arg("json").stderr(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&d.socket).is_err() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    // The socket accepts into the backlog before the services are open; a served request
    // means start-up (and its logging) is done.
    d.client().await.call("daemon.info", vec![]).await.unwrap();
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let first = text.lines().next().expect("a log line");
    let v: serde_json::Value = serde_json::from_str(first).unwrap_or_else(|e| panic!("not JSON: {first}: {e}"));
    assert!(v.get("level").is_some(), "{first}");
}

/// Peers of another uid are refused. Needs root: the daemon runs as `nobody`, root connects
/// (root passes the 0700 directory, so only the daemon's own uid check can stop it).
#[tokio::test]
async fn peers_of_another_uid_are_refused() {
    if !rustix::process::getuid().is_root() || std::process::Command::new("setpriv").arg("--version").output().is_err()
    {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let d = Daemon::prepare("", &[]);
    let nobody = 65534u32;
    std::fs::create_dir_all(d.data_dir.parent().unwrap()).unwrap();
    let status = std::process::Command::new("chown").args(["-R", "65534:65534"]).arg(d.dir.path()).status().unwrap();
    assert!(status.success());
    let serve = d.serve_command();
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args([format!("--reuid={nobody}"), format!("--regid={nobody}"), "--clear-groups".into()]);
    cmd.arg(serve.get_program()).args(serve.get_args());
    for (k, v) in serve.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let log = std::fs::File::create(d.dir.path().join("nobody.log")).unwrap();
    let mut child = cmd.stderr(log).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut s = loop {
        if let Ok(s) = UnixStream::connect(&d.socket).await {
            break s;
        }
        assert!(Instant::now() < deadline, "daemon as nobody did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let _ = s.write_all(&request(1, "daemon.info", vec![])).await;
    let (bytes, eof) = read_to_eof(&mut s, Duration::from_secs(5)).await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(eof && bytes.is_empty(), "a peer of another uid got an answer");
    let log = std::fs::read_to_string(d.dir.path().join("nobody.log")).unwrap();
    assert!(log.contains("another user"), "{log}");
}

/// Events arrive only for subscribed kinds, exactly once, also after unsubscribing and
/// subscribing again.
#[tokio::test]
async fn events_are_delivered_once_per_subscription() {
    let d = Daemon::start();
    let c = d.client().await;
    let mut notes = c.take_notifications().unwrap();
    let kinds = |k: &[&str]| params(&[("kinds", Value::Array(k.iter().map(|s| Value::from(*s)).collect()))]);
    let r = c.call("events.subscribe", kinds(&["vault.locked"])).await.unwrap();
    assert_eq!(field(&r, "kinds").as_array().unwrap().len(), 1);
    c.call("events.unsubscribe", vec![]).await.unwrap();
    c.call("events.subscribe", kinds(&["vault.locked", "key.invalid"])).await.unwrap();
    c.call("vault.lock", vec![]).await.unwrap();
    c.call("vault.unlock", vec![]).await.unwrap(); // vault.unlocked: not subscribed
    let (method, p) = tokio::time::timeout(Duration::from_secs(5), notes.recv()).await.unwrap().unwrap();
    assert_eq!(method, "event");
    assert_eq!(field(&p[0], "kind").as_str(), Some("vault.locked"));
    // Nothing else follows: no duplicate, nothing unsubscribed (negative check, bounded wait).
    c.call("daemon.info", vec![]).await.unwrap();
    if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(300), notes.recv()).await {
        panic!("unexpected notification {extra:?}");
    }
}
