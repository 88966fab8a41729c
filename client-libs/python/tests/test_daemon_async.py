"""The asyncio AsyncClient against the real daemon."""

import asyncio
import signal
import time

import pytest

from llm_sidecar import (
    PROTOCOL,
    AsyncClient,
    Cancelled,
    ConnectionClosed,
    DaemonNotRunning,
    InvalidParams,
    MethodNotFound,
    connect_async,
)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_connect_and_wrappers(daemon):
    async def main():
        async with AsyncClient(daemon.sock, app="async-app", app_version="2") as c:
            assert c.hello_result["app"] == "async-app" and c.hello_result["protocol"] == PROTOCOL
            info = await c.info()
            assert info["app"] == "async-app" and info["socket"] == daemon.sock
            assert "daemon.ping" in {m["name"] for m in (await c.methods())["methods"]}
            assert await c.ping(delay_ms=3) == {"pong": True, "delay_ms": 3}
            hello = await c.hello("renamed")
            assert hello["app"] == "renamed" and (await c.info())["app"] == "renamed"
            assert (await c.events_subscribe(["sync.paused"]))["kinds"] == ["sync.paused"]
            assert (await c.events_unsubscribe())["kinds"] == []
        assert c.closed

    run(main())


def test_not_running(tmp_path):
    async def main():
        with pytest.raises(DaemonNotRunning, match="llm-sidecar serve"):
            await AsyncClient.connect(str(tmp_path / "sock"))
        with pytest.raises(DaemonNotRunning):
            async with AsyncClient(str(tmp_path / "sock")):
                pass

    run(main())


def test_discovery_by_env(daemon, monkeypatch):
    monkeypatch.setenv("LLM_SIDECAR_SOCK", daemon.sock)

    async def main():
        c = await connect_async()
        try:
            assert (await c.info())["socket"] == daemon.sock
        finally:
            await c.close()

    run(main())


def test_generic_call_and_errors(daemon):
    async def main():
        async with AsyncClient(daemon.sock) as c:
            assert (await c.call("daemon.ping", {"delay_ms": 1}))["delay_ms"] == 1
            assert (await c.call("daemon.info", []))["server"] == "llm-sidecar"
            with pytest.raises(MethodNotFound) as err:
                await c.call("nope.nope")
            assert err.value.data["method"] == "nope.nope"
            with pytest.raises(InvalidParams):
                await c.ping(delay_ms=10**6)
            with pytest.raises(InvalidParams):
                await c.call("daemon.hello", {"app": 5})

    run(main())


def test_cancel(daemon):
    async def main():
        async with AsyncClient(daemon.sock) as c:
            t0 = time.monotonic()
            pending = c.start("daemon.ping", {"delay_ms": 30_000})
            pending.cancel()
            with pytest.raises(Cancelled):
                await pending
            # Cancelling the awaiting task (here: a timeout) cancels the request too.
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(c.ping(delay_ms=30_000), 0.2)
            assert (await c.ping())["pong"] is True
            assert time.monotonic() - t0 < 10

    run(main())


def test_concurrency_out_of_order(daemon):
    async def main():
        async with AsyncClient(daemon.sock) as c:
            slow = asyncio.ensure_future(c.ping(delay_ms=1000))
            assert (await c.ping())["delay_ms"] == 0
            assert not slow.done()
            delays = [(i * 13) % 97 for i in range(500)]
            order = []

            async def one(d):
                r = await c.ping(delay_ms=d)
                order.append(d)
                return r["delay_ms"]

            assert await asyncio.gather(*(one(d) for d in delays)) == delays
            assert order != delays  # answered in completion order
            assert (await slow)["delay_ms"] == 1000

    run(main())


def test_subscribe(daemon):
    async def main():
        async with AsyncClient(daemon.sock) as c:
            with pytest.raises(InvalidParams):
                await c.subscribe(["bogus"])
            sub = await c.subscribe("*")
            assert "vault.unlocked" in sub.kinds
            async with await c.subscribe(["key.invalid"]) as keysub:
                await sub.close()
                assert (await c.events_unsubscribe(kinds=[]))["kinds"] == ["key.invalid"]
                assert keysub.kinds == {"key.invalid"}
            assert (await c.events_unsubscribe(kinds=[]))["kinds"] == []

    run(main())


def test_daemon_death(make_daemon):
    d = make_daemon().start()

    async def main():
        c = await AsyncClient.connect(d.sock)
        pending = asyncio.ensure_future(c.ping(delay_ms=30_000))
        await asyncio.sleep(0)  # let the request go out
        d.stop(signal.SIGKILL)
        with pytest.raises(ConnectionClosed):
            await pending
        with pytest.raises(ConnectionClosed):
            await c.ping()
        await c.close()

    run(main())
