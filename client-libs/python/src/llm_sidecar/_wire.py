"""MessagePack-RPC messages as the daemon speaks them (docs/protocol.md §2-3), shared by both clients.

Pure functions and small state holders only: no sockets here.
"""

from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Union, cast

import msgpack  # type: ignore[import-untyped]

from ._types import Params
from .errors import DaemonNotRunning, ProtocolError, SidecarConnectionError

REQUEST, RESPONSE, NOTIFICATION = 0, 1, 2
CANCEL = "$/cancel"
MAX_MSGID = 2**32 - 1
#: The daemon closes a connection on frames over 16 MiB; accept a bit more than that from it.
MAX_BUFFER = 64 * 1024 * 1024
READ_SIZE = 256 * 1024
#: Exceptions of `connect()` that mean nothing is listening there.
NOT_RUNNING = (FileNotFoundError, ConnectionRefusedError, NotADirectoryError)


def params_array(params: Params) -> List[Any]:
    """The params array of a request: a map becomes `[map]`, a sequence is sent as is, None is `[]`."""
    if params is None:
        return []
    if isinstance(params, Mapping):
        return [dict(params)]
    if isinstance(params, (list, tuple)):
        return list(params)
    raise TypeError(f"params must be a mapping, a list or None, not {type(params).__name__}")


def pack_request(msgid: int, method: str, params: Params) -> bytes:
    return cast(bytes, msgpack.packb([REQUEST, msgid, method, params_array(params)], use_bin_type=True))


def pack_notification(method: str, params: Sequence[Any]) -> bytes:
    return cast(bytes, msgpack.packb([NOTIFICATION, method, list(params)], use_bin_type=True))


def pack_cancel(msgid: int) -> bytes:
    return pack_notification(CANCEL, [msgid])


def unpacker() -> "msgpack.Unpacker":
    """A streaming decoder: messages are back to back with no length prefix."""
    return msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=MAX_BUFFER)


class Response(NamedTuple):
    msgid: int
    error: Any
    result: Any


class Notification(NamedTuple):
    method: str
    params: List[Any]


Message = Union[Response, Notification]


def parse(msg: Any) -> Message:
    """Classifies one decoded value. The daemon never sends requests, so those are protocol errors."""
    if isinstance(msg, (list, tuple)):
        if len(msg) == 4 and msg[0] == RESPONSE and isinstance(msg[1], int):
            return Response(msg[1], msg[2], msg[3])
        if len(msg) == 3 and msg[0] == NOTIFICATION and isinstance(msg[1], str):
            params = msg[2] if isinstance(msg[2], list) else [msg[2]]
            return Notification(msg[1], params)
    raise ProtocolError(f"unexpected message from the daemon: {msg!r:.200}")


def stream_chunk(n: Notification) -> Optional[int]:
    """The msgid a streaming notification belongs to (`[msgid, payload]`), or None."""
    if len(n.params) >= 1 and isinstance(n.params[0], int) and not isinstance(n.params[0], bool):
        return n.params[0]
    return None


def event_body(n: Notification) -> Optional[Dict[str, Any]]:
    """The `{kind, ...}` map of an `event` notification, or None."""
    if n.method == "event" and n.params and isinstance(n.params[0], dict):
        return n.params[0]
    return None


class MsgIds:
    """Allocates u32 msgids, skipping those still in use (the daemon rejects reused live ids)."""

    def __init__(self) -> None:
        self._next = 1

    def allocate(self, in_use: Mapping[int, Any]) -> int:
        for _ in range(len(in_use) + 1):
            msgid = self._next
            self._next = 1 if self._next >= MAX_MSGID else self._next + 1
            if msgid not in in_use:
                return msgid
        raise SidecarConnectionError("no free msgid")  # unreachable: at most len(in_use) are taken


def connect_error(path: str, err: OSError) -> SidecarConnectionError:
    """A clear error for a failed connect, telling the user what to do."""
    if isinstance(err, NOT_RUNNING):
        return DaemonNotRunning(
            f"no llm-sidecar daemon is listening on {path} ({err.strerror or err}); "
            "start it with `llm-sidecar serve` or enable its service",
            {"path": path},
        )
    return SidecarConnectionError(f"cannot connect to the llm-sidecar daemon at {path}: {err}", {"path": path})


def match_kinds(wanted: "frozenset[str]", kind: Any) -> bool:
    """Whether a subscription for `wanted` kinds ("*" = all) receives an event of `kind`."""
    return "*" in wanted or kind in wanted or kind == "events.lagged"


def subscribed_kinds(requested: Sequence[str], answered: Mapping[str, Any]) -> "frozenset[str]":
    """The concrete kinds a subscription holds: `"*"` expands to what the daemon answered."""
    if "*" in requested:
        kinds = answered.get("kinds") if isinstance(answered, Mapping) else None
        return frozenset(kinds or []) | {"*"}
    return frozenset(requested)


def kinds_to_drop(mine: "frozenset[str]", others: Sequence["frozenset[str]"]) -> Optional[List[str]]:
    """Kinds to unsubscribe when a subscription closes: None means all of them (it was the last
    one), an empty list means none (the other subscriptions still need them all)."""
    if not others:
        return None
    keep = set().union(*others)
    if "*" in keep:
        return []
    return sorted(k for k in mine if k != "*" and k not in keep)
