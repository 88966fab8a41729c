//! Tool loop tests for the openai adapter (Chat Completions): a two-turn tool loop through the
//! real daemon, non-streamed and streamed, checking what the app gets (tool calls, the assistant
//! message, streamed tool-call pieces) and what the provider is sent on the next turn (the
//! assistant `tool_calls` and the `tool` message); a tool-call answer (`content: null`) is an
//! answer, not retried or fallen back from; images reach the provider as `image_url` parts.

use crate::mock_provider::{Fault, Mock, REPLY};
use crate::{chat, chat_stream, config, start, KEY};
use serde_json::{json, Value};

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

/// A whole Chat Completions answer of two tool calls (`content: null`).
fn tool_call_answer() -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "refusal": null,
            "tool_calls": [
                {"id": "call_paris", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
                {"id": "call_rome", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}
            ]}, "logprobs": null, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 60, "completion_tokens": 30, "total_tokens": 90}})
}

fn text_answer(text: &str) -> Value {
    json!({"id": "chatcmpl-2", "object": "chat.completion", "created": 2, "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null},
            "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 80, "completion_tokens": 9, "total_tokens": 89}})
}

/// The two calls as the app gets them in `tool_calls`.
fn expected_calls() -> Value {
    json!([
        {"id": "call_paris", "name": "get_weather", "arguments": {"city": "Paris"}},
        {"id": "call_rome", "name": "get_weather", "arguments": {"city": "Rome"}}
    ])
}

/// What the provider must be sent on turn 2: the question, the assistant's tool calls (arguments
/// as compact JSON text, as the app sent them back as objects), one `tool` message per result.
fn expected_turn2_messages() -> Value {
    json!([
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_paris", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_rome", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_paris", "content": "22 C, sunny"},
        {"role": "tool", "tool_call_id": "call_rome", "content": "25 C, clear"}
    ])
}

/// Turn 2's messages: the question, the assistant message as the daemon returned it, results.
fn turn2(message: &Value) -> Value {
    json!([
        question(),
        message,
        {"role": "tool", "tool_call_id": "call_paris", "content": "22 C, sunny"},
        {"role": "tool", "tool_call_id": "call_rome", "content": "25 C, clear"}
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_loop_non_streamed() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, ""));
    let c = d.client().await;

    mock.push([Fault::Json(tool_call_answer())]);
    let r =
        chat(&c, json!({"model": "openai/gpt-4o", "messages": [question()], "tools": tools(), "tool_choice": "auto"}))
            .await
            .unwrap();
    assert_eq!(r["finish_reason"], "tool_calls");
    assert_eq!(r["tool_calls"], expected_calls());
    assert_eq!(r["content"], "");
    assert_eq!(
        r["message"],
        json!({"role": "assistant", "content": [
            {"type": "tool_call", "id": "call_paris", "name": "get_weather", "arguments": {"city": "Paris"}},
            {"type": "tool_call", "id": "call_rome", "name": "get_weather", "arguments": {"city": "Rome"}}
        ]})
    );
    assert_eq!((r["usage"]["input"].as_u64(), r["usage"]["output"].as_u64()), (Some(60), Some(30)));
    // What turn 1 sent: the tools and the choice in Chat Completions form.
    let sent = &mock.seen()[0].body;
    assert_eq!(mock.seen()[0].path, "/v1/chat/completions");
    assert_eq!(mock.seen()[0].authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(sent["messages"], json!([{"role": "user", "content": "Weather in Paris and Rome?"}]));
    assert_eq!(
        sent["tools"],
        json!([{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
    );
    assert_eq!(sent["tool_choice"], "auto");

    mock.push([Fault::Json(text_answer("Paris: 22 C and sunny; Rome: 25 C and clear."))]);
    let r2 =
        chat(&c, json!({"model": "openai/gpt-4o", "messages": turn2(&r["message"]), "tools": tools()})).await.unwrap();
    assert_eq!(r2["content"], "Paris: 22 C and sunny; Rome: 25 C and clear.");
    assert_eq!(r2["finish_reason"], "stop");
    assert_eq!(r2["tool_calls"], json!([]));
    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].body["messages"], expected_turn2_messages());
}

/// A streamed answer of two tool calls, arguments split across chunks, then usage.
fn tool_call_stream() -> String {
    let chunk = |delta: Value, finish: Value| {
        let c = json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}], "usage": null});
        format!("data: {c}\n\n")
    };
    let piece = |index: u64, args: &str| json!({"tool_calls": [{"index": index, "function": {"arguments": args}}]});
    let open = |index: u64, id: &str| {
        json!({"tool_calls": [{"index": index, "id": id, "type": "function",
            "function": {"name": "get_weather", "arguments": ""}}]})
    };
    let usage = json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2024-08-06",
        "choices": [], "usage": {"prompt_tokens": 61, "completion_tokens": 31, "total_tokens": 92}});
    [
        chunk(json!({"role": "assistant", "content": null}), Value::Null),
        chunk(open(0, "call_paris"), Value::Null),
        chunk(piece(0, "{\"ci"), Value::Null),
        chunk(piece(0, "ty\": \"Par"), Value::Null),
        chunk(piece(0, "is\"}"), Value::Null),
        chunk(open(1, "call_rome"), Value::Null),
        chunk(piece(1, "{\"city\":"), Value::Null),
        chunk(piece(1, "\"Rome\"}"), Value::Null),
        chunk(json!({}), json!("tool_calls")),
        format!("data: {usage}\n\n"),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_loop_streamed() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, ""));

    mock.push([Fault::Stream(tool_call_stream())]);
    let (r, chunks) =
        chat_stream(&d, json!({"model": "openai/gpt-4o", "messages": [question()], "tools": tools()})).await;
    let r = r.unwrap();
    assert_eq!(r["finish_reason"], "tool_calls");
    assert_eq!(r["tool_calls"], expected_calls());
    assert_eq!((r["usage"]["input"].as_u64(), r["usage"]["output"].as_u64()), (Some(61), Some(31)));
    assert_eq!(mock.seen()[0].body["stream"], true);

    // The chunks: only tool-call pieces, in order; reassembled per index they are the calls.
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for (i, ch) in chunks.iter().enumerate() {
        assert_eq!(ch["seq"].as_u64(), Some(i as u64));
        let t = ch.get("tool_call").unwrap_or_else(|| panic!("not a tool_call chunk: {ch}"));
        let index = t["index"].as_u64().unwrap() as usize;
        let piece = t["arguments_delta"].as_str().unwrap();
        if index == calls.len() {
            // The first piece of a call names it.
            let id = t["id"].as_str().expect("first piece has the id");
            let name = t["name"].as_str().expect("first piece has the name");
            calls.push((id.to_string(), name.to_string(), piece.to_string()));
        } else {
            assert!(t.get("id").is_none() && t.get("name").is_none(), "{t}");
            calls[index].2.push_str(piece);
        }
    }
    assert_eq!(chunks.len(), 7);
    assert_eq!(
        calls,
        [("call_paris", "get_weather", "{\"city\": \"Paris\"}"), ("call_rome", "get_weather", "{\"city\":\"Rome\"}")]
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    );

    // Turn 2, streamed: the mock's normal answer.
    let (r2, chunks2) =
        chat_stream(&d, json!({"model": "openai/gpt-4o", "messages": turn2(&r["message"]), "tools": tools()})).await;
    let r2 = r2.unwrap();
    assert_eq!(r2["content"], REPLY);
    assert_eq!(r2["finish_reason"], "stop");
    let text: String = chunks2.iter().map(|c| c["delta"].as_str().unwrap()).collect();
    assert_eq!(text, REPLY);
    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].body["messages"], expected_turn2_messages());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_call_answer_is_not_retried_or_fallen_back_from() {
    let mock = Mock::start().await;
    let routes = "[routes.smart]\ntargets = [\"openai/gpt-4o\", \"anthropic/claude-sonnet-4-5\"]\n";
    let d = start(&config(&mock, routes));
    let c = d.client().await;
    mock.push([Fault::Json(tool_call_answer())]);
    let r = chat(&c, json!({"model": "smart", "messages": [question()], "tools": tools()})).await.unwrap();
    assert_eq!(r["provider"], "openai");
    assert_eq!(r["tool_calls"], expected_calls());
    let attempts: Vec<(&str, &str)> = r["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["provider"].as_str().unwrap(), a["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(attempts, [("openai", "ok")]);
    assert_eq!(mock.requests(), 1);
    assert!(mock.seen().iter().all(|s| s.path == "/v1/chat/completions"));

    // A refusal (`content: null`, text in `refusal`) is an answer too.
    mock.push([Fault::Json(json!({"model": "gpt-4o", "choices": [{"index": 0, "message": {"role": "assistant",
        "content": null, "refusal": "I can't help with that."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}}))]);
    let r = chat(&c, json!({"model": "smart", "messages": [question()]})).await.unwrap();
    assert_eq!(r["content"], "I can't help with that.");
    assert_eq!(r["finish_reason"], "refusal");
    assert_eq!(mock.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_parts_reach_the_provider_as_image_url() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, ""));
    let c = d.client().await;
    let r = chat(
        &c,
        json!({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image", "url": "https://example.com/a.png", "detail": "low"},
            {"type": "image", "data": "iVBORw0KGgo=", "media_type": "image/png"}
        ]}]}),
    )
    .await
    .unwrap();
    assert_eq!(r["content"], REPLY);
    assert_eq!(
        mock.seen()[0].body["messages"],
        json!([{"role": "user", "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
        ]}])
    );

    // An image inside a tool result has no Chat Completions form: refused by name, not sent.
    let before = mock.requests();
    let e = chat(
        &c,
        json!({"model": "openai/gpt-4o", "messages": [
            question(),
            {"role": "assistant", "content": [{"type": "tool_call", "id": "c1", "name": "get_weather", "arguments": {}}]},
            {"role": "tool", "content": [{"type": "tool_result", "tool_call_id": "c1",
                "content": [{"type": "image", "url": "https://example.com/map.png"}]}]}
        ], "tools": tools()}),
    )
    .await
    .unwrap_err();
    assert!(e.message.contains("images in tool results"), "{e:?}");
    assert_eq!(mock.requests(), before);
}
