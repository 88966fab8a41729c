//! A usage backend for tests: accepts CloudEvents batches (design §7) the way OpenMeter's ingest
//! does — the whole batch is refused (400, a problem+json body) if any event lacks `subject` or
//! has a `time` that is not RFC 3339, and events are deduplicated on source + id — stores them,
//! counts duplicates, and injects faults. [`Collector::poison_model`] makes it refuse, the same
//! way, any event whose `data.model` is the given name (a backend-specific validation).
//!
//! The app is an axum `Router`; connections are served by hyper directly so a fault can drop a
//! connection with a TCP reset, before or after the batch was committed.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What the collector does with the next request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer this status without storing anything.
    Status(u16),
    /// Answer this status with `Retry-After: secs`.
    RetryAfter { status: u16, secs: u64 },
    /// Store nothing and answer only after this long (the client should time out first).
    Hang(Duration),
    /// Reset the connection without storing anything.
    Reset,
    /// Store the batch, then reset the connection: "committed but the response was lost".
    CommitThenReset,
    /// Store the batch, then answer only after this long (the client times out).
    CommitThenHang(Duration),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct RequestLog {
    pub at: Instant,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    pub idempotency_key: Option<String>,
    pub events: usize,
    pub bytes: usize,
    /// Status answered, or `None` when the connection was dropped / the answer delayed.
    pub status: Option<u16>,
    pub body: Bytes,
}

#[derive(Default)]
struct Inner {
    /// Events by id (the first copy received).
    events: HashMap<String, serde_json::Value>,
    ids: HashSet<String>,
    /// (source, id) of every stored event: what the dedupe is keyed on.
    keys: HashSet<(String, String)>,
    /// Events with this `data.model` make their batch invalid.
    poison: Option<String>,
    /// Events received again for an id already stored (outside a replayed batch).
    duplicate_events: u64,
    /// Batches whose Idempotency-Key was already committed (answered from the key store).
    replayed_batches: u64,
    committed_keys: HashSet<String>,
    requests: Vec<RequestLog>,
    faults: VecDeque<Fault>,
    /// The bearer token required, if any.
    token: Option<String>,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    store_events: bool,
}

#[derive(Clone)]
struct ConnAbort {
    token: CancellationToken,
}

pub struct Collector {
    pub url: String,
    shared: Shared,
    stop: CancellationToken,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Collector {
    /// Starts on 127.0.0.1 on a free port, storing every event in full.
    pub async fn start() -> Collector {
        Collector::start_with(true).await
    }

    /// With `store_events = false` only ids are kept (for benchmarks).
    pub async fn start_with(store_events: bool) -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind collector");
        let addr = listener.local_addr().expect("addr");
        let shared = Shared { inner: Arc::default(), store_events };
        let router = Router::new().route("/events", axum::routing::post(ingest)).with_state(shared.clone());
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, router, stop.clone()));
        Collector { url: format!("http://{addr}/events"), shared, stop }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.shared.inner.lock().unwrap())
    }

    pub fn push_fault(&self, fault: Fault) {
        self.with(|i| i.faults.push_back(fault));
    }

    pub fn clear_faults(&self) {
        self.with(|i| i.faults.clear());
    }

    /// Requires `Authorization: Bearer <token>` (401 otherwise); `None` accepts anything.
    pub fn require_token(&self, token: Option<&str>) {
        self.with(|i| i.token = token.map(str::to_string));
    }

    /// Refuses (400, whole batch) every batch holding an event whose `data.model` is `model`.
    pub fn poison_model(&self, model: Option<&str>) {
        self.with(|i| i.poison = model.map(str::to_string));
    }

    pub fn ids(&self) -> HashSet<String> {
        self.with(|i| i.ids.clone())
    }

    pub fn count(&self) -> usize {
        self.with(|i| i.ids.len())
    }

    pub fn event(&self, id: &str) -> Option<serde_json::Value> {
        self.with(|i| i.events.get(id).cloned())
    }

    pub fn duplicate_events(&self) -> u64 {
        self.with(|i| i.duplicate_events)
    }

    pub fn replayed_batches(&self) -> u64 {
        self.with(|i| i.replayed_batches)
    }

    pub fn requests(&self) -> Vec<RequestLog> {
        self.with(|i| i.requests.clone())
    }

    /// Polls until at least `n` distinct events are stored; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.count() < n {
            assert!(Instant::now() < deadline, "collector has {} of {n} events after {timeout:?}", self.count());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, router: Router, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let Ok(std_stream) = tcp.into_std() else { continue };
        // A second handle on the socket, used to turn a drop into a TCP reset.
        let Ok(handle) = std_stream.try_clone() else { continue };
        let Ok(tcp) = tokio::net::TcpStream::from_std(std_stream) else { continue };
        let abort = CancellationToken::new();
        let svc = TowerToHyperService::new(router.clone().layer(Extension(ConnAbort { token: abort.clone() })));
        let stop = stop.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc);
            tokio::select! {
                _ = conn => {}
                _ = abort.cancelled() => {
                    let _ = rustix::net::sockopt::set_socket_linger(&handle, Some(Duration::ZERO));
                }
                _ = stop.cancelled() => {}
            }
            drop(handle);
        });
    }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// What the light mode (ids only) reads of an event; the other required fields must be present.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct LightEvent {
    specversion: String,
    id: String,
    source: String,
    #[serde(rename = "type")]
    kind: serde::de::IgnoredAny,
    subject: serde::de::IgnoredAny,
    time: serde::de::IgnoredAny,
    datacontenttype: serde::de::IgnoredAny,
    data: serde::de::IgnoredAny,
}

/// One parsed event: its source, id and (when stored) the whole event.
type Parsed = (String, String, Option<serde_json::Value>);

/// Parses and checks a batch like OpenMeter: `Err(why)` refuses the whole batch.
fn parse(body: &[u8], store: bool, poison: Option<&str>) -> Result<Vec<Parsed>, String> {
    if store {
        let events: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        for e in &events {
            if let Some(f) = REQUIRED.iter().find(|f| e.get(**f).is_none()) {
                return Err(format!("event {}: missing `{f}`", e["id"]));
            }
            if e["specversion"] != "1.0" {
                return Err(format!("event {}: specversion", e["id"]));
            }
            if e["subject"].as_str().is_none_or(str::is_empty) {
                return Err(format!("event {}: subject is required", e["id"]));
            }
            let time = e["time"].as_str().unwrap_or_default();
            if time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).is_err() {
                return Err(format!("event {}: time is not RFC 3339", e["id"]));
            }
            if poison.is_some() && e["data"]["model"].as_str() == poison {
                return Err(format!("event {}: unknown meter for model {}", e["id"], e["data"]["model"]));
            }
        }
        Ok(events
            .into_iter()
            .map(|e| {
                let (src, id) = (e["source"].as_str().unwrap_or_default(), e["id"].as_str().unwrap_or_default());
                (src.to_string(), id.to_string(), Some(e))
            })
            .collect())
    } else {
        let events: Vec<LightEvent> = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        if events.iter().any(|e| e.specversion != "1.0") {
            return Err("specversion".into());
        }
        Ok(events.into_iter().map(|e| (e.source, e.id, None)).collect())
    }
}

const REQUIRED: [&str; 8] = ["specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data"];

async fn ingest(
    State(s): State<Shared>,
    Extension(abort): Extension<ConnAbort>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let poison = s.inner.lock().unwrap().poison.clone();
    let parsed = parse(&body, s.store_events, poison.as_deref());
    let events = parsed.as_ref().map_or(0, Vec::len);
    let key = header(&headers, "idempotency-key");
    let (fault, index) = {
        let mut i = s.inner.lock().unwrap();
        i.requests.push(RequestLog {
            at: Instant::now(),
            content_type: header(&headers, "content-type"),
            authorization: header(&headers, "authorization"),
            idempotency_key: key.clone(),
            events,
            bytes: body.len(),
            status: None,
            body: body.clone(),
        });
        let index = i.requests.len() - 1;
        if let Some(required) = &i.token {
            if header(&headers, "authorization").as_deref() != Some(&format!("Bearer {required}")) {
                i.requests[index].status = Some(401);
                return (StatusCode::UNAUTHORIZED, "bad token").into_response();
            }
        }
        (i.faults.pop_front(), index)
    };
    let set_status = |code: u16| s.inner.lock().unwrap().requests[index].status = Some(code);
    let reply = |code: u16, extra: Option<(&'static str, String)>| -> Response {
        set_status(code);
        let mut r = (StatusCode::from_u16(code).unwrap(), format!("injected {code}")).into_response();
        if let Some((k, v)) = extra {
            r.headers_mut().insert(k, v.parse().unwrap());
        }
        r
    };
    match fault {
        Some(Fault::Status(code)) => return reply(code, None),
        Some(Fault::RetryAfter { status, secs }) => return reply(status, Some(("retry-after", secs.to_string()))),
        Some(Fault::Hang(d)) => {
            tokio::time::sleep(d).await;
            return reply(503, None);
        }
        Some(Fault::Reset) => {
            abort.token.cancel();
            return std::future::pending().await;
        }
        _ => {}
    }
    if header(&headers, "content-type").as_deref() != Some("application/cloudevents-batch+json") {
        return reply(415, None);
    }
    let events = match parsed {
        Ok(events) => events,
        Err(why) => {
            set_status(400);
            let problem =
                serde_json::json!({"type": "about:blank", "title": "Bad Request", "status": 400, "detail": why});
            let mut r = (StatusCode::BAD_REQUEST, problem.to_string()).into_response();
            r.headers_mut().insert("content-type", "application/problem+json".parse().unwrap());
            return r;
        }
    };
    {
        let mut i = s.inner.lock().unwrap();
        let replay = key.as_ref().is_some_and(|k| i.committed_keys.contains(k));
        if replay {
            i.replayed_batches += 1;
        } else {
            for (source, id, event) in events {
                if !i.keys.insert((source, id.clone())) {
                    i.duplicate_events += 1;
                    continue;
                }
                i.ids.insert(id.clone());
                if let Some(e) = event {
                    i.events.insert(id, e);
                }
            }
            if let Some(k) = key {
                i.committed_keys.insert(k);
            }
        }
    }
    match fault {
        Some(Fault::CommitThenReset) => {
            abort.token.cancel();
            std::future::pending().await
        }
        Some(Fault::CommitThenHang(d)) => {
            tokio::time::sleep(d).await;
            reply(200, None)
        }
        _ => reply(200, None),
    }
}
