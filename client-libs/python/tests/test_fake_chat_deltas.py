"""Typed chat stream deltas (text, reasoning, tool-call) and the new chat params, against the
fake server (conftest.FakeServer, `metadata.raw_chunks`)."""

import asyncio

from llm_sidecar import (
    AsyncChatStream,
    AsyncClient,
    ChatStream,
    Client,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    chat_delta,
)

from conftest import wait_until

MESSAGES = [{"role": "user", "content": "weather in Paris?"}]
RAW = [
    {"reasoning_delta": "The user wants "},
    {"reasoning_delta": "the weather."},
    {"delta": "Let me check."},
    {"tool_call": {"index": 0, "id": "call_1", "name": "get_weather", "arguments_delta": '{"city":'}},
    {"tool_call": {"index": 0, "arguments_delta": ' "Paris"}'}},
    {"tool_call": {"index": 1, "id": "call_2", "name": "get_time", "arguments_delta": "{}"}},
    {"delta": " Done."},
    {"future_kind": 1},  # a kind this library does not know: left out
]
RESULT = {
    "content": "Let me check. Done.",
    "message": {
        "role": "assistant",
        "content": [
            {"type": "thinking", "text": "The user wants the weather."},
            {"type": "text", "text": "Let me check. Done."},
            {"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}},
            {"type": "tool_call", "id": "call_2", "name": "get_time", "arguments": {}},
        ],
    },
    "tool_calls": [
        {"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}},
        {"id": "call_2", "name": "get_time", "arguments": {}},
    ],
    "reasoning": "The user wants the weather.",
    "finish_reason": "tool_calls",
}
EXPECTED = [
    ReasoningDelta("The user wants ", 0),
    ReasoningDelta("the weather.", 1),
    TextDelta("Let me check.", 2),
    ToolCallDelta(index=0, arguments_delta='{"city":', id="call_1", name="get_weather", seq=3),
    ToolCallDelta(index=0, arguments_delta=' "Paris"}', seq=4),
    ToolCallDelta(index=1, arguments_delta="{}", id="call_2", name="get_time", seq=5),
    TextDelta(" Done.", 6),
]
META = {"raw_chunks": RAW, "result": RESULT}


def test_deltas_are_typed_and_result_assembled(fake):
    with Client(fake.path) as c:
        stream = c.chat("fast", MESSAGES, stream=True, metadata=META)
        assert isinstance(stream, ChatStream)
        deltas = list(stream.deltas())
        assert deltas == EXPECTED
        assert [d.kind for d in deltas] == ["reasoning", "reasoning", "text", "tool_call", "tool_call", "tool_call", "text"]
        assert stream.result is not None
        assert stream.result["tool_calls"][0]["arguments"] == {"city": "Paris"}
        assert stream.result["finish_reason"] == "tool_calls"
        # Tool-call pieces join up by index.
        args = {}
        for d in deltas:
            if isinstance(d, ToolCallDelta):
                args[d.index] = args.get(d.index, "") + d.arguments_delta
        assert args == {0: '{"city": "Paris"}', 1: "{}"}


def test_plain_iteration_still_yields_only_text_chunks(fake):
    with Client(fake.path) as c:
        stream = c.chat("fast", MESSAGES, stream=True, metadata=META)
        chunks = list(stream)
        assert [ch["delta"] for ch in chunks] == ["Let me check.", " Done."]
        assert [ch["seq"] for ch in chunks] == [2, 6]
        assert stream.result is not None and stream.result["content"] == "Let me check. Done."


def test_generic_stream_yields_raw_chunks(fake):
    with Client(fake.path) as c:
        s = c.stream("chat", {"model": "x", "messages": [], "stream": True, "metadata": META})
        assert [ch for ch in s] == [{**b, "seq": i} for i, b in enumerate(RAW)]


def test_chat_delta_parses_each_kind():
    assert chat_delta({"delta": "a", "seq": 3}) == TextDelta("a", 3)
    assert chat_delta({"reasoning_delta": "r"}) == ReasoningDelta("r", None)
    assert chat_delta({"tool_call": {"index": 2, "arguments_delta": "{"}, "seq": 1}) == ToolCallDelta(2, "{", seq=1)
    assert chat_delta({"other": 1}) is None
    assert chat_delta(None) is None


def test_new_chat_params_are_sent(fake):
    tools = [{"name": "get_weather", "description": "Weather of a city", "parameters": {"type": "object"}}]
    with Client(fake.path) as c:
        c.chat(
            "fast",
            MESSAGES,
            tools=tuple(tools),
            tool_choice={"name": "get_weather"},
            parallel_tool_calls=False,
            response_format={"type": "json_object"},
            reasoning={"effort": "low"},
        )
    [req] = fake.messages("chat")
    assert req[3] == [
        {
            "model": "fast",
            "messages": MESSAGES,
            "tools": tools,
            "tool_choice": {"name": "get_weather"},
            "parallel_tool_calls": False,
            "response_format": {"type": "json_object"},
            "reasoning": {"effort": "low"},
        }
    ]


def test_async_deltas_and_text_iteration(fake):
    async def main() -> None:
        async with AsyncClient(fake.path) as c:
            stream = await c.chat("fast", MESSAGES, stream=True, metadata=META, tool_choice="auto")
            assert isinstance(stream, AsyncChatStream)
            assert [d async for d in stream.deltas()] == EXPECTED
            assert stream.result["tool_calls"][1]["name"] == "get_time"
            text = await c.chat("fast", MESSAGES, stream=True, metadata=META)
            assert [ch["delta"] async for ch in text] == ["Let me check.", " Done."]
            assert text.result["reasoning"] == "The user wants the weather."

    asyncio.run(asyncio.wait_for(main(), 30))
    assert fake.messages("chat")[0][3][0]["tool_choice"] == "auto"


def test_breaking_out_of_deltas_cancels(fake):
    with Client(fake.path) as c:
        stream = c.chat("fast", MESSAGES, stream=True, metadata={**META, "hold": True})
        for d in stream.deltas():
            assert d.kind == "reasoning"
            break
        wait_until(lambda: fake.cancelled_ids() == [stream.msgid], what="$/cancel after break")
