"""The blocking Client against the real daemon: connect, discovery, wrappers, errors, cancel, concurrency, events."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import llm_sidecar
from llm_sidecar import (
    PROTOCOL,
    Cancelled,
    Client,
    ConnectionClosed,
    DaemonNotRunning,
    InvalidParams,
    MethodNotFound,
    SidecarError,
    socket_path,
)
from llm_sidecar._methods import METHOD_PARAMS

from conftest import SPEC_FILE, wait_until


def test_connect_names_the_app(daemon):
    with Client(daemon.sock, app="pytest-app", app_version="1.2.3") as c:
        assert c.hello_result is not None
        assert c.hello_result["app"] == "pytest-app"
        assert c.hello_result["protocol"] == PROTOCOL
        info = c.info()
        assert info["app"] == "pytest-app"
        assert info["socket"] == daemon.sock
        assert info["protocol"] == PROTOCOL
        assert info["connections"] >= 1
        assert info["pid"] == daemon.proc.pid


def test_connect_without_daemon_raises_daemon_not_running(tmp_path):
    missing = str(tmp_path / "nothing" / "sock")
    with pytest.raises(DaemonNotRunning) as err:
        Client(missing)
    assert isinstance(err.value, ConnectionError) and isinstance(err.value, SidecarError)
    assert missing in str(err.value) and "llm-sidecar serve" in str(err.value)
    assert err.value.data == {"path": missing}

    # A socket file left behind by a dead daemon: connection refused, same error.
    stale = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()
    with pytest.raises(DaemonNotRunning):
        Client(stale)
    with pytest.raises(DaemonNotRunning):
        llm_sidecar.connect(stale)


def test_socket_path_rules():
    uid = os.getuid()
    assert socket_path("/x/sock", {"LLM_SIDECAR_SOCK": "/env/sock"}) == "/x/sock"
    assert socket_path(None, {"LLM_SIDECAR_SOCK": "/env/sock", "XDG_RUNTIME_DIR": "/run/user/1"}) == "/env/sock"
    assert socket_path(None, {"LLM_SIDECAR_SOCK": "", "XDG_RUNTIME_DIR": "/run/user/1"}) == "/run/user/1/llm-sidecar/sock"
    assert socket_path(None, {"XDG_RUNTIME_DIR": "", "TMPDIR": "/var/tmp/"}) == f"/var/tmp/llm-sidecar-{uid}/sock"
    assert socket_path(None, {}) == f"/tmp/llm-sidecar-{uid}/sock"
    assert socket_path(Path("/p/sock"), {}) == "/p/sock"


def test_discovery_by_env_var(daemon, monkeypatch):
    monkeypatch.setenv("LLM_SIDECAR_SOCK", daemon.sock)
    with Client() as c:
        assert c.path == daemon.sock
        assert c.ping()["pong"] is True


@pytest.mark.parametrize("where", ["xdg_runtime_dir", "tmpdir"])
def test_discovery_matches_the_daemon(make_daemon, monkeypatch, where):
    """A daemon started without --socket binds where a client without a path looks."""
    d = make_daemon(socket_arg=False)
    if where == "xdg_runtime_dir":
        env = {"XDG_RUNTIME_DIR": str(d.root / "xdg")}
    else:
        tmp = d.root / "tmp"
        tmp.mkdir()
        env = {"XDG_RUNTIME_DIR": None, "TMPDIR": str(tmp)}
    for k, v in env.items():
        if v is None:
            d.env.pop(k, None)
            monkeypatch.delenv(k, raising=False)
        else:
            d.env[k] = v
            monkeypatch.setenv(k, v)
    monkeypatch.delenv("LLM_SIDECAR_SOCK", raising=False)
    expected = socket_path()
    d.start(expect_socket=expected)
    with Client() as c:
        assert c.info()["socket"] == expected


def test_every_daemon_and_events_wrapper(daemon):
    with Client(daemon.sock) as c:
        hello = c.hello("wrapper-test", version="0.0.1")
        assert hello["server"] == "llm-sidecar" and hello["app"] == "wrapper-test"
        assert isinstance(hello["connection_id"], int)
        info = c.info()
        assert info["app"] == "wrapper-test" and info["uptime_ms"] >= 0
        methods = c.methods()
        names = {m["name"] for m in methods["methods"]}
        assert {"daemon.hello", "daemon.info", "daemon.methods", "daemon.ping", "events.subscribe"} <= names
        assert c.ping() == {"pong": True, "delay_ms": 0}
        assert c.ping(delay_ms=20) == {"pong": True, "delay_ms": 20}
        assert c.events_subscribe(["vault.locked", "tier.changed"])["kinds"] == ["tier.changed", "vault.locked"]
        assert c.events_unsubscribe(kinds=["tier.changed"])["kinds"] == ["vault.locked"]
        assert c.events_unsubscribe()["kinds"] == []


def shape_names(params_shape: str):
    """Top-level field names of a `daemon.methods` params shape like `{app: str, version?: str}`."""
    start = params_shape.find("{")
    if start < 0:
        return set()
    names, depth, token = set(), 0, ""
    for ch in params_shape[start:]:
        if ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
            if depth == 0:
                break
        if depth == 1:
            token += ch
            if ch == ":":
                m = re.search(r"(\w+)\??\s*:$", token)
                if m:
                    names.add(m.group(1))
                token = ""
            elif ch in ",|":
                token = ""
    return names


def test_shape_parser():
    assert shape_names("{app: str, version?: str}") == {"app", "version"}
    assert shape_names("{}") == set()
    assert shape_names('{kinds: [str]}  ("*" for all)') == {"kinds"}
    assert shape_names("{a?: int | b?: float, c: {d: int}, e: [{f: str}]}") == {"a", "b", "c", "e"}


def test_wrappers_match_daemon_methods(daemon):
    """Every request the daemon lists has a wrapper with exactly its param names."""
    with Client(daemon.sock) as c:
        listed = [m for m in c.methods()["methods"] if m["kind"] == "request"]
    assert listed
    problems = []
    for m in listed:
        if m["name"] not in METHOD_PARAMS:
            problems.append(f"no wrapper for {m['name']}")
        elif shape_names(m["params"]) != set(METHOD_PARAMS[m["name"]]):
            problems.append(
                f"{m['name']}: daemon params {sorted(shape_names(m['params']))}, wrapper {sorted(METHOD_PARAMS[m['name']])}"
            )
    assert not problems, "update client-libs/methods.json and run generate.py:\n" + "\n".join(problems)


def test_generated_wrappers_are_fresh():
    gen = SPEC_FILE.parent / "generate.py"
    out = subprocess.run([sys.executable, str(gen), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    spec = json.loads(SPEC_FILE.read_text())["methods"]
    for m in spec:
        if not m.get("custom"):
            assert callable(getattr(Client, m["py"])) and callable(getattr(llm_sidecar.AsyncClient, m["py"]))


def test_generic_call(daemon):
    with Client(daemon.sock) as c:
        assert c.call("daemon.ping", {"delay_ms": 1}) == {"pong": True, "delay_ms": 1}
        assert c.call("daemon.ping", [{"delay_ms": 2}])["delay_ms"] == 2
        assert c.call("daemon.ping", [None])["delay_ms"] == 0
        assert c.call("daemon.info")["server"] == "llm-sidecar"
        assert c.call("daemon.info", [])["server"] == "llm-sidecar"
        with pytest.raises(TypeError):
            c.call("daemon.info", "not params")  # type: ignore[arg-type]


def test_errors_map_to_classes_with_data(daemon):
    with Client(daemon.sock) as c:
        with pytest.raises(MethodNotFound) as err:
            c.call("no.such.method", {})
        assert err.value.code == "method_not_found"
        assert err.value.data == {"method": "no.such.method"}
        assert "daemon.methods" in err.value.message

        with pytest.raises(InvalidParams) as err:
            c.ping(delay_ms=60_001)
        assert err.value.code == "invalid_params" and "60000" in err.value.message
        assert isinstance(err.value.data, dict)
        with pytest.raises(InvalidParams, match="unknown field"):
            c.ping(bogus=1)
        with pytest.raises(InvalidParams):
            c.hello("")
        with pytest.raises(InvalidParams):
            c.call("daemon.info", [42])
        # The connection is still fine after errors.
        assert c.ping()["pong"] is True


def test_cancel_pending_call(daemon):
    with Client(daemon.sock) as c:
        t0 = time.monotonic()
        pending = c.start("daemon.ping", {"delay_ms": 30_000})
        pending.cancel()
        with pytest.raises(Cancelled) as err:
            pending.result(timeout=10)
        assert err.value.code == "cancelled"
        assert time.monotonic() - t0 < 10


def test_timeout_cancels_and_connection_stays_usable(daemon):
    with Client(daemon.sock, timeout=0.2) as c:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            c.ping(delay_ms=30_000)
        assert time.monotonic() - t0 < 5
        assert c.call("daemon.ping", {"delay_ms": 1}, timeout=10)["pong"] is True


def test_concurrent_calls_on_one_connection(daemon):
    with Client(daemon.sock) as c:
        slow = c.start("daemon.ping", {"delay_ms": 1500})
        fast = c.start("daemon.ping", {"delay_ms": 0})
        assert fast.result(timeout=10)["delay_ms"] == 0
        assert not slow.done(), "answers must come in completion order, not request order"

        results = {}
        errors = []

        def worker(i: int) -> None:
            try:
                results[i] = c.ping(delay_ms=(i * 7) % 50)
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors
        assert len(results) == 200
        assert all(results[i] == {"pong": True, "delay_ms": (i * 7) % 50} for i in range(200))

        pendings = [c.start("daemon.ping", {"delay_ms": 300 - i}) for i in range(300)]
        assert [p.result(timeout=30)["delay_ms"] for p in pendings] == [300 - i for i in range(300)]
        assert slow.result(timeout=10)["delay_ms"] == 1500


def test_events_subscribe(daemon):
    with Client(daemon.sock) as c:
        with pytest.raises(InvalidParams, match="unknown event kind"):
            c.subscribe(["no.such.kind"])
        every = c.subscribe("*")
        assert {"vault.locked", "quota.exceeded", "tier.changed"} <= every.kinds
        one = c.subscribe(["vault.locked"])
        # Closing the "*" subscription drops everything but what `one` still needs.
        every.close()
        assert c.events_unsubscribe(kinds=[])["kinds"] == ["vault.locked"]
        one.close()
        assert c.events_unsubscribe(kinds=[])["kinds"] == []
        with c.subscribe(["quota.threshold"]) as sub:
            assert sub.kinds == {"quota.threshold"}
        assert c.events_unsubscribe(kinds=[])["kinds"] == []


def test_daemon_death_fails_pending_calls(make_daemon):
    d = make_daemon().start()
    c = Client(d.sock)
    pending = c.start("daemon.ping", {"delay_ms": 30_000})
    sub = c.subscribe("*")
    d.stop(signal.SIGKILL)
    with pytest.raises(ConnectionClosed):
        pending.result(timeout=10)
    assert list(sub) == []  # the subscription ends
    wait_until(lambda: c.closed, what="client to notice the closed connection")
    with pytest.raises(ConnectionClosed):
        c.ping()
    c.close()


def test_many_clients(daemon):
    clients = [Client(daemon.sock, app=f"app-{i}") for i in range(20)]
    try:
        for i, c in enumerate(clients):
            assert c.info()["app"] == f"app-{i}"
    finally:
        for c in clients:
            c.close()
