//! Tool loop tests for the anthropic adapter (Messages API) with reasoning: a two-turn tool loop
//! through the real daemon, non-streamed and streamed. Turn 1 answers with a signed thinking
//! block, text and two `tool_use` blocks; the app gets the calls, the assistant message (thinking
//! part with its signature first) and `finish_reason: tool_calls`, and — streamed —
//! `reasoning_delta` and `tool_call` pieces. Turn 2 the app appends that message and one `tool`
//! message per call; the provider must be sent the assistant message back as it came (thinking
//! with the same signature first, then text and `tool_use` with parsed `input`) and one `user`
//! message holding both `tool_result` blocks. A feature Anthropic rejects is refused by name.

use crate::mock_provider::{Fault, Mock};
use crate::{chat, chat_stream, config, start, KEY};
use serde_json::{json, Value};

const MODEL: &str = "anthropic/claude-sonnet-4-5";
const SIGNATURE: &str = "EqQBCkYIBxgCKkDmock+signature/of/the/thinking==";
const THINKING: &str = "The user wants two cities. I will call get_weather for each.";

fn tools() -> Value {
    json!([{
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    }])
}

fn question() -> Value {
    json!({"role": "user", "content": "Weather in Paris and Rome?"})
}

fn params(messages: Value) -> Value {
    json!({"model": MODEL, "messages": messages, "tools": tools(), "reasoning": {"effort": "low"}, "max_tokens": 800})
}

/// A whole Messages answer: signed thinking, text, two tool_use blocks.
fn tool_use_answer() -> Value {
    json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "thinking", "thinking": THINKING, "signature": SIGNATURE},
            {"type": "text", "text": "Checking both."},
            {"type": "tool_use", "id": "toolu_paris", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_rome", "name": "get_weather", "input": {"city": "Rome"}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 400, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 90}})
}

fn text_answer(text: &str) -> Value {
    json!({"id": "msg_2", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 520, "output_tokens": 12}})
}

fn sse(events: &[Value]) -> String {
    events.iter().map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap())).collect()
}

/// The same answer as [`tool_use_answer`], streamed: thinking and arguments in pieces.
fn tool_use_stream() -> String {
    let delta = |index: u64, d: Value| json!({"type": "content_block_delta", "index": index, "delta": d});
    let start = |index: u64, b: Value| json!({"type": "content_block_start", "index": index, "content_block": b});
    let stop = |index: u64| json!({"type": "content_block_stop", "index": index});
    let (t1, t2) = THINKING.split_at(20);
    sse(&[
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": null,
            "usage": {"input_tokens": 400, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1}}}),
        start(0, json!({"type": "thinking", "thinking": "", "signature": ""})),
        delta(0, json!({"type": "thinking_delta", "thinking": t1})),
        delta(0, json!({"type": "thinking_delta", "thinking": t2})),
        delta(0, json!({"type": "signature_delta", "signature": SIGNATURE})),
        stop(0),
        start(1, json!({"type": "text", "text": ""})),
        delta(1, json!({"type": "text_delta", "text": "Checking "})),
        delta(1, json!({"type": "text_delta", "text": "both."})),
        stop(1),
        json!({"type": "ping"}),
        start(2, json!({"type": "tool_use", "id": "toolu_paris", "name": "get_weather", "input": {}})),
        delta(2, json!({"type": "input_json_delta", "partial_json": ""})),
        delta(2, json!({"type": "input_json_delta", "partial_json": "{\"city\": \"Pa"})),
        delta(2, json!({"type": "input_json_delta", "partial_json": "ris\"}"})),
        stop(2),
        start(3, json!({"type": "tool_use", "id": "toolu_rome", "name": "get_weather", "input": {}})),
        delta(3, json!({"type": "input_json_delta", "partial_json": "{\"city\":"})),
        delta(3, json!({"type": "input_json_delta", "partial_json": " \"Rome\"}"})),
        stop(3),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"input_tokens": 400, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 90}}),
        json!({"type": "message_stop"}),
    ])
}

fn text_stream(pieces: &[&str]) -> String {
    let mut events = vec![
        json!({"type": "message_start", "message": {"id": "msg_2", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5-20250929", "content": [], "usage": {"input_tokens": 520, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ];
    for p in pieces {
        events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}));
    }
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 12}}));
    events.push(json!({"type": "message_stop"}));
    sse(&events)
}

fn expected_calls() -> Value {
    json!([
        {"id": "toolu_paris", "name": "get_weather", "arguments": {"city": "Paris"}},
        {"id": "toolu_rome", "name": "get_weather", "arguments": {"city": "Rome"}}
    ])
}

/// The `message` the app gets on turn 1 (arguments as the model produced them, parsed).
fn expected_message() -> Value {
    json!({"role": "assistant", "content": [
        {"type": "thinking", "text": THINKING, "signature": SIGNATURE},
        {"type": "text", "text": "Checking both."},
        {"type": "tool_call", "id": "toolu_paris", "name": "get_weather", "arguments": {"city": "Paris"}},
        {"type": "tool_call", "id": "toolu_rome", "name": "get_weather", "arguments": {"city": "Rome"}}
    ]})
}

/// What Anthropic must be sent on turn 2.
fn expected_turn2_messages() -> Value {
    json!([
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": THINKING, "signature": SIGNATURE},
            {"type": "text", "text": "Checking both."},
            {"type": "tool_use", "id": "toolu_paris", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_rome", "name": "get_weather", "input": {"city": "Rome"}}
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_paris", "content": "22 C, sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_rome", "content": "25 C, clear"}
        ]}
    ])
}

/// Turn 2's messages: the question, the assistant message as the app got it, the two results.
fn turn2(message: &Value) -> Value {
    json!([
        question(),
        message,
        {"role": "tool", "tool_call_id": "toolu_paris", "content": "22 C, sunny"},
        {"role": "tool", "tool_call_id": "toolu_rome", "content": "25 C, clear"}
    ])
}

/// Turn 1 as sent: tools, thinking, max_tokens above the budget.
fn check_turn1_request(body: &Value, stream: bool) {
    assert_eq!(body["model"], "claude-sonnet-4-5");
    assert_eq!(body["messages"], json!([{"role": "user", "content": "Weather in Paris and Rome?"}]));
    assert_eq!(
        body["tools"],
        json!([{"name": "get_weather", "description": "The weather in a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}])
    );
    assert_eq!(body["thinking"], json!({"type": "enabled", "budget_tokens": 1024}));
    // 800 is not above the 1,024 budget: the answer keeps its 800 on top of it.
    assert_eq!(body["max_tokens"], json!(1824));
    assert!(body.get("temperature").is_none() && body.get("tool_choice").is_none(), "{body}");
    assert_eq!(body.get("stream").and_then(Value::as_bool).unwrap_or(false), stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_loop_with_thinking() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, ""));
    let c = d.client().await;
    mock.push([Fault::Json(tool_use_answer()), Fault::Json(text_answer("Paris 22 C, Rome 25 C."))]);

    let r = chat(&c, params(json!([question()]))).await.unwrap();
    assert_eq!(r["finish_reason"], "tool_calls");
    assert_eq!(r["tool_calls"], expected_calls());
    assert_eq!(r["message"], expected_message());
    assert_eq!(r["reasoning"], THINKING);
    assert_eq!(r["content"], "Checking both.");
    assert_eq!((r["usage"]["input"].as_u64(), r["usage"]["output"].as_u64()), (Some(400), Some(90)));

    let r2 = chat(&c, params(turn2(&r["message"]))).await.unwrap();
    assert_eq!(r2["content"], "Paris 22 C, Rome 25 C.");
    assert_eq!(r2["finish_reason"], "stop");
    assert_eq!(r2["tool_calls"], json!([]));

    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.path == "/v1/messages" && s.x_api_key.as_deref() == Some(KEY)));
    check_turn1_request(&seen[0].body, false);
    assert_eq!(seen[1].body["messages"], expected_turn2_messages());
    assert_eq!(seen[1].body["thinking"], json!({"type": "enabled", "budget_tokens": 1024}));
    assert!(seen[1].body["tools"].is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_loop_with_thinking_streamed() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, ""));
    mock.push([Fault::Stream(tool_use_stream()), Fault::Stream(text_stream(&["Paris 22 C, ", "Rome 25 C."]))]);

    let (r, chunks) = chat_stream(&d, params(json!([question()]))).await;
    let r = r.unwrap();
    assert_eq!(r["finish_reason"], "tool_calls");
    assert_eq!(r["tool_calls"], expected_calls());
    assert_eq!(r["message"], expected_message());
    assert_eq!((r["usage"]["input"].as_u64(), r["usage"]["output"].as_u64()), (Some(400), Some(90)));
    // The pieces the app was streamed: reasoning, text, then each call's id, name and arguments.
    let reasoning: String = chunks.iter().filter_map(|c| c["reasoning_delta"].as_str()).collect();
    assert_eq!(reasoning, THINKING);
    assert_eq!(chunks.iter().filter(|c| c.get("reasoning_delta").is_some()).count(), 2);
    let text: String = chunks.iter().filter_map(|c| c["delta"].as_str()).collect();
    assert_eq!(text, "Checking both.");
    let calls: Vec<&Value> = chunks.iter().filter_map(|c| c.get("tool_call")).collect();
    for (i, (id, args)) in
        [("toolu_paris", "{\"city\": \"Paris\"}"), ("toolu_rome", "{\"city\": \"Rome\"}")].iter().enumerate()
    {
        let mine: Vec<&&Value> = calls.iter().filter(|c| c["index"] == json!(i)).collect();
        assert_eq!(mine.len(), 3, "call {i}: {calls:?}");
        assert_eq!((mine[0]["id"].as_str(), mine[0]["name"].as_str()), (Some(*id), Some("get_weather")));
        assert!(mine[1..].iter().all(|c| c.get("id").is_none() && c.get("name").is_none()));
        let joined: String = mine.iter().filter_map(|c| c["arguments_delta"].as_str()).collect();
        assert_eq!(joined, *args, "call {i}");
    }
    let seq: Vec<u64> = chunks.iter().map(|c| c["seq"].as_u64().unwrap()).collect();
    assert_eq!(seq, (0..chunks.len() as u64).collect::<Vec<_>>());

    let (r2, chunks2) = chat_stream(&d, params(turn2(&r["message"]))).await;
    let r2 = r2.unwrap();
    assert_eq!(r2["content"], "Paris 22 C, Rome 25 C.");
    assert_eq!(r2["finish_reason"], "stop");
    let text: String = chunks2.iter().filter_map(|c| c["delta"].as_str()).collect();
    assert_eq!(text, "Paris 22 C, Rome 25 C.");

    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    check_turn1_request(&seen[0].body, true);
    // The streamed arguments went back as the objects they spell.
    assert_eq!(seen[1].body["messages"], expected_turn2_messages());
    assert_eq!(seen[1].body["stream"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_tool_use_stream_and_refused_features() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, ""));
    mock.push([Fault::Fixture("anthropic_messages_stream_tool_use.sse")]);
    let (r, _) = chat_stream(
        &d,
        json!({"model": MODEL, "messages": [{"role": "user", "content": "Please retrieve the secrets associated with each of these passwords: mellon,radiance"}],
            "tools": [{"name": "secret_retrieval_tool", "parameters": {"type": "object", "properties": {"password": {"type": "string"}}}}]}),
    )
    .await;
    let r = r.unwrap();
    assert_eq!(r["finish_reason"], "tool_calls");
    assert_eq!(
        r["tool_calls"],
        json!([
            {"id": "toolu_015cUijgET79LXjgeYQerN2h", "name": "secret_retrieval_tool", "arguments": {"password": "mellon"}},
            {"id": "toolu_01XZTimPexA7h3EVKesnKt5T", "name": "secret_retrieval_tool", "arguments": {"password": "radiance"}}
        ])
    );
    assert_eq!(r["content"], "I'll retrieve the secrets for both passwords you provided.");
    assert_eq!((r["usage"]["input"].as_u64(), r["usage"]["output"].as_u64()), (Some(416), Some(109)));

    // Refused before any request, by name.
    let c = d.client().await;
    let before = mock.requests();
    for (extra, feature) in [
        (json!({"temperature": 0.3, "reasoning": {"effort": "low"}}), "temperature with reasoning"),
        (json!({"response_format": {"type": "json_object"}}), "response_format"),
    ] {
        let mut p = json!({"model": MODEL, "messages": [question()]});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        let e = chat(&c, p).await.unwrap_err();
        let data = serde_json::to_value(&e.data).unwrap();
        assert_eq!(data["feature"], feature, "{e:?}");
        assert!(e.message.contains(feature), "{}", e.message);
    }
    assert_eq!(mock.requests(), before);
}
