"""Starting the daemon when no daemon answers: `Client(autostart=True)` / `AsyncClient(autostart=True)`.

1. The binary: `Autostart.binary` (or `Client(binary=...)`), else `$LLM_SIDECAR_BIN`, else the
   `llm-sidecar` next to this package (the scripts dir of its environment, where the wheel built
   from `bundle/` installs it), else the first one on `PATH`.
2. A lock: an exclusive `flock` on `<socket>.autostart.lock` (next to the socket, in its 0700
   directory), so that of several apps starting at once exactly one starts a daemon; the others
   wait for the lock, then find the socket answering and start nothing.
3. The daemon: `llm-sidecar --socket <socket> serve [--data-dir D] [--config F]` in a new
   session (it outlives the app), stdin `/dev/null`, stdout and stderr appended to
   `<data dir>/daemon.log` (the data dir being `Autostart.data_dir`, else the daemon's default,
   `$XDG_DATA_HOME/llm-sidecar`, i.e. `~/.local/share/llm-sidecar`; on macOS
   `~/Library/Application Support/llm-sidecar`).
4. The wait: until the socket accepts connections (at most `Autostart.timeout` seconds); a
   daemon that exits or does not come up raises `DaemonStartFailed` naming the log file and
   quoting its last lines.
"""

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .discovery import PathLike
from .errors import DaemonStartFailed

BINARY_NAME = "llm-sidecar"
LOG_NAME = "daemon.log"


@dataclass(frozen=True)
class Autostart:
    """How to start the daemon when none answers (see the module's doc)."""

    #: The `llm-sidecar` executable; None: `$LLM_SIDECAR_BIN`, next to this package, `PATH`.
    binary: Optional[PathLike] = None
    #: `serve --data-dir`; None: the daemon's default (and the log goes there).
    data_dir: Optional[PathLike] = None
    #: `--config FILE`; None: the daemon's default config file.
    config: Optional[PathLike] = None
    #: More arguments of `serve` (e.g. `["--http", "127.0.0.1:0"]`).
    args: Sequence[str] = ()
    #: Environment variables added to (or, as None, removed from) this process's for the daemon.
    env: Mapping[str, Optional[str]] = field(default_factory=dict)
    #: Seconds to wait for the socket (and for another app's start to finish).
    timeout: float = 15.0
    #: Where the daemon's output goes; None: `daemon.log` in the data dir.
    log_file: Optional[PathLike] = None


def candidates(explicit: Optional[PathLike] = None, env: Optional[Mapping[str, str]] = None) -> List[Tuple[str, str]]:
    """Where the binary is looked for, in order: `(where, path)`."""
    env = os.environ if env is None else env
    out: List[Tuple[str, str]] = []
    if explicit is not None and os.fspath(explicit):
        return [("binary=", os.fspath(explicit))]
    if env.get("LLM_SIDECAR_BIN"):
        out.append(("$LLM_SIDECAR_BIN", env["LLM_SIDECAR_BIN"]))
    dirs = []
    for scheme in (None, f"{os.name}_user"):
        try:
            d = sysconfig.get_path("scripts") if scheme is None else sysconfig.get_path("scripts", scheme)
        except KeyError:
            continue
        if d:
            dirs.append(d)
    dirs.append(os.path.dirname(sys.executable))
    seen = set()
    for d in dirs:
        p = os.path.join(d, BINARY_NAME)
        if p not in seen:
            seen.add(p)
            out.append(("next to the package", p))
    found = shutil.which(BINARY_NAME, path=env.get("PATH"))
    if found:
        out.append(("PATH", found))
    return out


def find_binary(explicit: Optional[PathLike] = None, env: Optional[Mapping[str, str]] = None) -> str:
    """The daemon executable to start (raising `DaemonStartFailed` listing where it looked)."""
    tried = candidates(explicit, env)
    for _, path in tried:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    looked = "; ".join(f"{where}: {path}" for where, path in tried) or "nowhere"
    if explicit is None:
        looked += "; PATH: not found"
    raise DaemonStartFailed(
        f"cannot start the llm-sidecar daemon: no `{BINARY_NAME}` executable found (looked at {looked}); "
        "install it (`pip install` the llm-sidecar wheel that carries it, or `cargo install --path .`) "
        "or pass binary= / set LLM_SIDECAR_BIN",
        {"looked": [p for _, p in tried]},
    )


def default_data_dir(env: Optional[Mapping[str, str]] = None) -> str:
    """The daemon's default data dir (Rust's `dirs::data_dir()` + `llm-sidecar`)."""
    env = os.environ if env is None else env
    home = env.get("HOME") or os.path.expanduser("~")
    if sys.platform == "darwin":
        return os.path.join(home, "Library", "Application Support", "llm-sidecar")
    xdg = env.get("XDG_DATA_HOME")
    base = xdg if xdg and os.path.isabs(xdg) else os.path.join(home, ".local", "share")
    return os.path.join(base, "llm-sidecar")


def answers(path: str) -> bool:
    """Whether something accepts connections on the socket."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1.0)
            s.connect(path)
        return True
    except OSError:
        return False


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _lock(lock_path: str, deadline: float) -> int:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise DaemonStartFailed(
                    f"another process held the autostart lock {lock_path} for too long; is a daemon starting?",
                    {"lock": lock_path},
                ) from None
            time.sleep(0.02)


def _reap(proc: "subprocess.Popen[bytes]") -> None:
    """Collects the daemon's exit status when it ends, so it leaves no zombie behind."""
    threading.Thread(target=proc.wait, name="llm-sidecar-reaper", daemon=True).start()


def ensure_daemon(sock: str, options: Autostart) -> Optional[int]:
    """Makes sure a daemon answers on `sock`, starting one if none does (see the module's
    doc). Returns the pid of the daemon it started, or None when one was already answering."""
    if answers(sock):
        return None
    deadline = time.monotonic() + options.timeout
    sock_dir = os.path.dirname(os.path.abspath(sock))
    os.makedirs(sock_dir, mode=0o700, exist_ok=True)
    fd = _lock(sock + ".autostart.lock", deadline)
    try:
        if answers(sock):
            return None  # another app started it while we waited for the lock
        binary = find_binary(options.binary)
        env: Dict[str, str] = dict(os.environ)
        for k, v in options.env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        data_dir = os.fspath(options.data_dir) if options.data_dir is not None else default_data_dir(env)
        log_path = os.fspath(options.log_file) if options.log_file is not None else os.path.join(data_dir, LOG_NAME)
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), mode=0o700, exist_ok=True)
        argv = [binary, "--socket", sock]
        if options.config is not None:
            argv += ["--config", os.fspath(options.config)]
        argv.append("serve")
        if options.data_dir is not None:
            argv += ["--data-dir", data_dir]
        argv += list(options.args)
        with open(log_path, "ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            log.write(f"--- {stamp} started by {sys.argv[0] or 'python'} (pid {os.getpid()}): {' '.join(argv)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    argv,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                    close_fds=True,
                    cwd="/",
                )
            except OSError as e:
                raise DaemonStartFailed(f"cannot run {binary}: {e}", {"binary": binary, "log": log_path}) from e
        _reap(proc)
        while not answers(sock):
            code = proc.poll()
            if code is not None:
                if answers(sock):
                    break  # e.g. a service manager's daemon won the socket
                raise DaemonStartFailed(
                    f"the llm-sidecar daemon ({binary}) exited with status {code} before listening on {sock}; "
                    f"its log {log_path} ends with:\n{_tail(log_path)}",
                    {"binary": binary, "log": log_path, "status": code, "socket": sock},
                )
            if time.monotonic() > deadline:
                raise DaemonStartFailed(
                    f"the llm-sidecar daemon (pid {proc.pid}) did not listen on {sock} within {options.timeout} s; "
                    f"see its log {log_path}:\n{_tail(log_path)}",
                    {"binary": binary, "log": log_path, "pid": proc.pid, "socket": sock},
                )
            time.sleep(0.01)
        return proc.pid
    finally:
        os.close(fd)  # releases the lock


def options(autostart: Union[bool, Autostart, None], binary: Optional[PathLike]) -> Optional[Autostart]:
    """The autostart settings of a client's `autostart=` and `binary=` arguments (None: off)."""
    if not autostart:
        return None
    opts = autostart if isinstance(autostart, Autostart) else Autostart()
    if binary is not None:
        opts = Autostart(**{**opts.__dict__, "binary": binary})
    return opts
