//! Tool loop through the daemon for a provider with `api = "responses"` (the OpenAI Responses
//! API): turn 1 answers a reasoning item and a function call; the app appends `result.message`
//! and a tool result; turn 2 must hand the reasoning item (its encrypted content), the function
//! call and its output back to the provider, and answers text. Streamed and not.

use crate::mock_provider::{Fault, Mock};
use crate::{chat, chat_stream, config, start, KEY};
use serde_json::{json, Value};

const ENCRYPTED: &str = "gAAAAABpbW9jay1lbmNyeXB0ZWQtcmVhc29uaW5n";
const ANSWER: &str = "It is 22 C in Paris.";

fn extra(mock: &Mock) -> String {
    format!(
        "[providers.oai]\nadapter = \"openai\"\napi = \"responses\"\nbase_url = \"{}/v1\"\nkey_env = \"MOCK_KEY\"\n",
        mock.url()
    )
}

fn params(messages: Value) -> Value {
    json!({
        "model": "oai/gpt-5",
        "system": "Be brief.",
        "messages": messages,
        "tools": [{"name": "get_weather", "description": "Weather of a city",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
        "reasoning": {"effort": "low"},
        "max_tokens": 400
    })
}

fn user() -> Value {
    json!({"role": "user", "content": "Weather in Paris?"})
}

fn usage(input: u64, cached: u64, output: u64, reasoning: u64) -> Value {
    json!({"input_tokens": input, "input_tokens_details": {"cached_tokens": cached},
           "output_tokens": output, "output_tokens_details": {"reasoning_tokens": reasoning},
           "total_tokens": input + output})
}

fn reasoning_item() -> Value {
    json!({"id": "rs_1", "type": "reasoning", "encrypted_content": ENCRYPTED,
           "summary": [{"type": "summary_text", "text": "Need the weather."}]})
}

fn call_item() -> Value {
    json!({"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "call_a",
           "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"})
}

fn answer_item() -> Value {
    json!({"id": "msg_2", "type": "message", "role": "assistant", "status": "completed",
           "content": [{"type": "output_text", "text": ANSWER, "annotations": []}]})
}

fn response(output: Vec<Value>, usage: Value) -> Value {
    json!({"id": "resp_1", "object": "response", "status": "completed", "model": "gpt-5-2025-08-07",
           "error": null, "incomplete_details": null, "output": output, "usage": usage})
}

/// The SSE body OpenAI streams for `output` (an `event:` line before each `data:`).
fn stream(output: &[Value], usage: Value) -> String {
    let mut events = vec![json!({"type": "response.created", "response": {
        "id": "resp_1", "status": "in_progress", "model": "gpt-5-2025-08-07", "output": [], "usage": null}})];
    for (i, item) in output.iter().enumerate() {
        let mut added = item.clone();
        match item["type"].as_str() {
            Some("reasoning") => added["summary"] = json!([]),
            Some("function_call") => added["arguments"] = json!(""),
            Some("message") => added["content"] = json!([]),
            _ => {}
        }
        added.as_object_mut().unwrap().remove("encrypted_content");
        events.push(json!({"type": "response.output_item.added", "output_index": i, "item": added}));
        let id = item["id"].clone();
        match item["type"].as_str() {
            Some("reasoning") => {
                let text = item["summary"][0]["text"].as_str().unwrap();
                let (a, b) = text.split_at(5);
                for d in [a, b] {
                    events.push(json!({"type": "response.reasoning_summary_text.delta", "item_id": id,
                        "output_index": i, "summary_index": 0, "delta": d}));
                }
            }
            Some("function_call") => {
                let args = item["arguments"].as_str().unwrap();
                let (a, b) = args.split_at(4);
                for d in [a, b] {
                    events.push(json!({"type": "response.function_call_arguments.delta", "item_id": id,
                        "output_index": i, "delta": d}));
                }
                events.push(json!({"type": "response.function_call_arguments.done", "item_id": id,
                    "output_index": i, "arguments": args}));
            }
            Some("message") => {
                let text = item["content"][0]["text"].as_str().unwrap();
                for d in text.split_inclusive(' ') {
                    events.push(json!({"type": "response.output_text.delta", "item_id": id, "output_index": i,
                        "content_index": 0, "delta": d, "logprobs": []}));
                }
            }
            _ => {}
        }
        events.push(json!({"type": "response.output_item.done", "output_index": i, "item": item}));
    }
    let done = response(output.to_vec(), usage);
    events.push(json!({"type": "response.completed", "response": done}));
    events
        .iter()
        .enumerate()
        .map(|(n, e)| {
            let mut e = e.clone();
            e["sequence_number"] = json!(n);
            format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap())
        })
        .collect()
}

/// Turn 1 as the app sees it, and what the provider was sent.
fn check_turn_one(r: &Value, sent: &crate::mock_provider::Seen) {
    assert_eq!(r["finish_reason"], "tool_calls", "{r}");
    assert_eq!(r["provider"], "oai");
    assert_eq!(r["tool_calls"], json!([{"id": "call_a", "name": "get_weather", "arguments": {"city": "Paris"}}]));
    assert_eq!(r["reasoning"], "Need the weather.");
    assert_eq!(r["content"], "");
    assert_eq!(
        r["message"]["content"],
        json!([
            {"type": "thinking", "text": "Need the weather.", "signature": format!("rs_1:{ENCRYPTED}")},
            {"type": "tool_call", "id": "call_a", "name": "get_weather", "arguments": {"city": "Paris"}}
        ])
    );
    assert_eq!(r["usage"]["input"], 90);
    assert_eq!(r["usage"]["cached"], 10);
    assert_eq!(r["usage"]["output"], 40);
    assert_eq!(r["usage"]["reasoning"], 25);
    assert_eq!(r["usage"]["estimated"], false);

    assert_eq!(sent.path, "/v1/responses");
    assert_eq!(sent.authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));
    let b = &sent.body;
    assert_eq!(b["model"], "gpt-5");
    assert_eq!(b["instructions"], "Be brief.");
    assert_eq!(
        b["input"],
        json!([{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]}])
    );
    assert_eq!(b["tools"][0]["type"], "function");
    assert_eq!(b["tools"][0]["name"], "get_weather");
    assert_eq!(b["tools"][0]["strict"], false);
    assert_eq!(b["tools"][0]["parameters"]["required"], json!(["city"]));
    assert_eq!(b["reasoning"], json!({"effort": "low", "summary": "auto"}));
    assert_eq!(b["store"], false);
    assert_eq!(b["include"], json!(["reasoning.encrypted_content"]));
    assert_eq!(b["max_output_tokens"], 400);
    assert!(b.get("messages").is_none() && b.get("max_tokens").is_none() && b.get("stop").is_none());
}

/// Turn 2's request: the reasoning item, the call and its output follow the user message.
fn check_turn_two_request(sent: &crate::mock_provider::Seen) {
    assert_eq!(sent.path, "/v1/responses");
    assert_eq!(
        sent.body["input"],
        json!([
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
            {"type": "reasoning", "id": "rs_1", "encrypted_content": ENCRYPTED,
             "summary": [{"type": "summary_text", "text": "Need the weather."}]},
            {"type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_a", "output": "22 C"}
        ])
    );
    assert_eq!(sent.body["store"], false);
}

fn second_turn(r: &Value) -> Value {
    json!([user(), r["message"], {"role": "tool", "tool_call_id": "call_a", "content": "22 C"}])
}

#[tokio::test]
async fn tool_loop_hands_reasoning_back() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, &extra(&mock)));
    let c = d.client().await;
    mock.push([
        Fault::Json(response(vec![reasoning_item(), call_item()], usage(90, 10, 40, 25))),
        Fault::Json(response(vec![answer_item()], usage(130, 90, 9, 0))),
    ]);
    let r = chat(&c, params(json!([user()]))).await.unwrap();
    check_turn_one(&r, &mock.seen()[0]);
    assert_eq!(mock.seen()[0].body["stream"], false);

    let r = chat(&c, params(second_turn(&r))).await.unwrap();
    check_turn_two_request(&mock.seen()[1]);
    assert_eq!(r["content"], ANSWER);
    assert_eq!(r["finish_reason"], "stop");
    assert_eq!(r["tool_calls"], json!([]));
    assert_eq!(r["usage"]["input"], 130);
    assert_eq!(r["usage"]["cached"], 90);
    assert_eq!(mock.requests(), 2);
}

#[tokio::test]
async fn streamed_tool_loop_hands_reasoning_back() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, &extra(&mock)));
    mock.push([
        Fault::Stream(stream(&[reasoning_item(), call_item()], usage(90, 10, 40, 25))),
        Fault::Stream(stream(&[answer_item()], usage(130, 90, 9, 0))),
    ]);
    let (r, chunks) = chat_stream(&d, params(json!([user()]))).await;
    let r = r.unwrap();
    check_turn_one(&r, &mock.seen()[0]);
    assert_eq!(mock.seen()[0].body["stream"], true);
    let reasoning: String = chunks.iter().filter_map(|c| c["reasoning_delta"].as_str()).collect();
    assert_eq!(reasoning, "Need the weather.");
    let calls: Vec<&Value> = chunks.iter().filter_map(|c| c.get("tool_call")).collect();
    assert_eq!(calls[0]["index"], 0);
    assert_eq!(calls[0]["id"], "call_a");
    assert_eq!(calls[0]["name"], "get_weather");
    let args: String = calls.iter().map(|c| c["arguments_delta"].as_str().unwrap()).collect();
    assert_eq!(args, "{\"city\":\"Paris\"}");
    assert!(calls.iter().all(|c| c["index"] == 0));

    let (r, chunks) = chat_stream(&d, params(second_turn(&r))).await;
    let r = r.unwrap();
    check_turn_two_request(&mock.seen()[1]);
    assert_eq!(r["content"], ANSWER);
    assert_eq!(r["finish_reason"], "stop");
    let text: String = chunks.iter().filter_map(|c| c["delta"].as_str()).collect();
    assert_eq!(text, ANSWER);
    assert_eq!(r["usage"]["output"], 9);
}

#[tokio::test]
async fn recorded_reasoning_stream_and_refused_stop() {
    let mock = Mock::start().await;
    let d = start(&config(&mock, &extra(&mock)));
    let c = d.client().await;
    mock.push([Fault::Fixture("openai_responses_stream_reasoning.sse")]);
    let ask = json!({"model": "oai/gpt-5", "messages": [{"role": "user", "content": "primes?"}],
                     "reasoning": {"effort": "medium"}});
    let (r, chunks) = chat_stream(&d, ask.clone()).await;
    let r = r.unwrap();
    assert_eq!(r["content"], "3");
    assert_eq!(r["finish_reason"], "stop");
    assert_eq!(r["model"], "gpt-5-2025-08-07");
    assert_eq!((r["usage"]["input"].as_u64(), r["usage"]["output"].as_u64()), (Some(32), Some(647)));
    assert_eq!(r["usage"]["reasoning"], 640);
    assert_eq!(r["usage"]["estimated"], false);
    assert_eq!(chunks.iter().filter_map(|c| c["delta"].as_str()).collect::<String>(), "3");

    // `stop` has no Responses API field: refused by name, nothing sent.
    let mut with_stop = ask;
    with_stop["stop"] = json!(["\n"]);
    let e = chat(&c, with_stop).await.unwrap_err();
    let data = serde_json::to_value(&e.data).unwrap();
    assert_eq!(data["feature"], "stop", "{e:?}");
    assert_eq!(mock.requests(), 1);
}
