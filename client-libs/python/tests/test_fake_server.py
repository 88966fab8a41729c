"""Streaming, events and wire shapes against a fake MessagePack-RPC server (conftest.FakeServer).

Odd answers, holds and event delivery are easier to drive from a fake; the fake speaks the same
wire format as the daemon (docs/protocol.md §7-8). `chat` through the real daemon and a mock
provider is in test_daemon_chat.py.
"""

import asyncio
import json
import keyword
import queue
import threading

import pytest

from llm_sidecar import (
    AsyncClient,
    Cancelled,
    Client,
    ConnectionClosed,
    MethodNotFound,
    ProtocolError,
    ProviderError,
    SidecarError,
)

from conftest import SPEC_FILE, wait_until

MESSAGES = [{"role": "user", "content": "hi"}]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_chat_stream_yields_chunks_then_result(fake):
    with Client(fake.path) as c:
        stream = c.chat("fast", MESSAGES, stream=True, max_tokens=5, metadata={"chunks": ["a", "b", "c", "d"]})
        assert stream.result is None
        chunks = list(stream)
        assert [ch["delta"] for ch in chunks] == ["a", "b", "c", "d"]
        assert [ch["seq"] for ch in chunks] == [0, 1, 2, 3]
        assert stream.result is not None
        assert stream.result["content"] == "abcd"
        assert stream.result["usage"]["output"] == 4
        assert stream.result["cost_microusd"] == 42
        # The request: one map argument, stream true, None fields left out.
        [req] = fake.messages("chat")
        assert req[3] == [
            {"model": "fast", "messages": MESSAGES, "max_tokens": 5, "stream": True, "metadata": {"chunks": ["a", "b", "c", "d"]}}
        ]


def test_chat_without_stream_returns_result(fake):
    with Client(fake.path) as c:
        res = c.chat("fast", MESSAGES, stop=("x", "y"), temperature=0.5)
        assert res["content"] == "Hello!" and res["usage"]["input"] == 5
        [req] = fake.messages("chat")
        assert req[3] == [{"model": "fast", "messages": MESSAGES, "stop": ["x", "y"], "temperature": 0.5}]


def test_stream_cancel_reports_usage_so_far(fake):
    with Client(fake.path) as c:
        stream = c.chat("fast", MESSAGES, stream=True, metadata={"hold": True})
        it = iter(stream)
        assert next(it)["delta"] == "Hel"
        stream.cancel()
        seen = 1
        with pytest.raises(Cancelled) as err:
            for _ in it:
                seen += 1
        assert stream.status == "cancelled"
        assert stream.result is not None and stream.result["usage"] == err.value.data["usage"]
        # The fake bills one output token per chunk it sent before it saw the cancel.
        assert err.value.data["usage"]["output"] == seen
        assert err.value.data["cost_microusd"] == 7
        assert fake.cancelled_ids() == [stream.msgid]


def test_breaking_out_of_the_loop_cancels(fake):
    with Client(fake.path) as c:
        stream = c.chat("fast", MESSAGES, stream=True, metadata={"hold": True})
        for chunk in stream:
            assert chunk["delta"] == "Hel"
            break
        wait_until(lambda: fake.cancelled_ids() == [stream.msgid], what="$/cancel after break")
        # The connection goes on.
        assert c.call("echo", {"x": 1}) == {"method": "echo", "params": [{"x": 1}]}


def test_with_block_and_close_cancel(fake):
    with Client(fake.path) as c:
        with c.chat("fast", MESSAGES, stream=True, metadata={"hold": True}) as stream:
            it = iter(stream)
            assert next(it)["delta"] == "Hel"
            assert fake.cancelled_ids() == []
        wait_until(lambda: fake.cancelled_ids() == [stream.msgid], what="$/cancel on leaving with")
        s2 = c.chat("fast", MESSAGES, stream=True, metadata={"hold": True})
        s2.close()
        assert list(s2) == []
        wait_until(lambda: fake.cancelled_ids() == [stream.msgid, s2.msgid], what="$/cancel on close")
        del it  # finalizing the iterator does not cancel twice
        assert c.call("echo")["method"] == "echo"
        assert fake.cancelled_ids() == [stream.msgid, s2.msgid]


def test_stream_wait_skips_chunks(fake):
    with Client(fake.path) as c:
        stream = c.chat("fast", MESSAGES, stream=True)
        assert stream.wait(timeout=10)["content"] == "Hello!"
        assert stream.result["content"] == "Hello!"


def test_chat_cancel_wrapper(fake):
    with Client(fake.path) as c:
        stream = c.chat("fast", MESSAGES, stream=True, metadata={"hold": True})
        assert c.chat_cancel(stream.msgid) == {"cancelled": True}
        with pytest.raises(Cancelled):
            stream.wait(timeout=10)
        assert fake.messages("chat.cancel")[0][3] == [{"id": stream.msgid}]


def test_stream_error_before_any_chunk_raises_at_chat(fake):
    with Client(fake.path) as c:
        with pytest.raises(ProviderError) as err:
            c.chat("fast", MESSAGES, stream=True, metadata={"fail": True})
        assert err.value.data == {"provider": "mock", "status": 500, "attempts": 3}


def test_interleaved_streams_on_one_connection(fake):
    with Client(fake.path) as c:
        streams = [c.chat("m", MESSAGES, stream=True, metadata={"chunks": [f"{i}-{j}" for j in range(20)]}) for i in range(10)]
        out = {}

        def consume(i, s):
            out[i] = [ch["delta"] for ch in s]

        threads = [threading.Thread(target=consume, args=(i, s)) for i, s in enumerate(streams)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        for i, s in enumerate(streams):
            assert out[i] == [f"{i}-{j}" for j in range(20)]
            assert s.result["content"] == "".join(out[i])


def test_generic_stream(fake):
    with Client(fake.path) as c:
        s = c.stream("chat", {"model": "x", "messages": [], "stream": True, "metadata": {"chunks": ["1", "2"]}})
        assert [ch["delta"] for ch in s] == ["1", "2"]
        assert s.result["content"] == "12"


def test_events_delivered_by_kind(fake):
    with Client(fake.path) as c:
        only_vault = c.subscribe(["vault.locked"])
        got = queue.Queue()
        every = c.subscribe("*", callback=got.put)
        fake.emit({"kind": "quota.threshold", "percent": 80})
        fake.emit({"kind": "vault.locked"})
        fake.emit({"kind": "events.lagged", "missed": 3})
        assert only_vault.get(timeout=5) == {"kind": "vault.locked"}
        assert only_vault.get(timeout=5) == {"kind": "events.lagged", "missed": 3}
        assert [got.get(timeout=5)["kind"] for _ in range(3)] == ["quota.threshold", "vault.locked", "events.lagged"]
        only_vault.close()
        with pytest.raises(ConnectionClosed):
            only_vault.get(timeout=1)
        # "*" is still subscribed, so nothing was unsubscribed on the wire.
        assert fake.messages("events.unsubscribe") == []
        every.close()  # the last subscription: unsubscribe from everything
        assert [m[3] for m in fake.messages("events.unsubscribe")] == [[{}]]


def test_event_right_behind_the_subscribe_answer_is_not_lost(fake):
    fake.after_subscribe = {"kind": "vault.locked", "first": True}
    with Client(fake.path) as c:
        for _ in range(20):
            with c.subscribe(["vault.locked"]) as sub:
                assert sub.get(timeout=5) == {"kind": "vault.locked", "first": True}

    async def main():
        async with AsyncClient(fake.path) as ac:
            for _ in range(20):
                async with await ac.subscribe(["vault.locked"]) as asub:
                    assert await asyncio.wait_for(asub.get(), 5) == {"kind": "vault.locked", "first": True}

    run(main())


def test_unknown_error_code_is_base_class(fake):
    with Client(fake.path) as c:
        with pytest.raises(SidecarError) as err:
            c.call("weird")
        assert type(err.value) is SidecarError
        assert err.value.code == "teapot" and err.value.message == "short and stout" and err.value.data == {"a": 1}
        with pytest.raises(MethodNotFound):
            c.call("nope")


def test_protocol_violation_closes_connection(fake):
    c = Client(fake.path)
    waiting = c.start("slow", {"ms": 5000})
    with pytest.raises(ConnectionClosed):
        c.call("break", timeout=10)
    with pytest.raises(ConnectionClosed) as err:
        waiting.result(timeout=10)
    assert "unexpected message" in str(err.value)
    assert c._close_reason is not None and isinstance(c._close_reason, ProtocolError)
    c.close()


def test_invalid_messagepack_closes_connection(fake):
    with Client(fake.path) as c:
        with pytest.raises(ConnectionClosed):
            c.call("garbage", timeout=10)
        assert isinstance(c._close_reason, ProtocolError)

    async def main():
        ac = await AsyncClient.connect(fake.path)
        with pytest.raises(ConnectionClosed, match="invalid MessagePack"):
            await ac.call("garbage")
        await ac.close()

    run(main())


def wrapper_cases():
    """(python name, args, kwargs, expected wire method, expected wire params) for every wrapper."""
    samples = {
        "str": "s",
        "int": 7,
        "float": 0.5,
        "bool": True,
        "map": {"k": "v"},
        "strs": ["a", "b"],
        "str_or_strs": ["x"],
        "int_or_str": 12,
        "messages": MESSAGES,
        "records": [{"id": "r1"}],
    }
    spec = json.loads(SPEC_FILE.read_text())["methods"]
    for m in spec:
        if m.get("custom"):
            continue
        args = [samples[p["type"]] for p in m["params"] if p.get("required")]
        kwargs = {
            (p["name"] + "_" if keyword.iskeyword(p["name"]) else p["name"]): samples[p["type"]]
            for p in m["params"]
            if not p.get("required")
        }
        full = {p["name"]: samples[p["type"]] for p in m["params"]}
        minimal = {p["name"]: samples[p["type"]] for p in m["params"] if p.get("required")}
        yield m["py"], args, kwargs, m["method"], full, minimal


@pytest.mark.parametrize(
    "name,args,kwargs,method,full,minimal",
    list(wrapper_cases()),
    ids=lambda v: v if isinstance(v, str) and "." not in v else None,
)
def test_every_wrapper_sends_its_method_and_params(fake, name, args, kwargs, method, full, minimal):
    def sent():
        return [m[3] for m in fake.messages(method)]

    with Client(fake.path) as c:
        getattr(c, name)(*args, **kwargs)
        getattr(c, name)(*args)
        getattr(c, name)(*args, extra_field=1)
    assert sent() == [[full], [minimal], [{**minimal, "extra_field": 1}]]

    async def main():
        async with AsyncClient(fake.path) as ac:
            await getattr(ac, name)(*args, **kwargs)

    run(main())
    assert sent()[-1] == [full]


# ---- asyncio ---------------------------------------------------------------------------------


def test_async_stream(fake):
    async def main():
        async with AsyncClient(fake.path) as c:
            stream = await c.chat("fast", MESSAGES, stream=True, metadata={"chunks": ["x", "y"]})
            assert [ch["delta"] async for ch in stream] == ["x", "y"]
            assert stream.result["content"] == "xy" and stream.result["usage"]["output"] == 2
            assert (await c.chat("fast", MESSAGES))["content"] == "Hello!"

    run(main())


def test_async_stream_cancel_and_break(fake):
    async def main():
        async with AsyncClient(fake.path) as c:
            stream = await c.chat("fast", MESSAGES, stream=True, metadata={"hold": True})
            seen = []
            with pytest.raises(Cancelled) as err:
                async for ch in stream:
                    seen.append(ch["delta"])
                    if len(seen) == 1:
                        stream.cancel()
            assert err.value.data["usage"]["output"] >= 1
            assert stream.msgid in fake.cancelled_ids()

            s2 = await c.chat("fast", MESSAGES, stream=True, metadata={"hold": True})
            async with s2:
                async for _ in s2:
                    break
            await wait_async(lambda: s2.msgid in fake.cancelled_ids())

            s3 = await c.chat("fast", MESSAGES, stream=True, metadata={"hold": True})
            async for _ in s3:
                break  # asyncio finalizes the iterator soon after, which cancels
            await wait_async(lambda: s3.msgid in fake.cancelled_ids())

            s4 = await c.chat("fast", MESSAGES, stream=True, metadata={"hold": True})
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(s4.wait(), 0.2)
            await wait_async(lambda: s4.msgid in fake.cancelled_ids())

            assert (await c.call("echo"))["method"] == "echo"

    run(main())


async def wait_async(pred, timeout=10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_async_events(fake):
    async def main():
        async with AsyncClient(fake.path) as c:
            sub = await c.subscribe(["tier.changed"])
            seen = []

            async def on_event(e):
                seen.append(e["kind"])

            await c.subscribe("*", callback=on_event)
            fake.emit({"kind": "vault.locked"})
            fake.emit({"kind": "tier.changed", "tier": "pro"})
            assert await asyncio.wait_for(sub.get(), 5) == {"kind": "tier.changed", "tier": "pro"}
            await wait_async(lambda: seen == ["vault.locked", "tier.changed"])
            await sub.close()
            with pytest.raises(ConnectionClosed):
                await sub.get()

    run(main())


def test_async_protocol_violation(fake):
    async def main():
        c = await AsyncClient.connect(fake.path)
        with pytest.raises(ConnectionClosed):
            await c.call("break")
        assert c.closed
        await c.close()

    run(main())
