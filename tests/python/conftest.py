"""Starts the real llm-sidecar daemon in a temp dir for protocol tests written in Python."""
import os
import socket
import subprocess
import tempfile
import time

import pytest


def daemon_binary() -> str:
    path = os.environ.get("LLM_SIDECAR_BIN")
    if not path:
        here = os.path.dirname(os.path.abspath(__file__))
        path = os.path.join(here, "..", "..", "target", "debug", "llm-sidecar")
    if not os.path.exists(path):
        pytest.fail(f"daemon binary not found at {path}; run `cargo build` (make test does)")
    return path


@pytest.fixture
def daemon():
    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "run", "llm-sidecar", "sock")
        env = {k: v for k, v in os.environ.items() if k not in ("LLM_SIDECAR_SOCK", "RUST_LOG")}
        env.update(HOME=tmp, XDG_CONFIG_HOME=os.path.join(tmp, "config"), XDG_DATA_HOME=os.path.join(tmp, "data"))
        log = open(os.path.join(tmp, "daemon.log"), "wb")
        proc = subprocess.Popen(
            [daemon_binary(), "--socket", sock, "serve", "--data-dir", os.path.join(tmp, "data")],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(sock)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("daemon did not start")
                time.sleep(0.01)
        try:
            yield sock
        finally:
            proc.terminate()
            proc.wait(timeout=20)
            log.close()
