"""Not run: type-checked by `mypy --strict` in run-tests.sh, so the typings keep serving an app."""

from llm_sidecar import AsyncClient, ChatResult, Client, QuotaExceeded


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


async def async_example() -> None:
    async with AsyncClient(app="typed") as c:
        stream = await c.chat("fast", [{"role": "user", "content": "hi"}], stream=True)
        async for chunk in stream:
            delta: str = chunk["delta"]
        full: ChatResult = await c.chat("fast", [])
        pong: bool = (await c.ping(delay_ms=3))["pong"]
        print(delta, full, pong)
