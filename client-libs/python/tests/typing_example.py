"""Not run: type-checked by `mypy --strict` in run-tests.sh, so the typings keep serving an app."""

import json
from typing import List

from llm_sidecar import AsyncClient, ChatMessage, ChatResult, ChatTool, Client, QuotaExceeded


def sync_example() -> None:
    with Client(app="typed") as c:
        protocol: int = c.info()["protocol"]
        full: ChatResult = c.chat("fast", [{"role": "user", "content": "hi"}], max_tokens=5)
        stream = c.chat("fast", [{"role": "user", "content": "hi"}], stream=True)
        for chunk in stream:
            delta: str = chunk["delta"]
        usage = stream.result["usage"] if stream.result else None
        pong: bool = c.ping(delay_ms=5)["pong"]
        c.usage_summary(period="month", group_by="model", from_="2025-01-01")
        with c.subscribe(["quota.threshold"]) as sub:
            for event in sub:
                kind: str = event["kind"]
        try:
            c.quota_check("fast", estimated_tokens=100)
        except QuotaExceeded as e:
            end = e.data["period_end"]
        print(protocol, full, delta, usage, pong, kind, end)


def tools_example() -> None:
    tools: List[ChatTool] = [{"name": "get_weather", "parameters": {"type": "object"}}]
    messages: List[ChatMessage] = [
        {"role": "user", "content": [{"type": "text", "text": "Weather here?"}, {"type": "image", "url": "https://x/y.png"}]}
    ]
    with Client(app="typed") as c:
        while True:
            res = c.chat("fast", messages, tools=tools, tool_choice="auto", reasoning={"effort": "low"})
            messages.append(res["message"])
            if not res["tool_calls"]:
                break
            for call in res["tool_calls"]:
                city: str = call["arguments"]["city"]
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": json.dumps({"city": city})})
        stream = c.chat("fast", messages, stream=True, response_format={"type": "json_object"})
        for d in stream.deltas():
            if d.kind == "text":
                text: str = d.text
            elif d.kind == "tool_call":
                index: int = d.index
                piece: str = d.arguments_delta
        print(text, index, piece)


async def async_example() -> None:
    async with AsyncClient(app="typed") as c:
        stream = await c.chat("fast", [{"role": "user", "content": "hi"}], stream=True)
        async for chunk in stream:
            delta: str = chunk["delta"]
        async for d in (await c.chat("fast", [], stream=True)).deltas():
            if d.kind == "reasoning":
                thought: str = d.text
        full: ChatResult = await c.chat("fast", [])
        pong: bool = (await c.ping(delay_ms=3))["pong"]
        print(delta, thought, full, pong)
