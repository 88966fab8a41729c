"""Issue 17's stream behaviour through the real daemon and a mock OpenAI-compatible provider:

- time limits apply to streams (total, first chunk, between chunks), raise `CallTimeout` at the
  limit (±20 %) and cancel the call on the daemon, which closes the upstream request;
- a refusal before the first chunk (invalid_params, tier_required, quota_exceeded,
  rate_limited) raises from `chat(stream=True)` itself;
- after `break` / `close()` the stream's `.result` holds the cancelled call's billed usage,
  the same the daemon recorded in `usage.records` with status `cancelled`.
"""

import asyncio
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from llm_sidecar import (
    AsyncClient,
    CallTimeout,
    Client,
    InvalidParams,
    QuotaExceeded,
    RateLimited,
    TierRequired,
    Timeout,
)

from conftest import Daemon, wait_until
from test_daemon_chat import MESSAGES, MODEL, MockProvider

PROVIDER = '[providers.openai]\nbase_url = "http://127.0.0.1:{port}/v1"\nkey_env = "MOCK_KEY"\n'


@pytest.fixture
def mock() -> Iterator[MockProvider]:
    m = MockProvider()
    m.slow = True
    try:
        yield m
    finally:
        m.close()


@pytest.fixture
def start_daemon(make_daemon: Callable[..., Daemon], mock: MockProvider, tmp_path: Path) -> Callable[[str], Daemon]:
    """A daemon whose `openai` provider is the mock, plus `extra` config."""

    def start(extra: str = "") -> Daemon:
        config = tmp_path / "config.toml"
        config.write_text(PROVIDER.format(port=mock.port) + extra)
        return make_daemon(env={"MOCK_KEY": "sk-test-streams"}, args=["--config", str(config)]).start()

    return start


def within(elapsed: float, limit: float) -> bool:
    return 0.8 * limit <= elapsed <= 1.2 * limit


def cancelled_record(c: Client) -> Any:
    rows = [r for r in c.usage_records()["records"] if r["status"] == "cancelled"]
    return rows[0] if rows else None


# ---- 1. time limits apply to streams -------------------------------------------------------


def test_total_timeout_of_a_stream_fires_at_the_deadline_and_cancels(start_daemon, mock):
    d = start_daemon()
    with Client(d.sock) as c:
        t0 = time.monotonic()
        stream = c.chat(MODEL, MESSAGES, stream=True, timeout=1.0)
        seen = []
        with pytest.raises(CallTimeout) as err:
            for ch in stream:
                seen.append(ch["delta"])
        elapsed = time.monotonic() - t0
        assert within(elapsed, 1.0), elapsed
        assert isinstance(err.value, TimeoutError)
        assert err.value.data["limit"] == "total" and err.value.data["seconds"] == 1.0
        assert 2 <= len(seen) < 10, seen  # chunks did come, every 200 ms; the deadline still held
        # The daemon got $/cancel: it dropped the upstream request and billed the call as cancelled.
        wait_until(mock.closed_early.is_set, timeout=5, what="the upstream request to be closed")
        wait_until(lambda: stream.result is not None, timeout=5, what="the cancelled answer")
        assert stream.status == "cancelled"
        assert stream.error is err.value
        wait_until(lambda: cancelled_record(c) is not None, timeout=5, what="the cancelled usage record")
        rec = cancelled_record(c)
        assert stream.result is not None
        assert rec["input_tokens"] == stream.result["usage"]["input"]
        assert rec["output_tokens"] == stream.result["usage"]["output"]


def test_client_default_timeout_applies_to_streams(start_daemon, mock):
    d = start_daemon()
    with Client(d.sock, timeout=0.8) as c:
        t0 = time.monotonic()
        stream = c.chat(MODEL, MESSAGES, stream=True)
        with pytest.raises(CallTimeout):
            stream.wait()
        assert within(time.monotonic() - t0, 0.8)
        wait_until(mock.closed_early.is_set, timeout=5, what="the upstream request to be closed")
        # A call's own timeout replaces the client's.
        mock.slow = False
        res = c.chat(MODEL, MESSAGES, stream=True, timeout=Timeout(total=20))
        assert "".join(ch["delta"] for ch in res) == "Hello there"


def test_first_chunk_timeout_raises_from_chat_itself(start_daemon, mock):
    mock.first_delay = 5.0
    d = start_daemon()
    with Client(d.sock) as c:
        t0 = time.monotonic()
        with pytest.raises(CallTimeout) as err:
            c.chat(MODEL, MESSAGES, stream=True, timeout=Timeout(first_chunk=0.7, total=30))
        assert within(time.monotonic() - t0, 0.7)
        assert err.value.data["limit"] == "first_chunk"
        wait_until(mock.closed_early.is_set, timeout=8, what="the upstream request to be closed")


def test_between_chunks_timeout(start_daemon, mock):
    mock.stall_after, mock.stall = 2, 5.0
    d = start_daemon()
    with Client(d.sock) as c:
        stream = c.chat(MODEL, MESSAGES, stream=True, timeout=Timeout(chunk=0.8))
        it = iter(stream)
        assert next(it)["delta"] == "w0 "
        assert next(it)["delta"] == "w1 "
        t0 = time.monotonic()
        with pytest.raises(CallTimeout) as err:
            next(it)
        # The stall starts 200 ms after w1 arrived (the mock's pace), so the wait is ~0.8 s.
        assert within(time.monotonic() - t0, 0.8)
        assert err.value.data["limit"] == "chunk"
        wait_until(lambda: stream.status == "cancelled", timeout=5, what="the cancelled answer")
        assert stream.result is not None and stream.result["content"] == "w0 w1 "


def test_async_stream_timeouts(start_daemon, mock):
    d = start_daemon()

    async def main() -> None:
        async with AsyncClient(d.sock, timeout=Timeout(total=1.0)) as c:
            t0 = time.monotonic()
            stream = await c.chat(MODEL, MESSAGES, stream=True)
            with pytest.raises(CallTimeout) as err:
                async for _ in stream:
                    pass
            assert within(time.monotonic() - t0, 1.0)
            assert err.value.data["limit"] == "total"
            for _ in range(500):
                if stream.result is not None:
                    break
                await asyncio.sleep(0.01)
            assert stream.status == "cancelled" and stream.result is not None
            assert stream.result["usage"]["input"] == 5 or stream.result["usage"]["estimated"]
            mock.first_delay = 5.0
            t0 = time.monotonic()
            with pytest.raises(CallTimeout) as err:
                await c.chat(MODEL, MESSAGES, stream=True, timeout=Timeout(first_chunk=0.6))
            assert within(time.monotonic() - t0, 0.6)
            assert err.value.data["limit"] == "first_chunk"
            # Plain calls get the total limit too.
            t0 = time.monotonic()
            with pytest.raises(CallTimeout):
                await c.ping(delay_ms=30_000)
            assert within(time.monotonic() - t0, 1.0)
            assert (await c.call("daemon.ping", {}, timeout=10))["pong"] is True

    asyncio.run(asyncio.wait_for(main(), 60))


# ---- 2. refusals raise at call time ----------------------------------------------------------

TIERS = """
[policy]
default_tier = "free"

[tiers.free]
deny_models = ["*gpt-4o-mini*"]
monthly_tokens = 2000
"""


def test_refusals_before_the_first_chunk_raise_from_chat(start_daemon, mock):
    d = start_daemon(TIERS)
    mock.slow = False
    with Client(d.sock) as c:
        with pytest.raises(InvalidParams) as e1:
            c.chat("no-such-route", MESSAGES, stream=True)
        assert e1.value.data["model"] == "no-such-route"
        with pytest.raises(TierRequired) as e2:
            c.chat(MODEL, MESSAGES, stream=True)
        assert e2.value.data["model"] == "gpt-4o-mini"
        with pytest.raises(QuotaExceeded) as e3:
            c.chat("openai/gpt-4.1-nano", MESSAGES, stream=True, max_tokens=5000)
        assert e3.value.data["limit"] == 2000 and e3.value.data["metric"] == "tokens"
        ok = c.chat("openai/gpt-4.1-nano", MESSAGES, stream=True, max_tokens=20)
        assert "".join(ch["delta"] for ch in ok) == "Hello there"
    # Only the admitted call reached the provider.
    assert len(mock.requests) == 1


def test_rate_limit_raises_from_chat(start_daemon, mock):
    mock.slow = False
    d = start_daemon('[policy]\ndefault_tier = "free"\n[tiers.free]\nrequests_per_minute = 1\n')
    with Client(d.sock) as c:
        assert "".join(ch["delta"] for ch in c.chat(MODEL, MESSAGES, stream=True)) == "Hello there"
        with pytest.raises(RateLimited) as err:
            c.chat(MODEL, MESSAGES, stream=True)
        assert err.value.data["retry_after_ms"] > 0
    assert len(mock.requests) == 1


def test_async_refusal_raises_from_chat(start_daemon, mock):
    d = start_daemon(TIERS)

    async def main() -> None:
        async with AsyncClient(d.sock) as c:
            with pytest.raises(TierRequired):
                await c.chat(MODEL, MESSAGES, stream=True)

    asyncio.run(asyncio.wait_for(main(), 30))
    assert mock.requests == []


# ---- 3. the result after break ---------------------------------------------------------------


def test_result_after_break_holds_the_billed_usage(start_daemon, mock):
    d = start_daemon()
    with Client(d.sock) as c:
        stream = c.chat(MODEL, MESSAGES, stream=True)
        got = ""
        for ch in stream:
            got += ch["delta"]
            if len(got) >= 6:
                break
        # At once after the loop: $/cancel was sent and its answer awaited.
        assert stream.status == "cancelled"
        res = stream.result
        assert res is not None
        assert res["content"].startswith(got)
        assert res["provider"] == "openai" and res["model"] == "gpt-4o-mini"
        assert res["attempts"][-1]["outcome"] == "cancelled"
        wait_until(lambda: cancelled_record(c) is not None, timeout=5, what="the cancelled usage record")
        rec = cancelled_record(c)
        assert (rec["input_tokens"], rec["output_tokens"]) == (res["usage"]["input"], res["usage"]["output"])
        assert rec["cost_microusd"] == res["cost_microusd"]
    wait_until(mock.closed_early.is_set, timeout=5, what="the upstream request to be closed")


def test_result_after_close_and_async_break(start_daemon, mock):
    d = start_daemon()
    with Client(d.sock) as c:
        with c.chat(MODEL, MESSAGES, stream=True) as stream:
            next(iter(stream.deltas()))
        assert stream.status == "cancelled" and stream.result is not None
        assert stream.result["usage"]["input"] >= 0

    async def main() -> None:
        async with AsyncClient(d.sock) as ac:
            s = await ac.chat(MODEL, MESSAGES, stream=True)
            async with s:
                async for _ in s:
                    break
            assert s.status == "cancelled" and s.result is not None
            assert s.result["content"].startswith("w0")
            s2 = await ac.chat(MODEL, MESSAGES, stream=True)
            async for _ in s2.deltas():
                break
            await s2.aclose()
            assert s2.status == "cancelled" and s2.result is not None and "usage" in s2.result

    asyncio.run(asyncio.wait_for(main(), 30))
