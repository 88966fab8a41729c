"""Not run: type-checked by `mypy --strict` in run-tests.sh, so the typings keep serving an app."""

import json
from typing import List, Optional

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


def app_example() -> None:
    """An app that starts the daemon if needed, streams with time limits, and reports usage."""
    from llm_sidecar import (
        AccountStatus,
        Autostart,
        CallTimeout,
        ChatDelta,
        ChatUsage,
        QuotaLimit,
        QuotaStatus,
        RateLimited,
        StreamStatus,
        Timeout,
        ToolCallDelta,
        UsageRecord,
        UsageSummary,
    )

    limits = Timeout(total=60, chunk=10)
    with Client(app="typed-app", autostart=True, binary="/opt/llm-sidecar/bin/llm-sidecar", timeout=limits) as c:
        try:
            stream = c.chat("fast", [{"role": "user", "content": "hi"}], stream=True, timeout=Timeout(first_chunk=5, total=30))
        except RateLimited as e:
            wait_ms: int = e.data["retry_after_ms"]
            print(wait_ms)
            return
        except CallTimeout as e:
            limit: str = e.data["limit"]
            print(limit)
            return
        calls: List[ToolCallDelta] = []
        for d in stream.deltas():
            delta: ChatDelta = d
            if isinstance(d, ToolCallDelta):
                calls.append(d)
            if delta.kind == "text" and len(delta.text) > 100:
                break
        status: StreamStatus = stream.status
        if stream.result is not None:
            usage: ChatUsage = stream.result["usage"]
            tokens: int = usage["input"] + usage["output"]
            estimated: bool = usage["estimated"]
            cost: int = stream.result["cost_microusd"]
            print(status, tokens, estimated, cost, stream.result["content"])
        quota: QuotaStatus = c.quota_status()
        for lim in quota["limits"]:
            one: QuotaLimit = lim
            left: int = one["remaining"]
            print(one["metric"], left, quota["period_end"])
        summary: UsageSummary = c.usage_summary(group_by="app")
        total_cost: int = summary["totals"]["cost_microusd"]
        month: str = summary["projected_month_end"]["month"]
        first: str = summary["from"]
        rows = c.usage_records(limit=10)
        for rec in rows["records"]:
            r: UsageRecord = rec
            ttft: Optional[int] = r["ttft_ms"]
            print(r["status"], r["model"], ttft)
        cursor: Optional[str] = rows["next_cursor"]
        account: AccountStatus = c.account_status()
        tier: Optional[str] = account["tier"]
        print(total_cost, month, first, cursor, tier, len(calls))
    Client(autostart=Autostart(data_dir="/tmp/d", args=["--http", "127.0.0.1:0"], timeout=5.0))


async def async_app_example() -> None:
    from llm_sidecar import Timeout

    async with AsyncClient(app="typed", autostart=True, timeout=Timeout(first_chunk=5)) as c:
        stream = await c.chat("fast", [], stream=True)
        async with stream:
            async for chunk in stream:
                print(chunk["delta"])
                break
        if stream.result is not None:
            out: int = stream.result["usage"]["output"]
            print(out, stream.status)
        keys = await c.keys_list()
        for k in keys["keys"]:
            last4: Optional[str] = k["last4"]
            print(last4)
