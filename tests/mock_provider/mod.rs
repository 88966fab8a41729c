//! A mock LLM provider (axum) speaking the OpenAI Chat Completions, Anthropic Messages, Gemini
//! and Ollama native wire formats, streaming and not, with faults injected on demand.
//!
//! - Normal answers are built in each provider's real shape (SSE framing, headers, usage fields)
//!   from [`REPLY`] with fixed usage ([`USAGE_IN`], [`USAGE_OUT`]).
//! - [`Fault::Fixture`] replays a recorded body from `tests/fixtures/providers/` byte for byte
//!   (sent in small pieces to exercise framing).
//! - Faults are queued with [`Mock::push`] and consumed one per request, in order; when the queue
//!   is empty the mock answers normally (or with [`Mock::set_default`]).
//! - Every request is recorded (path, auth headers, JSON body, arrival time); a streamed body
//!   dropped before its end (the client went away) is counted in [`MockState::disconnects`].
//! - Every TCP connection the mock accepted is tracked: [`Mock::closed_since`] says when each
//!   one ended (the daemon closed it, or it broke), for tests of upstream aborts.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::post;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const REPLY: &str = "Hello from the mock provider.";
pub const USAGE_IN: u64 = 12;
pub const USAGE_OUT: u64 = 7;

/// Reads a recorded fixture from `tests/fixtures/providers/` (see its `SOURCES.md`).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/providers/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {path}: {e}"))
}

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status, headers and body.
    Status { status: u16, headers: Vec<(&'static str, String)>, body: String },
    /// Replay a recorded streaming body byte for byte.
    Fixture(&'static str),
    /// Answer 200 with this JSON body (a whole, non-streamed answer).
    Json(serde_json::Value),
    /// Stream these bytes (an SSE or NDJSON body the test wrote), in small pieces.
    Stream(String),
    /// Wait before answering normally.
    SlowFirstByte(Duration),
    /// Never answer.
    Hang,
    /// Stream this many deltas, then break the connection.
    ResetAfter(usize),
    /// Start a stream, then send a chunk that is not valid JSON.
    MalformedChunk,
    /// Stream `chunks` deltas, one every `every` (a long answer, for cancel tests).
    Slow { every: Duration, chunks: usize },
    /// Anthropic: `message_start` reporting [`USAGE_IN`] uncached input tokens plus these cache
    /// reads and writes, then an `error` event of type `error_type` (no text at all).
    StartThenError { cache_read: u64, cache_write: u64, error_type: &'static str },
    /// OpenAI: a stream with no text whose usage chunk ([`USAGE_IN`] prompt tokens, `output`
    /// completion tokens of which `reasoning` are reasoning) arrives, then the connection breaks.
    UsageThenReset { output: u64, reasoning: u64 },
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub at: Instant,
    pub authorization: Option<String>,
    pub x_api_key: Option<String>,
    pub x_goog_api_key: Option<String>,
    pub anthropic_version: Option<String>,
    pub body: serde_json::Value,
}

#[derive(Default)]
pub struct MockState {
    script: Mutex<VecDeque<Fault>>,
    default: Mutex<Option<Fault>>,
    pub requests: AtomicUsize,
    pub disconnects: AtomicUsize,
    pub completed: AtomicUsize,
    pub seen: Mutex<Vec<Seen>>,
    /// Connections open now, and when each closed one ended.
    pub open_connections: AtomicUsize,
    pub closed_at: Mutex<Vec<Instant>>,
}

pub struct Mock {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mock {
    pub async fn start() -> Mock {
        let state = Arc::new(MockState::default());
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/v1/responses", post(openai))
            .route("/v1/messages", post(anthropic))
            .route("/v1/messages/count_tokens", post(anthropic))
            .route("/v1beta/models/{action}", post(gemini))
            .route("/api/chat", post(ollama))
            .route("/v1/models", axum::routing::get(models))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = Tracked { listener, state: state.clone() };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Mock { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues faults for the next requests.
    pub fn push(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.script.lock().unwrap().extend(faults);
    }

    /// The behaviour once the queue is empty (`None`: answer normally).
    pub fn set_default(&self, fault: Option<Fault>) {
        *self.state.default.lock().unwrap() = fault;
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn disconnects(&self) -> usize {
        self.state.disconnects.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// How many connections are open now.
    pub fn open_connections(&self) -> usize {
        self.state.open_connections.load(Ordering::SeqCst)
    }

    /// When the connections that ended at or after `t` ended.
    pub fn closed_since(&self, t: Instant) -> Vec<Instant> {
        self.state.closed_at.lock().unwrap().iter().copied().filter(|c| *c >= t).collect()
    }
}

/// The mock's listener: hands axum connections that note when they end.
struct Tracked {
    listener: tokio::net::TcpListener,
    state: Arc<MockState>,
}

impl axum::serve::Listener for Tracked {
    type Io = TrackedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TrackedIo, SocketAddr) {
        loop {
            if let Ok((io, addr)) = self.listener.accept().await {
                self.state.open_connections.fetch_add(1, Ordering::SeqCst);
                return (TrackedIo { io, state: self.state.clone() }, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// One accepted connection; dropping it (hyper is done with it) records when it ended.
struct TrackedIo {
    io: tokio::net::TcpStream,
    state: Arc<MockState>,
}

impl Drop for TrackedIo {
    fn drop(&mut self) {
        self.state.open_connections.fetch_sub(1, Ordering::SeqCst);
        self.state.closed_at.lock().unwrap().push(Instant::now());
    }
}

impl tokio::io::AsyncRead for TrackedIo {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Wire {
    OpenAi,
    Anthropic,
    Gemini,
    Ollama,
}

/// One step of a streamed body.
enum Step {
    Data(Bytes),
    Pause(Duration),
    Fail,
}

/// Counts a body that was dropped before it was fully sent.
struct Guard {
    state: Arc<MockState>,
    done: bool,
}

impl Guard {
    fn finish(&mut self) {
        self.done = true;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.done {
            self.state.completed.fetch_add(1, Ordering::SeqCst);
        } else {
            self.state.disconnects.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn streamed(state: &Arc<MockState>, steps: Vec<Step>, content_type: &str) -> Response {
    let guard = Guard { state: state.clone(), done: false };
    let stream = futures::stream::unfold((VecDeque::from(steps), guard), |(mut steps, mut guard)| async move {
        loop {
            match steps.pop_front() {
                None => {
                    guard.finish();
                    return None;
                }
                Some(Step::Pause(d)) => tokio::time::sleep(d).await,
                Some(Step::Data(b)) => return Some((Ok::<Bytes, std::io::Error>(b), (steps, guard))),
                Some(Step::Fail) => {
                    guard.finish(); // an intentional reset, not a client disconnect
                    return Some((Err(std::io::Error::other("injected reset")), (steps, guard)));
                }
            }
        }
    });
    Response::builder()
        .status(200)
        .header("content-type", content_type)
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn json_response(status: u16, headers: &[(&'static str, String)], body: String) -> Response {
    let mut b =
        Response::builder().status(StatusCode::from_u16(status).unwrap()).header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    b.body(Body::from(body)).unwrap()
}

fn record(state: &MockState, path: &str, headers: &HeaderMap, body: &Bytes) -> Option<Fault> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    state.seen.lock().unwrap().push(Seen {
        path: path.to_string(),
        at: Instant::now(),
        authorization: h("authorization"),
        x_api_key: h("x-api-key"),
        x_goog_api_key: h("x-goog-api-key"),
        anthropic_version: h("anthropic-version"),
        body: serde_json::from_slice(body).unwrap_or(serde_json::Value::Null),
    });
    let next = state.script.lock().unwrap().pop_front();
    next.or_else(|| state.default.lock().unwrap().clone())
}

/// `GET /v1/models` (what `keys.test` calls): 200 with a model list for a bearer key, 401 for a
/// key containing `INVALID` or none.
async fn models(State(s): State<Arc<MockState>>, uri: Uri, headers: HeaderMap) -> Response {
    record(&s, uri.path(), &headers, &Bytes::new());
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if auth.starts_with("Bearer ") && !auth.contains("INVALID") {
        json_response(200, &[], r#"{"object":"list","data":[{"id":"m","object":"model"}]}"#.to_string())
    } else {
        json_response(401, &[], r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#.to_string())
    }
}

async fn openai(State(s): State<Arc<MockState>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let fault = record(&s, uri.path(), &headers, &body);
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let stream = req["stream"].as_bool().unwrap_or(false);
    let usage = req["stream_options"]["include_usage"].as_bool().unwrap_or(false);
    let model = req["model"].as_str().unwrap_or("m").to_string();
    answer(&s, Wire::OpenAi, fault, stream, &model, usage).await
}

async fn anthropic(State(s): State<Arc<MockState>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let fault = record(&s, uri.path(), &headers, &body);
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let stream = req["stream"].as_bool().unwrap_or(false);
    let model = req["model"].as_str().unwrap_or("m").to_string();
    answer(&s, Wire::Anthropic, fault, stream, &model, true).await
}

async fn gemini(
    State(s): State<Arc<MockState>>,
    Path(action): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = record(&s, uri.path(), &headers, &body);
    let (model, method) = action.split_once(':').unwrap_or((&action, ""));
    let stream = method == "streamGenerateContent" && uri.query().is_some_and(|q| q.contains("alt=sse"));
    answer(&s, Wire::Gemini, fault, stream, model, true).await
}

async fn ollama(State(s): State<Arc<MockState>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let fault = record(&s, uri.path(), &headers, &body);
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let stream = req["stream"].as_bool().unwrap_or(true);
    let model = req["model"].as_str().unwrap_or("m").to_string();
    answer(&s, Wire::Ollama, fault, stream, &model, true).await
}

fn content_type(wire: Wire) -> &'static str {
    match wire {
        Wire::Ollama => "application/x-ndjson",
        _ => "text/event-stream; charset=utf-8",
    }
}

async fn answer(
    s: &Arc<MockState>,
    wire: Wire,
    fault: Option<Fault>,
    stream: bool,
    model: &str,
    usage: bool,
) -> Response {
    let words = words(REPLY);
    match fault {
        None => normal(s, wire, stream, model, usage, &words, None),
        Some(Fault::Status { status, headers, body }) => json_response(status, &headers, body),
        Some(Fault::Json(v)) => json_response(200, &[], v.to_string()),
        Some(Fault::Stream(text)) => {
            let steps = text.as_bytes().chunks(61).map(|c| Step::Data(Bytes::copy_from_slice(c))).collect();
            streamed(s, steps, content_type(wire))
        }
        Some(Fault::Fixture(name)) => {
            let bytes = fixture(name);
            let steps = bytes.chunks(97).map(|c| Step::Data(Bytes::copy_from_slice(c))).collect();
            streamed(s, steps, content_type(wire))
        }
        Some(Fault::SlowFirstByte(d)) => {
            tokio::time::sleep(d).await;
            normal(s, wire, stream, model, usage, &words, None)
        }
        Some(Fault::Hang) => std::future::pending().await,
        Some(Fault::ResetAfter(n)) => {
            let mut steps = stream_head(wire, model);
            for w in words.iter().take(n) {
                steps.push(Step::Data(delta(wire, model, w, None)));
            }
            steps.push(Step::Pause(Duration::from_millis(20)));
            steps.push(Step::Fail);
            streamed(s, steps, content_type(wire))
        }
        Some(Fault::MalformedChunk) => {
            let mut steps = stream_head(wire, model);
            let bad: &[u8] = if wire == Wire::Ollama {
                b"{\"message\":{\"content\":\"Hel\n"
            } else {
                b"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\n\n"
            };
            steps.push(Step::Data(Bytes::from_static(bad)));
            streamed(s, steps, content_type(wire))
        }
        Some(Fault::StartThenError { cache_read, cache_write, error_type }) => {
            use serde_json::json;
            let start = json!({"type":"message_start","message":{"id":"msg_mock","type":"message","role":"assistant",
                "model":model,"content":[],"stop_reason":null,"usage":{"input_tokens":USAGE_IN,
                "cache_creation_input_tokens":cache_write,"cache_read_input_tokens":cache_read,"output_tokens":1}}});
            let error = json!({"type":"error","error":{"type":error_type,"message":"Overloaded"}});
            let steps = vec![
                Step::Data(sse(Some("message_start"), &start, false)),
                Step::Data(Bytes::from_static(b"event: ping\ndata: {\"type\": \"ping\"}\n\n")),
                Step::Data(sse(Some("error"), &error, false)),
            ];
            streamed(s, steps, content_type(wire))
        }
        Some(Fault::UsageThenReset { output, reasoning }) => {
            use serde_json::json;
            let mut steps = stream_head(wire, model);
            let usage = json!({"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":model,"choices":[],
                "usage":{"prompt_tokens":USAGE_IN,"completion_tokens":output,"total_tokens":USAGE_IN + output,
                         "prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":reasoning}}});
            steps.push(Step::Data(sse(None, &usage, false)));
            steps.push(Step::Pause(Duration::from_millis(20)));
            steps.push(Step::Fail);
            streamed(s, steps, content_type(wire))
        }
        Some(Fault::Slow { every, chunks }) => {
            let many: Vec<String> = (0..chunks).map(|i| format!("w{i} ")).collect();
            normal(s, wire, true, model, usage, &many, Some(every))
        }
    }
}

fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for ch in text.chars() {
        cur.push(ch);
        if ch == ' ' {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn sse(event: Option<&str>, data: &serde_json::Value, crlf: bool) -> Bytes {
    let nl = if crlf { "\r\n" } else { "\n" };
    let mut s = String::new();
    if let Some(e) = event {
        s.push_str(&format!("event: {e}{nl}"));
    }
    s.push_str(&format!("data: {data}{nl}{nl}"));
    Bytes::from(s)
}

/// The first events of a stream, before any text.
fn stream_head(wire: Wire, model: &str) -> Vec<Step> {
    use serde_json::json;
    match wire {
        Wire::OpenAi => vec![Step::Data(sse(
            None,
            &json!({"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":model,
                    "choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}),
            false,
        ))],
        Wire::Anthropic => vec![
            Step::Data(sse(
                Some("message_start"),
                &json!({"type":"message_start","message":{"id":"msg_mock","type":"message","role":"assistant","model":model,
                        "content":[],"stop_reason":null,"usage":{"input_tokens":USAGE_IN,"cache_creation_input_tokens":0,
                        "cache_read_input_tokens":0,"output_tokens":1}}}),
                false,
            )),
            Step::Data(sse(
                Some("content_block_start"),
                &json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
                false,
            )),
            Step::Data(Bytes::from_static(b"event: ping\ndata: {\"type\": \"ping\"}\n\n")),
        ],
        Wire::Gemini | Wire::Ollama => Vec::new(),
    }
}

/// One text delta in the wire's shape (`usage_so_far` for Gemini's cumulative metadata).
fn delta(wire: Wire, model: &str, text: &str, usage_so_far: Option<u64>) -> Bytes {
    use serde_json::json;
    match wire {
        Wire::OpenAi => sse(
            None,
            &json!({"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":model,
                    "choices":[{"index":0,"delta":{"content":text},"finish_reason":null}],"usage":null}),
            false,
        ),
        Wire::Anthropic => sse(
            Some("content_block_delta"),
            &json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":text}}),
            false,
        ),
        Wire::Gemini => sse(
            None,
            &json!({"candidates":[{"content":{"parts":[{"text":text}],"role":"model"},"index":0}],
                    "usageMetadata":{"promptTokenCount":USAGE_IN,"candidatesTokenCount":usage_so_far.unwrap_or(1),
                                     "totalTokenCount":USAGE_IN + usage_so_far.unwrap_or(1)},"modelVersion":model}),
            true,
        ),
        Wire::Ollama => {
            let line = json!({"model":model,"created_at":"2024-07-02T11:45:16Z","message":{"role":"assistant","content":text},"done":false});
            Bytes::from(format!("{line}\n"))
        }
    }
}

fn normal(
    s: &Arc<MockState>,
    wire: Wire,
    stream: bool,
    model: &str,
    include_usage: bool,
    words: &[String],
    every: Option<Duration>,
) -> Response {
    use serde_json::json;
    let text: String = words.concat();
    if !stream {
        let body = match wire {
            Wire::OpenAi => json!({"id":"chatcmpl-mock","object":"chat.completion","created":1,"model":model,
                "choices":[{"index":0,"message":{"role":"assistant","content":text,"refusal":null},"logprobs":null,"finish_reason":"stop"}],
                "usage":{"prompt_tokens":USAGE_IN,"completion_tokens":USAGE_OUT,"total_tokens":USAGE_IN + USAGE_OUT,
                         "prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},
                         "completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0}}}),
            Wire::Anthropic => json!({"id":"msg_mock","type":"message","role":"assistant","model":model,
                "content":[{"type":"text","text":text}],"stop_reason":"end_turn","stop_sequence":null,
                "usage":{"input_tokens":USAGE_IN,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":USAGE_OUT}}),
            Wire::Gemini => {
                json!({"candidates":[{"content":{"parts":[{"text":text}],"role":"model"},"finishReason":"STOP","index":0}],
                "usageMetadata":{"promptTokenCount":USAGE_IN,"candidatesTokenCount":USAGE_OUT,"totalTokenCount":USAGE_IN + USAGE_OUT},
                "modelVersion":model})
            }
            Wire::Ollama => {
                json!({"model":model,"created_at":"2024-07-02T11:45:16Z","message":{"role":"assistant","content":text},
                "done_reason":"stop","done":true,"prompt_eval_count":USAGE_IN,"eval_count":USAGE_OUT})
            }
        };
        return json_response(200, &[], body.to_string());
    }
    let mut steps = stream_head(wire, model);
    let n = words.len() as u64;
    for (i, w) in words.iter().enumerate() {
        if let Some(d) = every {
            steps.push(Step::Pause(d));
        }
        steps.push(Step::Data(delta(
            wire,
            model,
            w,
            Some((i as u64 + 1).saturating_mul(USAGE_OUT).div_ceil(n.max(1))),
        )));
    }
    match wire {
        Wire::OpenAi => {
            steps.push(Step::Data(sse(
                None,
                &json!({"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":model,
                        "choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}),
                false,
            )));
            if include_usage {
                steps.push(Step::Data(sse(
                    None,
                    &json!({"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":model,"choices":[],
                            "usage":{"prompt_tokens":USAGE_IN,"completion_tokens":USAGE_OUT,"total_tokens":USAGE_IN + USAGE_OUT,
                                     "prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}),
                    false,
                )));
            }
            steps.push(Step::Data(Bytes::from_static(b"data: [DONE]\n\n")));
        }
        Wire::Anthropic => {
            steps.push(Step::Data(sse(
                Some("content_block_stop"),
                &json!({"type":"content_block_stop","index":0}),
                false,
            )));
            steps.push(Step::Data(sse(
                Some("message_delta"),
                &json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},
                        "usage":{"output_tokens":USAGE_OUT}}),
                false,
            )));
            steps.push(Step::Data(sse(Some("message_stop"), &json!({"type":"message_stop"}), false)));
        }
        Wire::Gemini => {
            steps.push(Step::Data(sse(
                None,
                &json!({"candidates":[{"content":{"parts":[{"text":""}],"role":"model"},"finishReason":"STOP","index":0}],
                        "usageMetadata":{"promptTokenCount":USAGE_IN,"candidatesTokenCount":USAGE_OUT,"totalTokenCount":USAGE_IN + USAGE_OUT},
                        "modelVersion":model}),
                true,
            )));
        }
        Wire::Ollama => {
            let line = json!({"model":model,"created_at":"2024-07-02T11:45:16Z","message":{"role":"assistant","content":""},
                              "done_reason":"stop","done":true,"prompt_eval_count":USAGE_IN,"eval_count":USAGE_OUT});
            steps.push(Step::Data(Bytes::from(format!("{line}"))));
        }
    }
    streamed(s, steps, content_type(wire))
}
