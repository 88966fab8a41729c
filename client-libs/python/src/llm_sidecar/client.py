"""The blocking client: one Unix-socket connection, usable from many threads at once.

A background reader thread decodes every message and routes it: responses to the waiting call by
msgid (answers arrive in completion order), stream notifications `[msgid, payload]` to that call's
`Stream`, `event` notifications to the matching `Subscription`s. When the connection ends, every
waiting call fails with `ConnectionClosed` and every stream and subscription ends.
"""

import queue
import socket
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Generic, Iterator, Literal, Mapping, Optional, Sequence, TypeVar, Union, cast, overload

from . import _wire
from ._core import Core, chat_params, read_failure
from ._methods import SyncMethods
from ._types import (
    ChatChunk,
    ChatDelta,
    ChatMessage,
    ChatResult,
    ChatTool,
    Event,
    HelloResult,
    Params,
    Reasoning,
    ResponseFormat,
    ToolChoice,
    StreamStatus,
    chat_delta,
    is_text_chunk,
    partial_result,
)
from .discovery import PathLike, socket_path
from .autostart import Autostart, ensure_daemon
from .autostart import options as autostart_options
from .errors import CallTimeout, Cancelled, ConnectionClosed, DaemonNotRunning, SidecarError, error_from_wire
from .timeouts import Deadline, Limit, Timeout, TimeoutLike, as_timeout, pick

T = TypeVar("T")
C = TypeVar("C")
SS = TypeVar("SS", bound="Stream[Any, Any]")
X = TypeVar("X")

_END = object()
#: What a stream view's `pick` returns for a chunk it leaves out.
_SKIP: Any = object()
#: How long closing a stream early waits for the daemon's `cancelled` answer (seconds).
CANCEL_WAIT = 5.0


class PendingCall(Generic[T]):
    """A request sent and not necessarily answered yet."""

    def __init__(self, client: "Client", msgid: int, method: str, streaming: bool = False):
        self._client = client
        self.msgid = msgid
        self.method = method
        self._future: "Future[Any]" = Future()
        # Stream chunks then _END, for streaming calls (filled by the reader thread).
        self._chunks: "Optional[queue.Queue[Any]]" = queue.Queue() if streaming else None
        self._cancel_sent = False
        self._deadline = Deadline(Timeout(), method, msgid)

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: TimeoutLike = None) -> T:
        """Waits for the answer; raises the daemon's error as its `SidecarError` subclass.

        `timeout` (seconds or a `Timeout`; its `total` counts from when the request was sent):
        when it expires, the request is cancelled on the daemon (`$/cancel`) and `CallTimeout`
        (a `TimeoutError`) is raised. An interrupt (Ctrl-C) cancels it too and propagates.
        """
        limits = as_timeout(timeout)
        deadline = Deadline(limits, self.method, self.msgid, self._deadline.started) if limits.total is not None else None
        try:
            return cast(T, self._future.result(deadline.remaining() if deadline else None))
        except FutureTimeout:
            self.cancel()
            assert deadline is not None
            raise deadline.expired("total") from None
        except (KeyboardInterrupt, SystemExit):
            self.cancel()
            raise

    def cancel(self) -> None:
        """Asks the daemon to cancel the request (`$/cancel`); its answer becomes `Cancelled`."""
        if not self._future.done() and not self._cancel_sent:
            self._cancel_sent = True
            self._client._send_cancel(self.msgid)

    # Called by the reader thread.
    def _resolve(self, error: Any, result: Any) -> None:
        if error is not None:
            self._future.set_exception(error_from_wire(error))
        else:
            self._future.set_result(result)
        if self._chunks is not None:
            self._chunks.put(_END)

    def _fail(self, exc: SidecarError) -> None:
        if not self._future.done():
            self._future.set_exception(exc)
        if self._chunks is not None:
            self._chunks.put(_END)


class Stream(Generic[C, T]):
    """A streaming call: iterate for its chunks, then read `.result` (set when the stream ends).

    Time limits (`Timeout`: total, first chunk, between chunks) apply to the iteration: when one
    expires the call is cancelled on the daemon and `CallTimeout` is raised. Iteration raises
    the call's error (e.g. `Cancelled` after `cancel()`). Leaving a `for` loop early, `close()`,
    or leaving a `with` block before the end cancels the request on the daemon (`$/cancel`) and
    waits briefly for its answer, so that `.result` then holds what the cancelled call
    produced and was billed (`usage`, `cost_microusd`, content so far) and `.status` is
    `"cancelled"`. Chunks are buffered, so a slow reader loses nothing.
    """

    def __init__(self, call: "PendingCall[T]", timeout: TimeoutLike = None):
        if call._chunks is None:
            raise ValueError("not a streaming call")
        self._call = call
        self._chunks: "queue.Queue[Any]" = call._chunks
        self._deadline = Deadline(as_timeout(timeout), call.method, call.msgid, call._deadline.started)
        self.result: Optional[T] = None
        #: `"open"` while it runs, then `"ok"`, `"cancelled"` (also after a timeout) or `"error"`.
        self.status: StreamStatus = "open"
        #: The call's error once it ended with one (`Cancelled`, `CallTimeout`, ...).
        self.error: Optional[SidecarError] = None
        self._finished = False
        self._seen_chunk = False
        self._peeked: Any = _END
        self._has_peeked = False
        call._future.add_done_callback(self._on_answer)

    @property
    def msgid(self) -> int:
        return self._call.msgid

    def _on_answer(self, future: "Future[Any]") -> None:
        """The call's answer arrived (reader thread): record how it ended. A cancelled call's
        partial result (what it produced and was billed) becomes `.result` at once."""
        exc = future.exception()
        if exc is None:
            return
        if isinstance(exc, SidecarError):
            if self.error is None or not isinstance(self.error, CallTimeout):
                self.error = exc
            if isinstance(exc, Cancelled):
                self.status = "cancelled"
                self.result = cast(T, partial_result(exc.data))
                return
        self.status = "error"

    def _next(self) -> Any:
        """The next queued item, within the time limits (raising `CallTimeout`)."""
        if self._has_peeked:
            self._has_peeked = False
            item, self._peeked = self._peeked, _END
            return item
        wait, limit = self._deadline.next_wait(first=not self._seen_chunk)
        try:
            item = self._chunks.get(timeout=wait)
        except queue.Empty:
            raise self._expire(limit) from None
        except (KeyboardInterrupt, SystemExit):
            self._finished = True
            self._call.cancel()
            raise
        if item is not _END:
            self._seen_chunk = True
        return item

    def _expire(self, limit: Limit) -> CallTimeout:
        err = self._deadline.expired(limit)
        self._finished = True
        self.error = err
        self._call.cancel()
        return err

    def _open(self) -> None:
        """Waits for the first chunk or the answer (within the first-chunk and total limits), so
        a refusal before any output is raised here, by the call that made the stream."""
        item = self._next()
        if item is _END and self._call._future.exception() is not None:
            self._finished = True
            self._call.result()  # raises the error
        self._peeked, self._has_peeked = item, True

    def __iter__(self) -> Iterator[C]:
        return self._iterate(lambda chunk: cast(C, chunk))

    def _iterate(self, pick: Callable[[Any], X]) -> Iterator[X]:
        """The chunks as `pick` maps them, leaving out those it maps to `_SKIP`. Every view of
        a stream reads the same queue, so each chunk is seen once."""
        try:
            while not self._finished:
                item = self._next()
                if item is _END:
                    self._finished = True
                    self._finish()
                    return
                value = pick(item)
                if value is not _SKIP:
                    yield value
        finally:
            if not self._finished:
                self.close()

    def _finish(self) -> None:
        """The answer is there: the result, or its error raised."""
        try:
            self.result = self._call.result()
            self.status = "ok"
        except Cancelled:
            self.status = "cancelled"
            raise
        except SidecarError:
            self.status = "error"
            raise

    def wait(self, timeout: TimeoutLike = None) -> T:
        """Skips the remaining chunks and returns the final result (raising the call's error).

        `timeout` defaults to the stream's total limit."""
        limits = as_timeout(timeout) if timeout is not None else Timeout(total=self._deadline.limits.total)
        try:
            value = self._call.result(limits)
        except CallTimeout as e:
            self._finished = True
            self.error = e
            raise
        self._finished = True
        self.result = value
        self.status = "ok"
        return value

    def cancel(self) -> None:
        """Cancels the request on the daemon; iteration then ends with `Cancelled`, and
        `.result` gets the cancelled call's partial result once its answer arrives."""
        self._call.cancel()

    def close(self, wait: float = CANCEL_WAIT) -> None:
        """Cancels the request if it has not finished and waits up to `wait` seconds for the
        daemon's answer, so `.result` holds the usage billed; the stream yields nothing more."""
        if not self._finished:
            self._finished = True
            self.cancel()
            if wait > 0:
                try:
                    if self._call._future.exception(timeout=wait) is None:
                        # It had finished before the cancel reached the daemon.
                        self.result = self._call._future.result()
                        self.status = "ok"
                except FutureTimeout:
                    pass

    def __enter__(self) -> "Stream[C, T]":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ChatStream(Stream[ChatChunk, ChatResult]):
    """A streaming `chat` call. Iterating yields the text chunks `{delta, seq}` only (as before
    tools and reasoning existed); `deltas()` yields every chunk as a typed `ChatDelta`
    (`TextDelta`, `ReasoningDelta`, `ToolCallDelta`; match on `.kind`). Either way `.result`
    then holds the assembled answer: content, message, tool_calls (arguments parsed), reasoning,
    usage; after a cancel (a `break`, `close()`, a timeout) the partial answer with the usage
    billed so far. Both read the same chunks: use one of them per stream.
    """

    def __iter__(self) -> Iterator[ChatChunk]:
        return self._iterate(lambda chunk: cast(ChatChunk, chunk) if is_text_chunk(chunk) else _SKIP)

    def deltas(self) -> Iterator[ChatDelta]:
        """Every chunk as a typed delta, in order (chunks of unknown kinds are left out)."""
        return self._iterate(lambda chunk: chat_delta(chunk) or _SKIP)

    def __enter__(self) -> "ChatStream":
        return self


class Subscription:
    """Daemon events of some kinds: iterate over them, `get()` one, or pass a callback.

    `close()` (or leaving a `with` block) unsubscribes kinds no other subscription still needs.
    """

    def __init__(self, client: "Client", kinds: "frozenset[str]", callback: Optional[Callable[[Event], None]]):
        self._client = client
        self.kinds = kinds
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self.closed = False
        self._thread: Optional[threading.Thread] = None
        if callback is not None:
            self._thread = threading.Thread(target=self._run_callback, args=(callback,), daemon=True)
            self._thread.start()

    def _run_callback(self, callback: Callable[[Event], None]) -> None:
        for event in self:
            callback(event)

    def get(self, timeout: Optional[float] = None) -> Event:
        """The next event; `queue.Empty` after `timeout`, `ConnectionClosed` once closed."""
        item = self._queue.get(timeout=timeout)
        if item is _END:
            self._queue.put(_END)
            raise ConnectionClosed("subscription closed")
        return cast(Event, item)

    def __iter__(self) -> Iterator[Event]:
        while True:
            item = self._queue.get()
            if item is _END:
                self._queue.put(_END)
                return
            yield cast(Event, item)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._client._drop_subscription(self)
            self._queue.put(_END)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _deliver(self, event: Event) -> None:
        if _wire.match_kinds(self.kinds, event.get("kind")):
            self._queue.put(event)

    def _end(self) -> None:
        self.closed = True
        self._queue.put(_END)


class Client(SyncMethods, Core[PendingCall[Any], Subscription]):
    """A blocking connection to the daemon; thread-safe, many calls may run at once.

    >>> with Client(app="my-app") as c:
    ...     print(c.info()["version"])
    """

    def __init__(
        self,
        path: Optional[PathLike] = None,
        *,
        app: Optional[str] = None,
        app_version: Optional[str] = None,
        timeout: TimeoutLike = None,
        connect_timeout: float = 5.0,
        autostart: Union[bool, Autostart] = False,
        binary: Optional[PathLike] = None,
    ):
        """Connects at once (raising `DaemonNotRunning` if nothing listens) and, given `app`,
        names the app with `daemon.hello`.

        `timeout`: the default limit of every call and stream (seconds for the whole call, or a
        `Timeout` with `total` / `first_chunk` / `chunk`); a call's own `timeout=` replaces it.
        `autostart=True` (or an `Autostart` with more settings): when no daemon answers, start
        one (`binary`, else `$LLM_SIDECAR_BIN`, next to this package, `PATH`) and connect to it;
        several apps doing so at once start exactly one (see `llm_sidecar.autostart`)."""
        Core.__init__(self)
        self.path = socket_path(path)
        self.timeout = timeout
        as_timeout(timeout)  # checks it
        self._send_lock = threading.Lock()
        self.hello_result: Optional[HelloResult] = None
        #: The pid of the daemon this client started (autostart), or None.
        self.started_pid: Optional[int] = None
        start = autostart_options(autostart, binary)
        try:
            self._sock = self._connect(connect_timeout)
        except DaemonNotRunning:
            if start is None:
                raise
            self.started_pid = ensure_daemon(self.path, start)
            self._sock = self._connect(connect_timeout)
        self._reader = threading.Thread(target=self._read_loop, name="llm-sidecar-reader", daemon=True)
        self._reader.start()
        if app is not None:
            try:
                self.hello_result = self.hello(app, version=app_version)
            except BaseException:
                self.close()
                raise

    def _connect(self, connect_timeout: float) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(connect_timeout)
            sock.connect(self.path)
            sock.settimeout(None)
        except OSError as e:
            sock.close()
            raise _wire.connect_error(self.path, e) from e
        return sock

    @classmethod
    def connect(cls, path: Optional[PathLike] = None, **kwargs: Any) -> "Client":
        """Same as `Client(path, ...)`."""
        return cls(path, **kwargs)

    # ---- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the connection; the daemon cancels whatever still runs on it."""
        self._shutdown(ConnectionClosed("the client closed the connection"))
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout=5)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- sending ---------------------------------------------------------------------------

    def _transmit(self, data: bytes) -> None:
        try:
            with self._send_lock:
                self._sock.sendall(data)
        except OSError as e:
            self._shutdown(ConnectionClosed(f"connection lost: {e}"))
            raise ConnectionClosed(f"connection to the daemon lost: {e}") from e

    def start(self, method: str, params: Params = None, *, streaming: bool = False) -> PendingCall[Any]:
        """Sends a request without waiting; `.result()` waits for it, `.cancel()` cancels it.

        With `streaming=True` the notifications `[msgid, payload]` the daemon sends for this
        request are kept for a `Stream` (see `stream()`)."""
        return self._start(method, params, lambda msgid: PendingCall(self, msgid, method, streaming))

    def call(self, method: str, params: Params = None, *, timeout: TimeoutLike = None) -> Any:
        """Calls any method and returns its result; raises its error as a `SidecarError` subclass.

        `params`: a map is sent as the single map argument, a list as the params array itself.
        `timeout` (seconds or a `Timeout`, default the client's; only its `total` applies)
        cancels the call when it expires and raises `CallTimeout`.
        """
        return self.start(method, params).result(Timeout(total=pick(timeout, self.timeout).total))

    def stream(self, method: str, params: Params = None, *, timeout: TimeoutLike = None) -> Stream[Any, Any]:
        """Starts a streaming request; its notifications' payloads are the chunks. Returns at once
        (errors come from the iteration; `chat(stream=True)` instead waits for the first chunk).
        `timeout`: as for `chat`."""
        return Stream(self.start(method, params, streaming=True), pick(timeout, self.timeout))

    def _open_stream(self, stream: SS) -> SS:
        try:
            stream._open()
        except BaseException:
            stream._call.cancel()
            raise
        return stream

    # ---- chat ------------------------------------------------------------------------------

    @overload
    def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        stream: "Literal[True]",
        system: Optional[str] = None,
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        stop: Union[str, Sequence[str], None] = None,
        tools: Optional[Sequence[ChatTool]] = None,
        tool_choice: Optional[ToolChoice] = None,
        parallel_tool_calls: Optional[bool] = None,
        response_format: Optional[ResponseFormat] = None,
        reasoning: Optional[Reasoning] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        timeout: TimeoutLike = None,
        **extra: Any,
    ) -> ChatStream: ...

    @overload
    def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        stream: "Literal[False]" = False,
        system: Optional[str] = None,
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        stop: Union[str, Sequence[str], None] = None,
        tools: Optional[Sequence[ChatTool]] = None,
        tool_choice: Optional[ToolChoice] = None,
        parallel_tool_calls: Optional[bool] = None,
        response_format: Optional[ResponseFormat] = None,
        reasoning: Optional[Reasoning] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        timeout: TimeoutLike = None,
        **extra: Any,
    ) -> ChatResult: ...

    def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        stream: bool = False,
        system: Optional[str] = None,
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        stop: Union[str, Sequence[str], None] = None,
        tools: Optional[Sequence[ChatTool]] = None,
        tool_choice: Optional[ToolChoice] = None,
        parallel_tool_calls: Optional[bool] = None,
        response_format: Optional[ResponseFormat] = None,
        reasoning: Optional[Reasoning] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        timeout: TimeoutLike = None,
        **extra: Any,
    ) -> "Union[ChatResult, ChatStream]":
        """`chat`: a completion via a route, alias or `provider/model`.

        `tools`, `tool_choice`, `parallel_tool_calls`, `response_format` and `reasoning` are
        passed through (see `ChatTool`, `ToolChoice`, `ResponseFormat`, `Reasoning`).
        `stream=True` returns a `ChatStream` once the first chunk (or the answer) arrived, so a
        refusal (`QuotaExceeded`, `TierRequired`, `RateLimited`, `InvalidParams`, ...) is raised
        here: iterate over its `{delta, seq}` text chunks (or `.deltas()` for typed text,
        reasoning and tool-call deltas), then read `.result` (content, message, tool_calls,
        usage, cost_microusd, ...). Otherwise returns the result.

        `timeout` (default the client's): seconds for the whole call, or a `Timeout` with
        `total`, `first_chunk` and `chunk` (the longest gap between chunks) limits. When one
        expires the call is cancelled on the daemon and `CallTimeout` is raised (by `chat` or
        by the iteration).
        """
        params = chat_params(
            model,
            messages,
            stream,
            system,
            max_tokens,
            temperature,
            stop,
            metadata,
            extra,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            response_format=response_format,
            reasoning=reasoning,
        )
        if stream:
            return self._open_stream(ChatStream(self.start("chat", params, streaming=True), pick(timeout, self.timeout)))
        return cast(ChatResult, self.call("chat", params, timeout=timeout))

    # ---- events ----------------------------------------------------------------------------

    def subscribe(self, kinds: Sequence[str] = ("*",), callback: Optional[Callable[[Event], None]] = None) -> Subscription:
        """Subscribes to daemon events of these kinds (`"*"` for all).

        Returns a `Subscription` to iterate over (or `get()` from); with `callback`, a thread
        of the subscription calls it for each event instead. Raises `InvalidParams` for an
        unknown kind.
        """
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        # Registered before asking, so an event sent right after the answer is not missed.
        sub = Subscription(self, frozenset(kinds), callback)
        self._add_subscription(sub)
        try:
            answered = self.events_subscribe(kinds)
        except BaseException:
            self._remove_subscription(sub)
            sub._end()
            raise
        sub.kinds = _wire.subscribed_kinds(kinds, answered)
        return sub

    def _drop_subscription(self, sub: Subscription) -> None:
        send, drop = self._remove_subscription(sub)
        if not send:
            return
        try:
            self.events_unsubscribe(kinds=drop)
        except ConnectionClosed:
            pass

    # ---- receiving -------------------------------------------------------------------------

    def _read_loop(self) -> None:
        unpacker = _wire.unpacker()
        reason: SidecarError = ConnectionClosed("the daemon closed the connection")
        try:
            while True:
                data = self._sock.recv(_wire.READ_SIZE)
                if not data:
                    break
                unpacker.feed(data)
                for msg in unpacker:
                    self._dispatch(_wire.parse(msg))
        except (SidecarError, ValueError, OSError) as e:
            reason = read_failure(e)
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._shutdown(reason)


def connect(path: Optional[PathLike] = None, **kwargs: Any) -> Client:
    """Connects to the daemon (see `Client`)."""
    return Client(path, **kwargs)
