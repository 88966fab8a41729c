"""Where the daemon's socket is: the same rules the daemon uses (docs/protocol.md §1).

1. an explicit path; 2. `$LLM_SIDECAR_SOCK`; 3. `$XDG_RUNTIME_DIR/llm-sidecar/sock`;
4. `<temp dir>/llm-sidecar-<uid>/sock`, the temp dir being `$TMPDIR` or `/tmp` (as Rust's
`std::env::temp_dir`). Empty variables count as unset.
"""

import os
from typing import Mapping, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


def socket_path(explicit: Optional[PathLike] = None, env: Optional[Mapping[str, str]] = None) -> str:
    """The socket path a client should connect to."""
    if explicit is not None and os.fspath(explicit) != "":
        return os.fspath(explicit)
    env = os.environ if env is None else env
    sock = env.get("LLM_SIDECAR_SOCK")
    if sock:
        return sock
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "llm-sidecar", "sock")
    tmp = env.get("TMPDIR") or "/tmp"
    return os.path.join(tmp, f"llm-sidecar-{os.getuid()}", "sock")
