"""`Client(autostart=True)`: two apps (separate processes) starting at once against a fresh
runtime and data dir make exactly one daemon, and both calls succeed; clear errors when the
binary is missing or the daemon cannot start.
"""

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from llm_sidecar import AsyncClient, Autostart, Client, DaemonNotRunning, DaemonStartFailed

from conftest import LIB_DIR, daemon_binary, wait_until

APP = textwrap.dedent(
    """
    import os, sys, time
    from llm_sidecar import Client
    go = sys.argv[1]
    while not os.path.exists(go):  # both apps start together
        time.sleep(0.001)
    with Client(app=sys.argv[2], autostart=True) as c:
        info = c.info()
        print(info["pid"], c.started_pid or 0, info["socket"], flush=True)
    """
)


def daemons_on(sock: str) -> List[int]:
    """Pids of llm-sidecar processes serving this socket (from /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"llm-sidecar") for a in argv[:1]) and sock.encode() in argv and b"serve" in argv:
            pids.append(int(entry))
    return pids


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    wait_until(lambda: gone(pid), timeout=20, what=f"daemon {pid} to stop")


@pytest.fixture
def fresh_env() -> Iterator[Dict[str, str]]:
    """An environment whose runtime, data, config and home dirs are new and empty."""
    root = Path(tempfile.mkdtemp(prefix="llm-sidecar-auto-"))
    env = {k: v for k, v in os.environ.items() if k not in ("LLM_SIDECAR_SOCK", "RUST_LOG", "TMPDIR")}
    run = root / "run"
    run.mkdir(mode=0o700)
    env.update(
        HOME=str(root / "home"),
        XDG_RUNTIME_DIR=str(run),
        XDG_DATA_HOME=str(root / "data"),
        XDG_CONFIG_HOME=str(root / "config"),
        XDG_STATE_HOME=str(root / "state"),
        LLM_SIDECAR_BIN=daemon_binary(),
        PYTHONPATH=str(LIB_DIR / "src"),
    )
    env["_ROOT"] = str(root)
    yield env
    for pid in daemons_on(str(run / "llm-sidecar" / "sock")):
        stop(pid)
    subprocess.run(["rm", "-rf", str(root)], check=False)


def test_two_apps_starting_at_once_make_exactly_one_daemon(fresh_env: Dict[str, str]) -> None:
    root = Path(fresh_env["_ROOT"])
    sock = str(root / "run" / "llm-sidecar" / "sock")
    go = root / "go"
    apps = [
        subprocess.Popen(
            [sys.executable, "-c", APP, str(go), f"app-{i}"], env=fresh_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for i in range(2)
    ]
    time.sleep(0.3)  # let both interpreters reach the wait
    go.touch()
    outs = []
    for p in apps:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
        outs.append(out.decode().split())
    daemon_pids = {int(o[0]) for o in outs}
    starters = [int(o[1]) for o in outs if o[1] != "0"]
    assert len(daemon_pids) == 1, outs  # both talked to the same daemon
    assert starters == list(daemon_pids), outs  # which exactly one of them started
    assert {o[2] for o in outs} == {sock}
    assert daemons_on(sock) == list(daemon_pids)
    # Its output went to the log in the data dir, and it was started once.
    log = root / "data" / "llm-sidecar" / "daemon.log"
    text = log.read_text()
    assert text.count(" started by ") == 1, text
    assert "another llm-sidecar daemon is already running" not in text
    # A later client just connects.
    env_before = dict(os.environ)
    try:
        os.environ.update({k: v for k, v in fresh_env.items() if not k.startswith("_")})
        with Client(autostart=True) as c:
            assert c.started_pid is None and c.info()["pid"] in daemon_pids
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    pid = daemon_pids.pop()
    stop(pid)
    assert daemons_on(sock) == []


def test_async_autostart_with_options(fresh_env: Dict[str, str], tmp_path: Path) -> None:
    sock = str(Path(fresh_env["_ROOT"]) / "run" / "llm-sidecar" / "sock")
    data = tmp_path / "data"
    opts = Autostart(
        binary=fresh_env["LLM_SIDECAR_BIN"],
        data_dir=data,
        env={k: v for k, v in fresh_env.items() if not k.startswith("_")},
        timeout=30,
    )

    async def main() -> int:
        async with AsyncClient(sock, autostart=opts) as c:
            info = await c.info()
            assert info["data_dir"] == str(data)
            assert c.started_pid == info["pid"]
            return int(info["pid"])

    pid = asyncio.run(asyncio.wait_for(main(), 60))
    assert (data / "daemon.log").exists()
    stop(pid)


def test_without_autostart_nothing_is_started(fresh_env: Dict[str, str]) -> None:
    sock = str(Path(fresh_env["_ROOT"]) / "run" / "llm-sidecar" / "sock")
    with pytest.raises(DaemonNotRunning):
        Client(sock)
    assert daemons_on(sock) == []


def test_missing_binary_and_failing_daemon_are_clear_errors(fresh_env: Dict[str, str], tmp_path: Path) -> None:
    sock = str(Path(fresh_env["_ROOT"]) / "run" / "llm-sidecar" / "sock")
    with pytest.raises(DaemonStartFailed) as err:
        Client(sock, autostart=True, binary=tmp_path / "nope" / "llm-sidecar")
    assert "no `llm-sidecar` executable found" in str(err.value) and "nope" in str(err.value)
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon\n")
    env = {k: v for k, v in fresh_env.items() if not k.startswith("_")}
    with pytest.raises(DaemonStartFailed) as err:
        Client(sock, autostart=Autostart(binary=fresh_env["LLM_SIDECAR_BIN"], config=bad, data_dir=tmp_path / "d", env=env))
    log = str(tmp_path / "d" / "daemon.log")
    assert err.value.data["log"] == log and log in str(err.value)
    assert "exited with status" in str(err.value)
    assert daemons_on(sock) == []
