"""The official OpenAI and Anthropic Python SDKs against the daemon's HTTP face.

Run by tests/http.rs (`official_sdks_*`), which starts the daemon and the mock provider, queues
the mock's answers, and checks what this prints against the ledger and what the mock was sent.
Usage: sdk.py CASE...  with BASE (http://127.0.0.1:PORT) and TOKEN in the environment. Each case
asserts what the SDK itself must do (its types, its exception classes) and prints one JSON line
{"case": ..., ...} with what the Rust side checks.
"""
import json
import os
import sys

import anthropic
import openai

BASE = os.environ["BASE"]
TOKEN = os.environ["TOKEN"]
OPENAI_MODEL = "openai/gpt-4o-mini"
CLAUDE = "anthropic/claude-haiku-4-5"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


def oa(key=TOKEN):
    return openai.OpenAI(base_url=BASE + "/v1", api_key=key, max_retries=0)


def an(key=TOKEN):
    return anthropic.Anthropic(base_url=BASE, api_key=key, max_retries=0)


def oa_usage(u):
    return {"input": u.prompt_tokens, "output": u.completion_tokens}


def an_usage(u):
    return {
        "input": u.input_tokens + (u.cache_read_input_tokens or 0) + (u.cache_creation_input_tokens or 0),
        "output": u.output_tokens,
    }


def hello():
    return [{"role": "user", "content": "Say hello"}]


def openai_chat():
    r = oa().chat.completions.create(model=OPENAI_MODEL, messages=hello())
    assert isinstance(r, openai.types.chat.ChatCompletion)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    return {"content": r.choices[0].message.content, "finish": r.choices[0].finish_reason, "usage": oa_usage(r.usage)}


def openai_stream():
    chunks = list(oa().chat.completions.create(
        model=OPENAI_MODEL, messages=hello(), stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    return {"content": text, "chunks": len(chunks), "usage": oa_usage(chunks[-1].usage)}


def openai_tools(model=OPENAI_MODEL):
    c = oa()
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
    messages = [{"role": "user", "content": "Weather in Paris and Rome?"}]
    first = c.chat.completions.create(model=model, messages=messages, tools=tools, tool_choice="auto")
    msg = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls", first
    calls = [(t.id, t.function.name, json.loads(t.function.arguments)) for t in msg.tool_calls]
    messages.append(msg.model_dump(exclude_none=True))
    for (call_id, _, args) in calls:
        messages.append({"role": "tool", "tool_call_id": call_id, "content": f"{args['city']}: 22 C"})
    second = c.chat.completions.create(model=model, messages=messages, tools=tools)
    return {"calls": calls, "content": second.choices[0].message.content,
            "usage": [oa_usage(first.usage), oa_usage(second.usage)]}


def openai_image():
    r = oa().chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG, "detail": "low"}},
    ]}])
    return {"content": r.choices[0].message.content, "usage": oa_usage(r.usage)}


def openai_json_schema():
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
              "required": ["city", "temp"], "additionalProperties": False}
    r = oa().chat.completions.create(model=OPENAI_MODEL, messages=hello(), response_format={
        "type": "json_schema", "json_schema": {"name": "weather", "schema": schema, "strict": True}})
    return {"parsed": json.loads(r.choices[0].message.content), "usage": oa_usage(r.usage)}


def openai_to_anthropic():
    r = oa().chat.completions.create(model=CLAUDE, max_tokens=50, messages=[
        {"role": "system", "content": "be brief"}, *hello()])
    return {"content": r.choices[0].message.content, "usage": oa_usage(r.usage)}


def anthropic_message():
    m = an().messages.create(model=CLAUDE, max_tokens=64, messages=hello())
    assert isinstance(m, anthropic.types.Message) and m.id.startswith("msg_")
    return {"content": m.content[0].text, "stop": m.stop_reason, "usage": an_usage(m.usage)}


def anthropic_stream(model=CLAUDE):
    with an().messages.stream(model=model, max_tokens=64, messages=hello()) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert final.content[0].text == text
    return {"content": text, "stop": final.stop_reason, "usage": an_usage(final.usage)}


def anthropic_to_openai():
    return anthropic_stream(OPENAI_MODEL)


def anthropic_tools():
    c = an()
    tools = [{"name": "get_weather", "description": "Weather of a city", "input_schema": WEATHER}]
    messages = [{"role": "user", "content": "Weather in Paris and Rome?"}]
    first = c.messages.create(model=CLAUDE, max_tokens=1024, messages=messages, tools=tools,
                              thinking={"type": "enabled", "budget_tokens": 1024})
    assert first.stop_reason == "tool_use", first
    uses = [b for b in first.content if b.type == "tool_use"]
    messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]})
    messages.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": u.id, "content": f"{u.input['city']}: 22 C"} for u in uses]})
    second = c.messages.create(model=CLAUDE, max_tokens=1024, messages=messages, tools=tools)
    return {"calls": [(u.id, u.name, u.input) for u in uses],
            "thinking": [b.thinking for b in first.content if b.type == "thinking"],
            "content": second.content[0].text, "usage": [an_usage(first.usage), an_usage(second.usage)]}


def anthropic_count():
    r = an().messages.count_tokens(model=CLAUDE, messages=hello())
    return {"input_tokens": r.input_tokens}


def raises(kind, fn):
    try:
        fn()
    except kind as e:
        body = e.body if isinstance(e.body, dict) else {}
        inner = body.get("error", body)
        return {"status": e.status_code, "type": inner.get("type"), "code": inner.get("code"),
                "message": inner.get("message") or str(e), "ours": inner.get("llm_sidecar"),
                "retry_after": e.response.headers.get("retry-after")}
    raise AssertionError(f"expected {kind.__name__}")


def oa_call(model=OPENAI_MODEL, key=TOKEN, **kw):
    return lambda: oa(key).chat.completions.create(model=model, messages=hello(), **kw)


def an_call(model=CLAUDE, key=TOKEN):
    return lambda: an(key).messages.create(model=model, max_tokens=10, messages=hello())


def openai_auth():
    return raises(openai.AuthenticationError, oa_call(key="lsk_wrong"))


def anthropic_auth():
    return raises(anthropic.AuthenticationError, an_call(key="lsk_wrong"))


def openai_tier():
    return raises(openai.PermissionDeniedError, oa_call(model=CLAUDE))


def anthropic_tier():
    return raises(anthropic.PermissionDeniedError, an_call())


def openai_bad():
    return raises(openai.BadRequestError, oa_call(temperature=5))


def anthropic_bad():
    return raises(anthropic.BadRequestError, lambda: an().messages.create(
        model=OPENAI_MODEL, max_tokens=10, messages=[{"role": "wizard", "content": "x"}]))


def openai_502():
    return raises(openai.InternalServerError, oa_call())


def openai_rate():
    """Calls until the daemon's rate limit answers."""
    def until_limited():
        for _ in range(10):
            oa_call()()
    return raises(openai.RateLimitError, until_limited)


def anthropic_rate():
    return raises(anthropic.RateLimitError, an_call(model=OPENAI_MODEL))


def openai_quota():
    oa_call()()
    return raises(openai.RateLimitError, oa_call())


def anthropic_quota():
    return raises(anthropic.RateLimitError, an_call(model=OPENAI_MODEL))


def main():
    for case in sys.argv[1:]:
        out = globals()[case]()
        out["case"] = case
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
