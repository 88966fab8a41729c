//! The gemini adapter through the real daemon: a two-turn tool loop (parallel function calls,
//! one signed, then the results and the final answer), streamed and not, checking what the app
//! gets and what Gemini was sent on the second turn (the `thoughtSignature` back on its own
//! `functionCall` part, `functionResponse`s named after their calls).

use crate::mock_provider::{Fault, Mock};
use crate::{chat, chat_stream, config, start, KEY};
use serde_json::{json, Value};

const MODEL: &str = "gemini/gemini-2.5-flash";

fn tools() -> Value {
    json!([{"name":"get_weather","description":"Current weather of a city",
        "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"],
            "additionalProperties":false}}])
}

fn question() -> Value {
    json!({"role":"user","content":"Weather in Paris and Rome?"})
}

/// The second turn's messages: the question, the app's copy of the answer, both results.
fn second_turn(first: &Value) -> Value {
    json!([
        question(),
        first["message"],
        {"role":"tool","tool_call_id":first["tool_calls"][0]["id"],"content":"22 C"},
        {"role":"tool","tool_call_id":first["tool_calls"][1]["id"],"content":"no station","is_error":true},
    ])
}

/// What the daemon must send Gemini on the second turn.
fn check_second_request(body: &Value) {
    let contents = body["contents"].as_array().unwrap();
    assert_eq!(contents.len(), 3, "{body}");
    assert_eq!(contents[0], json!({"role":"user","parts":[{"text":"Weather in Paris and Rome?"}]}));
    assert_eq!(
        contents[1],
        json!({"role":"model","parts":[
            {"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"c2lnLXBhcmlz"},
            {"functionCall":{"name":"get_weather","args":{"city":"Rome"}}}]}),
        "the signature goes back on the functionCall it came with; thinking text is not sent"
    );
    assert_eq!(
        contents[2],
        json!({"role":"user","parts":[
            {"functionResponse":{"name":"get_weather","response":{"result":"22 C"}}},
            {"functionResponse":{"name":"get_weather","response":{"error":"no station"}}}]})
    );
    assert_eq!(
        body["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"],
        tools()[0]["parameters"],
        "full JSON Schema is sent as is"
    );
}

fn check_first_answer(r: &Value, thinking: &str) {
    assert_eq!(r["finish_reason"], "tool_calls", "{r}");
    assert_eq!(
        r["tool_calls"],
        json!([
            {"id":"call_0","name":"get_weather","arguments":{"city":"Paris"}},
            {"id":"call_1","name":"get_weather","arguments":{"city":"Rome"}}
        ])
    );
    assert_eq!(
        r["message"],
        json!({"role":"assistant","content":[
            {"type":"thinking","text":thinking,"signature":"c2lnLXBhcmlz"},
            {"type":"tool_call","id":"call_0","name":"get_weather","arguments":{"city":"Paris"}},
            {"type":"tool_call","id":"call_1","name":"get_weather","arguments":{"city":"Rome"}}]})
    );
    assert_eq!(r["content"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_loop_not_streamed() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, ""));
    let client = d.client().await;
    mock.push([
        Fault::Json(json!({"candidates":[{"content":{"role":"model","parts":[
            {"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"c2lnLXBhcmlz"},
            {"functionCall":{"name":"get_weather","args":{"city":"Rome"}}}]},
            "finishReason":"STOP","finishMessage":"Model generated function call(s)."}],
            "usageMetadata":{"promptTokenCount":70,"candidatesTokenCount":40,"thoughtsTokenCount":61},
            "modelVersion":"gemini-2.5-flash"})),
        Fault::Json(json!({"candidates":[{"content":{"role":"model","parts":[
            {"text":"Paris: 22 C. Rome: no data."}]},"finishReason":"STOP"}],
            "usageMetadata":{"promptTokenCount":150,"candidatesTokenCount":9},"modelVersion":"gemini-2.5-flash"})),
    ]);
    let first = chat(&client, json!({"model":MODEL,"messages":[question()],"tools":tools()})).await.unwrap();
    check_first_answer(&first, "");
    assert_eq!(first["usage"]["input"], 70);
    assert_eq!(first["usage"]["output"], 101);
    assert_eq!(first["usage"]["reasoning"], 61);

    let second = chat(&client, json!({"model":MODEL,"messages":second_turn(&first),"tools":tools()})).await.unwrap();
    assert_eq!(second["content"], "Paris: 22 C. Rome: no data.");
    assert_eq!(second["finish_reason"], "stop");
    assert_eq!(second["tool_calls"], json!([]));

    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].path.ends_with("/models/gemini-2.5-flash:generateContent"), "{}", seen[1].path);
    assert_eq!(seen[1].x_goog_api_key.as_deref(), Some(KEY));
    assert_eq!(seen[0].body["contents"].as_array().unwrap().len(), 1);
    check_second_request(&seen[1].body);
}

/// One SSE event as Gemini frames it (CRLF).
fn event(v: Value) -> String {
    format!("data: {v}\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_loop_streamed() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, ""));
    let usage = |out: u64| json!({"promptTokenCount":70,"candidatesTokenCount":out,"thoughtsTokenCount":12});
    let turn1 = [
        event(json!({"candidates":[{"content":{"role":"model","parts":[
            {"text":"Two cities, two calls.","thought":true}]}}],"usageMetadata":usage(0),"modelVersion":"gemini-2.5-flash"})),
        event(json!({"candidates":[{"content":{"role":"model","parts":[
            {"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"c2lnLXBhcmlz"}]}}],
            "usageMetadata":usage(20),"modelVersion":"gemini-2.5-flash"})),
        event(json!({"candidates":[{"content":{"role":"model","parts":[
            {"functionCall":{"name":"get_weather","args":{"city":"Rome"}}}]},"finishReason":"STOP"}],
            "usageMetadata":usage(40),"modelVersion":"gemini-2.5-flash"})),
    ]
    .concat();
    let turn2 = [
        event(json!({"candidates":[{"content":{"role":"model","parts":[{"text":"Paris: 22 C. "}]}}],
            "usageMetadata":{"promptTokenCount":150,"candidatesTokenCount":4}})),
        event(json!({"candidates":[{"content":{"role":"model","parts":[{"text":"Rome: no data."}]},"finishReason":"STOP"}],
            "usageMetadata":{"promptTokenCount":150,"candidatesTokenCount":9}})),
    ]
    .concat();
    mock.push([Fault::Stream(turn1), Fault::Stream(turn2)]);

    let (first, chunks) = chat_stream(&d, json!({"model":MODEL,"messages":[question()],"tools":tools()})).await;
    let first = first.unwrap();
    check_first_answer(&first, "Two cities, two calls.");
    assert_eq!(first["usage"]["output"], 52);
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
            json!({"reasoning_delta":"Two cities, two calls."}),
            json!({"tool_call":{"index":0,"id":"call_0","name":"get_weather","arguments_delta":"{\"city\":\"Paris\"}"}}),
            json!({"tool_call":{"index":1,"id":"call_1","name":"get_weather","arguments_delta":"{\"city\":\"Rome\"}"}}),
        ],
        "each call arrives whole, in one chunk"
    );

    let (second, chunks) = chat_stream(&d, json!({"model":MODEL,"messages":second_turn(&first),"tools":tools()})).await;
    let second = second.unwrap();
    assert_eq!(second["content"], "Paris: 22 C. Rome: no data.");
    assert_eq!(second["finish_reason"], "stop");
    assert_eq!(chunks.len(), 2);

    let seen = mock.seen();
    assert!(seen[1].path.ends_with("/models/gemini-2.5-flash:streamGenerateContent"), "{}", seen[1].path);
    check_second_request(&seen[1].body);
}
