"""The connection bookkeeping both clients share: calls in flight, subscriptions, routing, shutdown.

`Client` (threads) and `AsyncClient` (asyncio) differ only in how they read, write and wait; the
state below is the same and guarded by one lock, held briefly and never across a wait. Calls
implement `_CallLike` and subscriptions `_SubLike`.
"""

import threading
from typing import Any, Callable, Dict, Generic, List, Mapping, Optional, Protocol, Sequence, Tuple, TypeVar, Union

from . import _wire
from ._types import Params
from .errors import ConnectionClosed, ProtocolError, SidecarError


class _CallLike(Protocol):
    msgid: int
    method: str
    _chunks: Any  # queue.Queue / asyncio.Queue of chunks, or None

    def _resolve(self, error: Any, result: Any) -> None: ...

    def _fail(self, exc: SidecarError) -> None: ...


class _SubLike(Protocol):
    kinds: "frozenset[str]"

    def _deliver(self, event: Dict[str, Any]) -> None: ...

    def _end(self) -> None: ...


CallT = TypeVar("CallT", bound=_CallLike)
SubT = TypeVar("SubT", bound=_SubLike)


class Core(Generic[CallT, SubT]):
    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards everything below
        self._pending: Dict[int, CallT] = {}
        self._subs: List[SubT] = []
        self._ids = _wire.MsgIds()
        self._closed = False
        self._close_reason: Optional[SidecarError] = None

    @property
    def closed(self) -> bool:
        """Whether the connection has ended."""
        return self._closed

    def _register(self, make: Callable[[int], CallT]) -> CallT:
        with self._lock:
            if self._closed:
                reason = self._close_reason.message if self._close_reason else "closed"
                raise ConnectionClosed(f"the connection is closed ({reason})")
            msgid = self._ids.allocate(self._pending)
            call = make(msgid)
            self._pending[msgid] = call
        return call

    def _transmit(self, data: bytes) -> None:
        """Writes bytes to the daemon (raising `ConnectionClosed` when it cannot)."""
        raise NotImplementedError

    def _start(self, method: str, params: Params, make: Callable[[int], CallT]) -> CallT:
        """Records the call `make(msgid)` and sends its request."""
        array = _wire.params_array(params)
        call = self._register(make)
        try:
            self._transmit(_wire.pack_request(call.msgid, method, array))
        except BaseException:
            with self._lock:
                self._pending.pop(call.msgid, None)
            raise
        return call

    def _send_cancel(self, msgid: int) -> None:
        try:
            self._transmit(_wire.pack_cancel(msgid))
        except (ConnectionClosed, OSError, RuntimeError):
            pass  # closing the connection cancels everything anyway

    def _add_subscription(self, sub: SubT) -> None:
        """Registers a subscription before `events.subscribe` is sent, so no event is missed."""
        with self._lock:
            self._subs.append(sub)

    def _remove_subscription(self, sub: SubT) -> Tuple[bool, Optional[List[str]]]:
        """Forgets a subscription. Returns whether to send `events.unsubscribe`, and its kinds
        (None: all of them, it was the last subscription)."""
        with self._lock:
            if sub not in self._subs:
                return False, None
            self._subs.remove(sub)
            drop = _wire.kinds_to_drop(sub.kinds, [s.kinds for s in self._subs])
            return not self._closed and drop != [], drop

    def _dispatch(self, msg: "_wire.Message") -> None:
        """Routes one message from the daemon (called by the reader only)."""
        if isinstance(msg, _wire.Response):
            with self._lock:
                call = self._pending.pop(msg.msgid, None)
            if call is not None:
                call._resolve(msg.error, msg.result)
            return
        event = _wire.event_body(msg)
        if event is not None:
            with self._lock:
                subs = list(self._subs)
            for sub in subs:
                sub._deliver(event)
            return
        msgid = _wire.stream_chunk(msg)
        if msgid is not None:
            with self._lock:
                stream = self._pending.get(msgid)
            if stream is not None and stream._chunks is not None:
                stream._chunks.put_nowait(msg.params[1] if len(msg.params) > 1 else None)

    def _shutdown(self, reason: SidecarError) -> None:
        """Marks the connection closed: waiting calls fail, streams and subscriptions end."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close_reason = reason
            pending, self._pending = list(self._pending.values()), {}
            subs, self._subs = self._subs, []
        for call in pending:
            call._fail(ConnectionClosed(f"{call.method}: {reason.message}"))
        for sub in subs:
            sub._end()


def read_failure(exc: BaseException) -> SidecarError:
    """Why the reader stopped, from what it raised."""
    if isinstance(exc, SidecarError):
        return exc
    if isinstance(exc, ValueError):  # msgpack's malformed-data errors
        return ProtocolError(f"the daemon sent invalid MessagePack: {exc}")
    return ConnectionClosed(f"connection lost: {exc}")


def chat_params(
    model: str,
    messages: Sequence[Mapping[str, Any]],
    stream: bool,
    system: Optional[str],
    max_tokens: Optional[int],
    temperature: Optional[float],
    stop: Union[str, Sequence[str], None],
    metadata: Optional[Mapping[str, Any]],
    extra: Dict[str, Any],
    **options: Any,
) -> Dict[str, Any]:
    """The single map argument of `chat`, without unset fields. `options`: tools, tool_choice,
    parallel_tool_calls, response_format, reasoning."""
    if options.get("tools") is not None:
        options["tools"] = list(options["tools"])
    fields = {
        "model": model,
        "messages": list(messages),
        "system": system,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stop": stop if isinstance(stop, (str, type(None))) else list(stop),
        "stream": True if stream else None,
        **options,
        "metadata": metadata,
    }
    merged = {**fields, **extra}
    return {k: v for k, v in merged.items() if v is not None}
