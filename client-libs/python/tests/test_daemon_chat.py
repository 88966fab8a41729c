"""`chat` through the real daemon to a tiny OpenAI-compatible mock provider (http.server in a thread).

Covers what the fake RPC server cannot: the daemon's provider path, streaming relay, cancel
reaching the upstream connection, metering into `usage.records`, and `models.list`/`quota.status`.
"""

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List, Optional

import pytest

from llm_sidecar import AsyncClient, Cancelled, ChatMessage, Client, TextDelta, ToolCallDelta

from conftest import wait_until

MESSAGES = [{"role": "user", "content": "hi"}]
MODEL = "openai/gpt-4o-mini"
DELTAS = ["Hel", "lo", " the", "re"]
COMPLETION = {
    "id": "x",
    "object": "chat.completion",
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
}


TOOLS = [
    {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
TOOL_ARGS = '{"city": "Paris"}'
TOOL_COMPLETION = {
    "id": "t",
    "object": "chat.completion",
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": TOOL_ARGS}}
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28},
}
#: `delta.tool_calls` pieces of a streamed tool call: id and name first, then the arguments in parts.
TOOL_STREAM = [
    {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]},
    {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
    {"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]},
]


def wants_tool_call(body: Dict[str, Any]) -> bool:
    """A request with tools whose last message is not a tool result: the mock calls the tool."""
    msgs = body.get("messages") or []
    return bool(body.get("tools")) and bool(msgs) and msgs[-1].get("role") != "tool"


def chunk(choices: List[Dict[str, Any]], usage: Any = None) -> bytes:
    body: Dict[str, Any] = {"id": "x", "object": "chat.completion.chunk", "model": "gpt-4o-mini", "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class MockProvider:
    """POST /v1/chat/completions: JSON, or SSE when the body has `stream: true`.

    With `slow` set, a stream sends one chunk every 200 ms for ~10 s; `closed_early` is set when a
    write fails because the client (the daemon) closed the connection. `first_delay` (seconds)
    holds a stream back before its first chunk; `stall_after` (a count) makes a slow stream stop
    for `stall` seconds after that many chunks.
    """

    def __init__(self) -> None:
        self.slow = False
        self.first_delay = 0.0
        self.stall_after: Optional[int] = None
        self.stall = 0.0
        self.requests: List[Dict[str, Any]] = []
        self.auth: List[str] = []
        self.closed_early = threading.Event()
        mock = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                mock.requests.append(body)
                mock.auth.append(self.headers.get("Authorization") or "")
                if self.path != "/v1/chat/completions":
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if not body.get("stream"):
                    data = json.dumps(TOOL_COMPLETION if wants_tool_call(body) else COMPLETION).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    if wants_tool_call(body):
                        for d in TOOL_STREAM:
                            self.wfile.write(chunk([{"index": 0, "delta": d, "finish_reason": None}]))
                        self.wfile.write(chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]))
                    elif mock.slow:
                        time.sleep(mock.first_delay)
                        for i in range(50):
                            if i == mock.stall_after:
                                time.sleep(mock.stall)
                            self.wfile.write(chunk([{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}]))
                            self.wfile.flush()
                            time.sleep(0.2)
                    else:
                        for d in DELTAS:
                            self.wfile.write(chunk([{"index": 0, "delta": {"content": d}, "finish_reason": None}]))
                        self.wfile.write(chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
                    self.wfile.write(chunk([], {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}))
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except OSError:
                    mock.closed_early.set()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mock() -> Iterator[MockProvider]:
    m = MockProvider()
    try:
        yield m
    finally:
        m.close()


@pytest.fixture
def chat_daemon(make_daemon, mock, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'[providers.openai]\nbase_url = "http://127.0.0.1:{mock.port}/v1"\nkey_env = "MOCK_KEY"\n')
    return make_daemon(env={"MOCK_KEY": "sk-test-client-lib"}, args=["--config", str(config)]).start()


def test_chat_non_streaming(chat_daemon, mock):
    with Client(chat_daemon.sock, app="chat-test") as c:
        res = c.chat(MODEL, MESSAGES)
        assert res["content"] == "Hello there", chat_daemon.logs()
        assert res["usage"]["input"] == 5 and res["usage"]["output"] == 2
    assert mock.requests[0]["messages"] == MESSAGES
    assert mock.auth[0] == "Bearer sk-test-client-lib"


def test_chat_streaming_yields_deltas_then_result(chat_daemon, mock):
    with Client(chat_daemon.sock) as c:
        stream = c.chat(MODEL, MESSAGES, stream=True)
        deltas = [ch["delta"] for ch in stream]
        assert "".join(deltas) == "Hello there"
        assert [d for d in deltas if d] == DELTAS
        assert stream.result is not None
        assert stream.result["content"] == "Hello there"
        assert stream.result["usage"]["input"] == 5 and stream.result["usage"]["output"] == 2
    assert mock.requests[0]["stream"] is True


def test_cancel_slow_stream_closes_upstream(chat_daemon, mock):
    mock.slow = True
    with Client(chat_daemon.sock) as c:
        stream = c.chat(MODEL, MESSAGES, stream=True)
        it = iter(stream)
        started = time.monotonic()
        assert next(it)["delta"].startswith("w0")
        next(it)
        stream.cancel()
        with pytest.raises(Cancelled) as err:
            for _ in it:
                pass
        assert time.monotonic() - started < 8
        assert "usage" in err.value.data
        # The cancelled call's partial answer, with the usage billed, is the stream's result.
        assert stream.status == "cancelled"
        assert stream.result is not None and stream.result["usage"] == err.value.data["usage"]
        assert stream.result["content"] == err.value.data["content"]
    wait_until(mock.closed_early.is_set, timeout=5, what="the mock to see the connection closed")


def test_models_usage_quota_after_chats(chat_daemon, mock):
    with Client(chat_daemon.sock, app="meter-app") as c:
        models = c.models_list()
        assert isinstance(models, dict) and models
        assert "openai" in json.dumps(models)
        c.chat(MODEL, MESSAGES)
        list(c.chat(MODEL, MESSAGES, stream=True))
        recs = c.usage_records()
        rows = recs["records"]
        assert len(rows) >= 2, recs
        assert all(r["provider"] == "openai" for r in rows)
        assert all(r["input_tokens"] == 5 and r["output_tokens"] == 2 for r in rows), rows
        quota = c.quota_status()
        assert isinstance(quota, dict)


def test_async_client_chat(chat_daemon, mock):
    async def main() -> None:
        async with AsyncClient(chat_daemon.sock) as c:
            res = await c.chat(MODEL, MESSAGES)
            assert res["content"] == "Hello there"
            stream = await c.chat(MODEL, MESSAGES, stream=True)
            deltas = [ch["delta"] async for ch in stream]
            assert "".join(deltas) == "Hello there"
            assert stream.result["usage"]["output"] == 2

    asyncio.run(asyncio.wait_for(main(), 30))


def check_second_request(body: Dict[str, Any]) -> None:
    """The request after the tool ran: the assistant's tool call, then the tool's answer."""
    msgs = body["messages"]
    assert msgs[0] == {"role": "user", "content": "weather in Paris?"}
    assistant, tool = msgs[1], msgs[2]
    assert assistant["role"] == "assistant"
    [call] = assistant["tool_calls"]
    assert call["id"] == "call_1" and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert tool == {"role": "tool", "tool_call_id": "call_1", "content": "22 C, sunny"}
    assert body["tools"][0]["function"]["name"] == "get_weather"


def test_tool_call_round_trip(chat_daemon, mock):
    messages: List[ChatMessage] = [{"role": "user", "content": "weather in Paris?"}]
    with Client(chat_daemon.sock, app="tools-test") as c:
        res = c.chat(MODEL, messages, tools=TOOLS, tool_choice="auto")
        assert res["finish_reason"] == "tool_calls", chat_daemon.logs()
        [call] = res["tool_calls"]
        assert call["id"] == "call_1" and call["name"] == "get_weather"
        assert call["arguments"] == {"city": "Paris"}
        assert "arguments_raw" not in call
        assert res["message"]["role"] == "assistant"
        messages.append(res["message"])
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": "22 C, sunny"})
        final = c.chat(MODEL, messages, tools=TOOLS)
        assert final["content"] == "Hello there"
        assert final["tool_calls"] == []
    assert len(mock.requests) == 2
    first = mock.requests[0]
    assert first["tools"] == [{"type": "function", "function": TOOLS[0]}]
    assert first["tool_choice"] == "auto"
    check_second_request(mock.requests[1])


def test_streamed_tool_call_round_trip(chat_daemon, mock):
    messages: List[ChatMessage] = [{"role": "user", "content": "weather in Paris?"}]
    with Client(chat_daemon.sock) as c:
        stream = c.chat(MODEL, messages, tools=TOOLS, stream=True)
        deltas = list(stream.deltas())
        calls = [d for d in deltas if isinstance(d, ToolCallDelta)]
        assert calls and all(d.index == 0 for d in calls), deltas
        assert calls[0].id == "call_1" and calls[0].name == "get_weather"
        assert json.loads("".join(d.arguments_delta for d in calls)) == {"city": "Paris"}
        assert not [d for d in deltas if isinstance(d, TextDelta)]
        res = stream.result
        assert res is not None
        assert res["finish_reason"] == "tool_calls"
        assert res["tool_calls"] == [{"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}]
        messages.append(res["message"])
        messages.append({"role": "tool", "tool_call_id": "call_1", "content": "22 C, sunny"})
        # The follow-up streams text; plain iteration still yields just the text chunks.
        follow = c.chat(MODEL, messages, tools=TOOLS, stream=True)
        assert "".join(ch["delta"] for ch in follow) == "Hello there"
        assert follow.result is not None and follow.result["tool_calls"] == []
    assert mock.requests[0]["stream"] is True
    check_second_request(mock.requests[1])


def test_async_tool_call_round_trip(chat_daemon, mock):
    async def main() -> None:
        async with AsyncClient(chat_daemon.sock) as c:
            messages: List[ChatMessage] = [{"role": "user", "content": "weather in Paris?"}]
            res = await c.chat(MODEL, messages, tools=TOOLS)
            messages += [res["message"], {"role": "tool", "tool_call_id": res["tool_calls"][0]["id"], "content": "22 C, sunny"}]
            assert (await c.chat(MODEL, messages, tools=TOOLS))["content"] == "Hello there"

    asyncio.run(asyncio.wait_for(main(), 30))
    check_second_request(mock.requests[1])
