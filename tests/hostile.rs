//! Hostile and careless local peers over the real socket (issue 16): a client that goes away
//! mid-call cancels it; frames built to exhaust memory or CPU hurt nobody else; connections
//! cannot be hoarded; the nesting limit is the documented one; keys leave memory on lock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod mock_provider;

use common::{all_records, field, params, request, wait_until, Daemon};
use llm_sidecar::rpc::codec::FrameReader;
use llm_sidecar::rpc::Message;
use mock_provider::{Fault, Mock};
use rmpv::Value;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

const KEY: &str = "sk-test-hostile-PLATFORMkey-5521";

/// OpenAI pointed at `mock` with a platform key, and a token quota (so calls hold a reservation).
fn quota_config(mock: &Mock) -> String {
    format!(
        "[providers.openai]\nbase_url = \"{}/v1\"\nkey_env = \"MOCK_KEY\"\n\
         [policy]\ndefault_tier = \"free\"\n[tiers.free]\nrank = 0\nmonthly_tokens = 1000000\n",
        mock.url()
    )
}

fn chat_params(stream: bool) -> Vec<Value> {
    let msg = Value::Map(vec![
        (Value::from("role"), Value::from("user")),
        (Value::from("content"), Value::from("Say hello")),
    ]);
    params(&[
        ("model", "openai/gpt-4o-mini".into()),
        ("messages", Value::Array(vec![msg])),
        ("stream", stream.into()),
        ("max_tokens", 100.into()),
    ])
}

/// The `reserved` figure of the token limit in `quota.status`.
fn reserved(status: &Value) -> i64 {
    let limits = field(status, "limits").as_array().unwrap();
    let tokens = limits.iter().find(|l| field(l, "metric").as_str() == Some("tokens")).unwrap();
    field(tokens, "reserved").as_i64().unwrap()
}

/// Waits (at most 100 ms after `t0`) until the mock has seen one of its connections end; returns
/// how long after `t0` that was.
async fn upstream_closed_within_100ms(mock: &Mock, t0: Instant, what: &str) -> Duration {
    loop {
        if let Some(at) = mock.closed_since(t0).first() {
            return at.duration_since(t0);
        }
        assert!(
            t0.elapsed() < Duration::from_millis(100),
            "{what}: the upstream connection is still open after 100 ms"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// After a disconnect: the reservation is back to 0 and the call left one `cancelled` record.
async fn assert_cancelled_and_released(d: &Daemon, what: &str) {
    let c = d.client().await;
    wait_until(&c, "quota.status", Duration::from_secs(5), |s| reserved(s) == 0).await;
    let records = all_records(&c).await;
    assert_eq!(records.len(), 1, "{what}: {records:?}");
    assert_eq!(field(&records[0], "status").as_str(), Some("cancelled"), "{what}: {}", records[0]);
}

/// A client that closes its connection while its call streams: the upstream request is aborted
/// at once, the reservation released, and the usage so far billed as `cancelled`; a call of
/// another connection streaming at the same time is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_while_streaming_cancels_the_call() {
    let mock = Mock::start().await;
    mock.set_default(Some(Fault::Slow { every: Duration::from_millis(25), chunks: 400 }));
    let d = Daemon::start_with(&quota_config(&mock), &[("MOCK_KEY", KEY)]);
    let mut raw = UnixStream::connect(&d.socket).await.unwrap();
    raw.write_all(&request(1, "chat", chat_params(true))).await.unwrap();
    let (rd, wr) = raw.into_split();
    let mut frames = FrameReader::new(rd);
    for _ in 0..3 {
        let frame = tokio::time::timeout(Duration::from_secs(5), frames.next_frame()).await.unwrap().unwrap().unwrap();
        let Ok(Message::Notification { method, .. }) = Message::decode(&frame) else { panic!("not a chunk") };
        assert_eq!(method, "chat.chunk");
    }
    let observer = d.client().await;
    assert!(
        reserved(&observer.call("quota.status", vec![]).await.unwrap()) > 0,
        "the running call holds a reservation"
    );
    let t0 = Instant::now();
    drop((frames, wr));
    let after = upstream_closed_within_100ms(&mock, t0, "stream").await;
    eprintln!("streaming: upstream closed {after:?} after the client");
    assert_cancelled_and_released(&d, "stream").await;
    assert_eq!(mock.state.completed.load(std::sync::atomic::Ordering::SeqCst), 0, "the stream ran to its end");
    let records = all_records(&observer).await;
    assert!(field(&records[0], "output_tokens").as_u64().unwrap() >= 1, "usage so far is billed: {}", records[0]);
}

/// A client that closes its connection while it waits for a non-streamed answer: the same. Its
/// one request slot is taken (`max_inflight_per_connection = 1`, a second request queued), so
/// the daemon notices the hang-up while it is not reading frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_while_waiting_cancels_the_call() {
    let mock = Mock::start().await;
    mock.set_default(Some(Fault::Hang));
    let config = format!("[daemon]\nmax_inflight_per_connection = 1\n{}", quota_config(&mock));
    let d = Daemon::start_with(&config, &[("MOCK_KEY", KEY)]);
    let mut raw = UnixStream::connect(&d.socket).await.unwrap();
    raw.write_all(&request(1, "chat", chat_params(false))).await.unwrap();
    raw.write_all(&request(2, "daemon.ping", vec![])).await.unwrap();
    let observer = d.client().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while mock.requests() == 0 {
        assert!(Instant::now() < deadline, "the call never reached the provider");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        reserved(&observer.call("quota.status", vec![]).await.unwrap()) > 0,
        "the running call holds a reservation"
    );
    let t0 = Instant::now();
    drop(raw);
    let after = upstream_closed_within_100ms(&mock, t0, "non-streamed").await;
    eprintln!("non-streamed: upstream closed {after:?} after the client");
    assert_cancelled_and_released(&d, "non-streamed").await;
}
