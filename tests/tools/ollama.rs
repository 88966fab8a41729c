//! The ollama-native adapter (`local`) through the real daemon: a two-turn tool loop with an
//! image and thinking, streamed (NDJSON) and not, checking what the app gets and what Ollama was
//! sent on the second turn (the assistant's `tool_calls` and `tool` messages named after them).

use crate::mock_provider::{Fault, Mock};
use crate::{chat, chat_stream, config, start};
use serde_json::{json, Value};

const MODEL: &str = "local/llama3.2";

fn tools() -> Value {
    json!([{"name":"get_weather","description":"Current weather of a city",
        "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}])
}

fn question() -> Value {
    json!({"role":"user","content":[
        {"type":"text","text":"Weather in this city and in Rome?"},
        {"type":"image","data":"iVBORw0KGgo=","media_type":"image/png"}]})
}

fn second_turn(first: &Value) -> Value {
    json!([
        question(),
        first["message"],
        {"role":"tool","tool_call_id":first["tool_calls"][0]["id"],"content":"22 C"},
        {"role":"tool","tool_call_id":first["tool_calls"][1]["id"],"content":"18 C"},
    ])
}

fn check_first_answer(r: &Value) {
    assert_eq!(r["finish_reason"], "tool_calls", "{r}");
    assert_eq!(r["reasoning"], "The photo is Paris.");
    assert_eq!(
        r["tool_calls"],
        json!([
            {"id":"call_0","name":"get_weather","arguments":{"city":"Paris"}},
            {"id":"call_1","name":"get_weather","arguments":{"city":"Rome"}}
        ])
    );
    assert_eq!(
        r["message"]["content"],
        json!([
            {"type":"thinking","text":"The photo is Paris."},
            {"type":"tool_call","id":"call_0","name":"get_weather","arguments":{"city":"Paris"}},
            {"type":"tool_call","id":"call_1","name":"get_weather","arguments":{"city":"Rome"}}
        ])
    );
}

fn check_first_request(body: &Value, stream: bool) {
    assert_eq!(body["model"], "llama3.2");
    assert_eq!(body["stream"], stream);
    assert_eq!(
        body["messages"],
        json!([{"role":"user","content":"Weather in this city and in Rome?","images":["iVBORw0KGgo="]}])
    );
    assert_eq!(
        body["tools"],
        json!([{"type":"function","function":{"name":"get_weather","description":"Current weather of a city",
            "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}])
    );
    assert_eq!(body["think"], true);
}

fn check_second_request(body: &Value) {
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4, "{body}");
    assert_eq!(
        messages[1],
        json!({"role":"assistant","content":"","thinking":"The photo is Paris.","tool_calls":[
            {"function":{"name":"get_weather","arguments":{"city":"Paris"}}},
            {"function":{"name":"get_weather","arguments":{"city":"Rome"}}}]})
    );
    assert_eq!(messages[2], json!({"role":"tool","content":"22 C","tool_name":"get_weather"}));
    assert_eq!(messages[3], json!({"role":"tool","content":"18 C","tool_name":"get_weather"}));
}

fn params(messages: Value) -> Value {
    json!({"model":MODEL,"messages":messages,"tools":tools(),"reasoning":{"effort":"low"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_loop_not_streamed() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, ""));
    let client = d.client().await;
    mock.push([
        Fault::Json(json!({"model":"llama3.2","message":{"role":"assistant","content":"",
            "thinking":"The photo is Paris.","tool_calls":[
                {"function":{"name":"get_weather","arguments":{"city":"Paris"}}},
                {"function":{"name":"get_weather","arguments":{"city":"Rome"}}}]},
            "done":true,"done_reason":"stop","prompt_eval_count":90,"eval_count":30})),
        Fault::Json(json!({"model":"llama3.2","message":{"role":"assistant","content":"Paris 22 C, Rome 18 C."},
            "done":true,"done_reason":"stop","prompt_eval_count":120,"eval_count":11})),
    ]);
    let first = chat(&client, params(json!([question()]))).await.unwrap();
    check_first_answer(&first);
    assert_eq!((first["usage"]["input"].as_u64(), first["usage"]["output"].as_u64()), (Some(90), Some(30)));

    let second = chat(&client, params(second_turn(&first))).await.unwrap();
    assert_eq!(second["content"], "Paris 22 C, Rome 18 C.");
    assert_eq!(second["finish_reason"], "stop");

    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path, "/api/chat");
    check_first_request(&seen[0].body, false);
    check_second_request(&seen[1].body);
}

fn ndjson(lines: &[Value]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_loop_streamed() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, ""));
    let line = |message: Value| json!({"model":"llama3.2","message":message,"done":false});
    let turn1 = ndjson(&[
        line(json!({"role":"assistant","content":"","thinking":"The photo "})),
        line(json!({"role":"assistant","content":"","thinking":"is Paris."})),
        line(json!({"role":"assistant","content":"","tool_calls":[
            {"function":{"name":"get_weather","arguments":{"city":"Paris"}}},
            {"function":{"name":"get_weather","arguments":{"city":"Rome"}}}]})),
        json!({"model":"llama3.2","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop",
            "prompt_eval_count":90,"eval_count":30}),
    ]);
    let turn2 = ndjson(&[
        line(json!({"role":"assistant","content":"Paris 22 C, "})),
        line(json!({"role":"assistant","content":"Rome 18 C."})),
        json!({"model":"llama3.2","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop",
            "prompt_eval_count":120,"eval_count":11}),
    ]);
    mock.push([Fault::Stream(turn1), Fault::Stream(turn2)]);

    let (first, chunks) = chat_stream(&d, params(json!([question()]))).await;
    let first = first.unwrap();
    check_first_answer(&first);
    let pieces: Vec<Value> = chunks
        .iter()
        .map(|c| {
            let mut c = c.clone();
            c.as_object_mut().unwrap().remove("seq");
            c
        })
        .collect();
    assert_eq!(
        pieces,
        vec![
            json!({"reasoning_delta":"The photo "}),
            json!({"reasoning_delta":"is Paris."}),
            json!({"tool_call":{"index":0,"id":"call_0","name":"get_weather","arguments_delta":"{\"city\":\"Paris\"}"}}),
            json!({"tool_call":{"index":1,"id":"call_1","name":"get_weather","arguments_delta":"{\"city\":\"Rome\"}"}}),
        ]
    );

    let (second, _) = chat_stream(&d, params(second_turn(&first))).await;
    let second = second.unwrap();
    assert_eq!(second["content"], "Paris 22 C, Rome 18 C.");
    assert_eq!(second["finish_reason"], "stop");
    assert_eq!((second["usage"]["input"].as_u64(), second["usage"]["output"].as_u64()), (Some(120), Some(11)));

    let seen = mock.seen();
    check_first_request(&seen[0].body, true);
    check_second_request(&seen[1].body);
}
