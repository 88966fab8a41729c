"""Test fixtures: the real llm-sidecar daemon in a temp dir, and a fake MessagePack-RPC server.

The daemon binary comes from `$LLM_SIDECAR_BIN`, default `../../target/debug/llm-sidecar`
relative to client-libs/python. Readiness is awaited by polling the socket, never by sleeping
a fixed time.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import msgpack
import pytest

LIB_DIR = Path(__file__).resolve().parent.parent
SPEC_FILE = LIB_DIR.parent / "methods.json"
START_TIMEOUT = 30.0


def daemon_binary() -> str:
    path = os.environ.get("LLM_SIDECAR_BIN") or str(LIB_DIR / ".." / ".." / "target" / "debug" / "llm-sidecar")
    if not os.path.exists(path):
        pytest.fail(f"daemon binary not found at {path}; run `cargo build` or set LLM_SIDECAR_BIN")
    return path


def wait_until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def accepts(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
        return True
    except OSError:
        return False


class Daemon:
    """One daemon process with every path (HOME, XDG_*, data, socket) inside `root`."""

    def __init__(
        self, root: Path, socket_arg: bool = True, env: Optional[Dict[str, str]] = None, args: Optional[List[str]] = None
    ):
        self.root = root
        self.args = list(args or [])
        self.data = root / "data"
        self.env = {k: v for k, v in os.environ.items() if k not in ("LLM_SIDECAR_SOCK", "RUST_LOG", "XDG_RUNTIME_DIR", "TMPDIR")}
        self.env.update(
            HOME=str(root / "home"),
            XDG_CONFIG_HOME=str(root / "config"),
            XDG_DATA_HOME=str(root / "xdg-data"),
            XDG_STATE_HOME=str(root / "state"),
            XDG_CACHE_HOME=str(root / "cache"),
            XDG_RUNTIME_DIR=str(root / "xdg-run"),
            RUST_LOG="llm_sidecar=debug",
        )
        self.env.update(env or {})
        self.env = {k: v for k, v in self.env.items() if v is not None}
        self.socket_arg = socket_arg
        self.sock = str(root / "run" / "sock") if socket_arg else ""
        self.log_path = root / "daemon.log"
        self.proc: Optional[subprocess.Popen] = None

    def start(self, expect_socket: Optional[str] = None) -> "Daemon":
        if expect_socket:
            self.sock = expect_socket
        args = [daemon_binary()]
        if self.socket_arg:
            args += ["--socket", self.sock]
        args += ["serve", "--data-dir", str(self.data)] + self.args
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT
        while not accepts(self.sock):
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"daemon did not listen on {self.sock}:\n{self.logs()}")
            time.sleep(0.005)
        return self

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    """One daemon shared by the tests that leave no state behind."""
    root = Path(tempfile.mkdtemp(prefix="llm-sidecar-py-"))
    d = Daemon(root).start()
    try:
        yield d
    finally:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def make_daemon() -> Iterator[Callable[..., Daemon]]:
    """Factory for daemons of one test (killed and removed afterwards)."""
    made: List[Daemon] = []
    roots: List[str] = []

    def make(socket_arg: bool = True, env: Optional[Dict[str, str]] = None, args: Optional[List[str]] = None) -> Daemon:
        root = tempfile.mkdtemp(prefix="llm-sidecar-py-")
        roots.append(root)
        d = Daemon(Path(root), socket_arg=socket_arg, env=env, args=args)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop(signal.SIGKILL)
    for r in roots:
        shutil.rmtree(r, ignore_errors=True)


# ---- a fake daemon for what the real one never sends on demand (violations, odd timing) ------


class FakeServer:
    """Speaks MessagePack-RPC like the daemon, for tests of streams, events and odd answers.

    - `chat`: with `stream: true` sends `chat.chunk [msgid, {delta, seq}]` for each string of
      `metadata.chunks` (default Hel/lo/!), then the result. With `metadata.hold` it then waits
      for `$/cancel [msgid]` or `chat.cancel {id}` and answers `cancelled` with usage so far.
      `metadata.fail` answers `provider_error`. `metadata.raw_chunks` (a list of chunk bodies
      such as `{reasoning_delta}` or `{tool_call: {...}}`) are sent as they are, with `seq`,
      instead of `chunks`; `metadata.result` is merged into the result.
    - `events.subscribe` / `events.unsubscribe`: answer `{kinds}` (followed at once by the event
      `after_subscribe`, if set); `emit()` sends `event`s.
    - `weird`: an error with an unknown code; `break`: sends a request (the daemon never does);
      `garbage`: sends bytes that are not MessagePack.
    - `nope`: `method_not_found`. Anything else: echoes `{method, params}`.
    Every received message is kept in `received`.
    """

    def __init__(self, path: str):
        self.path = path
        self.received: List[Any] = []
        self.conns: List[socket.socket] = []
        self.cancels: Dict[int, threading.Event] = {}
        #: An event to send right behind every `events.subscribe` answer.
        self.after_subscribe: Optional[Dict[str, Any]] = None
        self._lock = threading.Lock()
        self._send_locks: Dict[int, threading.Lock] = {}
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(path)
        self.listener.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.conns.append(conn)
                self._send_locks[id(conn)] = threading.Lock()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def send(self, conn: socket.socket, msg: Any) -> None:
        with self._lock:
            lock = self._send_locks[id(conn)]
        with lock:
            try:
                conn.sendall(msgpack.packb(msg))
            except OSError:
                pass

    def emit(self, body: Dict[str, Any]) -> None:
        with self._lock:
            conns = list(self.conns)
        for c in conns:
            self.send(c, [2, "event", [body]])

    def messages(self, method: str) -> List[Any]:
        with self._lock:
            return [m for m in self.received if len(m) >= 3 and m[0] in (0, 2) and m[-2] == method]

    def cancelled_ids(self) -> List[int]:
        return [m[2][0] for m in self.messages("$/cancel")]

    def _serve(self, conn: socket.socket) -> None:
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            unpacker.feed(data)
            for msg in unpacker:
                with self._lock:
                    self.received.append(msg)
                if msg[0] == 2 and msg[1] == "$/cancel":
                    self._cancel(msg[2][0])
                elif msg[0] == 0:
                    threading.Thread(target=self._request, args=(conn, msg), daemon=True).start()

    def _cancel(self, msgid: int) -> None:
        with self._lock:
            ev = self.cancels.setdefault(msgid, threading.Event())
        ev.set()

    def _request(self, conn: socket.socket, msg: Any) -> None:
        _, msgid, method, params = msg
        arg = params[0] if params else {}
        if method == "chat":
            self._chat(conn, msgid, arg)
        elif method == "chat.cancel":
            self._cancel(arg["id"])
            self.send(conn, [1, msgid, None, {"cancelled": True}])
        elif method in ("events.subscribe", "events.unsubscribe"):
            reply = msgpack.packb([1, msgid, None, {"kinds": arg.get("kinds") or []}])
            if method == "events.subscribe" and self.after_subscribe is not None:
                reply += msgpack.packb([2, "event", [self.after_subscribe]])  # same write as the answer
            with self._lock:
                lock = self._send_locks[id(conn)]
            with lock:
                conn.sendall(reply)
        elif method == "nope":
            self.send(conn, [1, msgid, {"code": "method_not_found", "message": "no", "data": {"method": "nope"}}, None])
        elif method == "weird":
            self.send(conn, [1, msgid, {"code": "teapot", "message": "short and stout", "data": {"a": 1}}, None])
        elif method == "break":
            self.send(conn, [0, 99, "client.method", []])
        elif method == "garbage":
            conn.sendall(b"\xc1\xc1\xc1")
        elif method == "slow":
            time.sleep(arg.get("ms", 0) / 1000)
            self.send(conn, [1, msgid, None, {"slow": arg.get("ms", 0)}])
        else:
            self.send(conn, [1, msgid, None, {"method": method, "params": params}])

    def _chat(self, conn: socket.socket, msgid: int, arg: Dict[str, Any]) -> None:
        meta = arg.get("metadata") or {}
        chunks = meta.get("chunks", ["Hel", "lo", "!"])
        with self._lock:
            cancel = self.cancels.setdefault(msgid, threading.Event())
        if meta.get("fail"):
            err = {
                "code": "provider_error",
                "message": "upstream 500",
                "data": {"provider": "mock", "status": 500, "attempts": 3},
            }
            self.send(conn, [1, msgid, err, None])
            return
        sent = []
        if arg.get("stream") and "raw_chunks" in meta:
            for i, body in enumerate(meta["raw_chunks"]):
                self.send(conn, [2, "chat.chunk", [msgid, {**body, "seq": i}]])
            chunks = [b["delta"] for b in meta["raw_chunks"] if "delta" in b]
        elif arg.get("stream"):
            for i, delta in enumerate(chunks):
                if cancel.is_set():
                    break
                self.send(conn, [2, "chat.chunk", [msgid, {"delta": delta, "seq": i}]])
                sent.append(delta)
        if meta.get("hold"):
            cancel.wait(30)
        usage = {
            "input": 5,
            "output": len(sent) if arg.get("stream") else len(chunks),
            "cached": 0,
            "reasoning": 0,
            "estimated": False,
        }
        if cancel.is_set():
            err = {"code": "cancelled", "message": "the request was cancelled", "data": {"usage": usage, "cost_microusd": 7}}
            self.send(conn, [1, msgid, err, None])
            return
        result = {
            "content": "".join(chunks),
            "finish_reason": "stop",
            "model": arg.get("model"),
            "provider": "mock",
            "usage": usage,
            "cost_microusd": 42,
            **meta.get("result", {}),
        }
        self.send(conn, [1, msgid, None, result])

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    root = tempfile.mkdtemp(prefix="llm-sidecar-fake-")
    server = FakeServer(os.path.join(root, "sock"))
    try:
        yield server
    finally:
        server.close()
        shutil.rmtree(root, ignore_errors=True)
