"""The asyncio client: one Unix-socket connection, many concurrent calls from many tasks.

A reader task decodes every message and routes it: responses to the waiting call by msgid
(answers arrive in completion order), stream notifications `[msgid, payload]` to that call's
`AsyncStream`, `event` notifications to the matching `AsyncSubscription`s. Cancelling the task
that awaits a call (e.g. `asyncio.wait_for` timing out) sends `$/cancel` for it. When the
connection ends, every waiting call fails with `ConnectionClosed`.
"""

import asyncio
import inspect
import time
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Generic,
    Literal,
    Mapping,
    Optional,
    Sequence,
    TypeVar,
    Union,
    cast,
    overload,
)

from . import _wire
from ._core import Core, chat_params, read_failure
from ._methods import AsyncMethods
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
AS = TypeVar("AS", bound="AsyncStream[Any, Any]")
X = TypeVar("X")

_END = object()
#: What a stream view's `pick` returns for a chunk it leaves out.
_SKIP: Any = object()
#: How long `aclose()` of a stream waits for the daemon's `cancelled` answer (seconds).
CANCEL_WAIT = 5.0
EventCallback = Callable[[Event], Union[None, Awaitable[None]]]


class AsyncPendingCall(Generic[T]):
    """A request sent and not necessarily answered yet; `await` it for the result."""

    def __init__(self, client: "AsyncClient", msgid: int, method: str, streaming: bool = False):
        self._client = client
        self.msgid = msgid
        self.method = method
        self._future: "asyncio.Future[Any]" = asyncio.get_running_loop().create_future()
        self._chunks: "Optional[asyncio.Queue[Any]]" = asyncio.Queue() if streaming else None
        self._cancel_sent = False
        self._started = time.monotonic()

    def done(self) -> bool:
        return self._future.done()

    def __await__(self) -> Generator[Any, None, T]:
        return self._wait().__await__()

    async def _wait(self) -> T:
        try:
            return cast(T, await self._future)
        except asyncio.CancelledError:
            self.cancel()
            raise

    def cancel(self) -> None:
        """Asks the daemon to cancel the request (`$/cancel`); its answer becomes `Cancelled`."""
        if (not self._future.done() or self._future.cancelled()) and not self._cancel_sent:
            self._cancel_sent = True
            self._client._send_cancel(self.msgid)

    # Called by the reader task.
    def _resolve(self, error: Any, result: Any) -> None:
        if not self._future.done():
            if error is not None:
                self._future.set_exception(error_from_wire(error))
            else:
                self._future.set_result(result)
        if self._chunks is not None:
            self._chunks.put_nowait(_END)

    def _fail(self, exc: SidecarError) -> None:
        if not self._future.done():
            self._future.set_exception(exc)
        if self._chunks is not None:
            self._chunks.put_nowait(_END)


class AsyncStream(Generic[C, T]):
    """A streaming call: `async for` its chunks, then read `.result` (set when it ends).

    Time limits (`Timeout`: total, first chunk, between chunks) apply to the iteration: when one
    expires the call is cancelled on the daemon and `CallTimeout` is raised. Iteration raises
    the call's error (e.g. `Cancelled` after `cancel()`). `cancel()`, `close()`, `aclose()`,
    leaving an `async with` block early, or breaking out of `async for` (once asyncio finalizes
    the iterator) sends `$/cancel`; when the daemon's `cancelled` answer arrives `.result` holds
    what the call produced and was billed (`usage`, `cost_microusd`, content so far) and
    `.status` is `"cancelled"`. `await aclose()` and leaving `async with` wait for that answer.
    """

    def __init__(self, call: "AsyncPendingCall[T]", timeout: TimeoutLike = None):
        if call._chunks is None:
            raise ValueError("not a streaming call")
        self._call = call
        self._chunks: "asyncio.Queue[Any]" = call._chunks
        self._deadline = Deadline(as_timeout(timeout), call.method, call.msgid, call._started)
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

    def _on_answer(self, future: "asyncio.Future[Any]") -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is None:
            return
        if isinstance(exc, SidecarError):
            if not isinstance(self.error, CallTimeout):
                self.error = exc
            if isinstance(exc, Cancelled):
                self.status = "cancelled"
                self.result = cast(T, partial_result(exc.data))
                return
        self.status = "error"

    async def _next(self) -> Any:
        if self._has_peeked:
            self._has_peeked = False
            item, self._peeked = self._peeked, _END
            return item
        wait, limit = self._deadline.next_wait(first=not self._seen_chunk)
        try:
            if wait is None:
                item = await self._chunks.get()
            else:
                item = await asyncio.wait_for(self._chunks.get(), wait)
        except asyncio.TimeoutError:
            raise self._expire(limit) from None
        except asyncio.CancelledError:
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

    async def _open(self) -> None:
        """Waits for the first chunk or the answer, so a refusal before any output is raised
        by the `chat` call itself."""
        item = await self._next()
        fut = self._call._future
        if item is _END and fut.done() and not fut.cancelled() and fut.exception() is not None:
            self._finished = True
            await self._call  # raises the error
        self._peeked, self._has_peeked = item, True

    def __aiter__(self) -> AsyncIterator[C]:
        return self._iterate(lambda chunk: cast(C, chunk))

    async def _iterate(self, pick: Callable[[Any], X]) -> AsyncIterator[X]:
        """The chunks as `pick` maps them, leaving out those it maps to `_SKIP`. Every view of
        a stream reads the same queue, so each chunk is seen once."""
        try:
            while not self._finished:
                item = await self._next()
                if item is _END:
                    self._finished = True
                    try:
                        self.result = await self._call
                        self.status = "ok"
                    except Cancelled:
                        self.status = "cancelled"
                        raise
                    except SidecarError:
                        self.status = "error"
                        raise
                    return
                value = pick(item)
                if value is not _SKIP:
                    yield value
        finally:
            if not self._finished:
                self.close()

    async def wait(self, timeout: TimeoutLike = None) -> T:
        """Skips the remaining chunks and returns the final result (raising the call's error).

        `timeout` defaults to the stream's total limit."""
        limits = as_timeout(timeout) if timeout is not None else Timeout(total=self._deadline.limits.total)
        deadline = Deadline(limits, self._call.method, self._call.msgid, self._deadline.started)
        try:
            value = await asyncio.wait_for(asyncio.shield(self._call._future), deadline.remaining())
        except asyncio.TimeoutError:
            err = deadline.expired("total")
            self._finished = True
            self.error = err
            self._call.cancel()
            raise err from None
        except asyncio.CancelledError:
            self._call.cancel()
            raise
        self._finished = True
        self.result = cast(T, value)
        self.status = "ok"
        return cast(T, value)

    def cancel(self) -> None:
        """Cancels the request on the daemon; iteration then ends with `Cancelled`."""
        self._call.cancel()

    def close(self) -> None:
        """Cancels the request if it has not finished; the stream yields nothing more, and
        `.result` gets the partial result when the daemon's answer arrives."""
        if not self._finished:
            self._finished = True
            self._call.cancel()

    async def aclose(self, wait: float = CANCEL_WAIT) -> None:
        """`close()`, then waits up to `wait` seconds for the daemon's answer, so `.result`
        then holds the usage billed."""
        self.close()
        fut = self._call._future
        if wait > 0 and not fut.done():
            try:
                await asyncio.wait_for(asyncio.shield(fut), wait)
            except (SidecarError, asyncio.TimeoutError):
                pass
        if fut.done() and not fut.cancelled() and fut.exception() is None and self.result is None:
            self.result = cast(T, fut.result())  # it had finished before the cancel arrived
            self.status = "ok"

    async def __aenter__(self) -> "AsyncStream[C, T]":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


class AsyncChatStream(AsyncStream[ChatChunk, ChatResult]):
    """A streaming `chat` call (asyncio). `async for` yields the text chunks `{delta, seq}` only;
    `async for d in stream.deltas()` yields every chunk as a typed `ChatDelta` (`TextDelta`,
    `ReasoningDelta`, `ToolCallDelta`; match on `.kind`). Either way `.result` then holds the
    assembled answer (after a cancel: the partial one with the usage billed). Both read the
    same chunks: use one of them per stream.
    """

    def __aiter__(self) -> AsyncIterator[ChatChunk]:
        return self._iterate(lambda chunk: cast(ChatChunk, chunk) if is_text_chunk(chunk) else _SKIP)

    def deltas(self) -> AsyncIterator[ChatDelta]:
        """Every chunk as a typed delta, in order (chunks of unknown kinds are left out)."""
        return self._iterate(lambda chunk: chat_delta(chunk) or _SKIP)

    async def __aenter__(self) -> "AsyncChatStream":
        return self


class AsyncSubscription:
    """Daemon events of some kinds: `async for` them, `await get()`, or pass a callback."""

    def __init__(self, client: "AsyncClient", kinds: "frozenset[str]", callback: Optional[EventCallback]):
        self._client = client
        self.kinds = kinds
        self._queue: "asyncio.Queue[Any]" = asyncio.Queue()
        self._callback = callback
        self.closed = False
        self._tasks: "set[asyncio.Task[Any]]" = set()

    async def get(self) -> Event:
        """The next event; raises `ConnectionClosed` once the subscription ended."""
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)
            raise ConnectionClosed("subscription closed")
        return cast(Event, item)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            item = await self._queue.get()
            if item is _END:
                self._queue.put_nowait(_END)
                return
            yield cast(Event, item)

    async def close(self) -> None:
        """Unsubscribes the kinds no other subscription of this client still needs."""
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(_END)
            await self._client._drop_subscription(self)

    async def __aenter__(self) -> "AsyncSubscription":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def _deliver(self, event: Event) -> None:
        if not _wire.match_kinds(self.kinds, event.get("kind")):
            return
        if self._callback is None:
            self._queue.put_nowait(event)
            return
        out = self._callback(event)
        if inspect.isawaitable(out):
            task = asyncio.ensure_future(out)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _end(self) -> None:
        self.closed = True
        self._queue.put_nowait(_END)


class AsyncClient(AsyncMethods, Core[AsyncPendingCall[Any], AsyncSubscription]):
    """An asyncio connection to the daemon.

    >>> async with AsyncClient(app="my-app") as c:
    ...     print((await c.info())["version"])
    """

    def __init__(
        self,
        path: Optional[PathLike] = None,
        *,
        app: Optional[str] = None,
        app_version: Optional[str] = None,
        timeout: TimeoutLike = None,
        autostart: Union[bool, Autostart] = False,
        binary: Optional[PathLike] = None,
    ):
        """Does not connect yet: use `await client.open()`, `async with`, or `AsyncClient.connect()`.

        `timeout`: the default limit of every call and stream (seconds for the whole call, or a
        `Timeout` with `total` / `first_chunk` / `chunk`); a call's own `timeout=` replaces it.
        `autostart` / `binary`: start a daemon when none answers, as for `Client`."""
        Core.__init__(self)
        self.path = socket_path(path)
        self.app = app
        self.app_version = app_version
        self.timeout = timeout
        as_timeout(timeout)  # checks it
        self._autostart = autostart_options(autostart, binary)
        #: The pid of the daemon this client started (autostart), or None.
        self.started_pid: Optional[int] = None
        self.hello_result: Optional[HelloResult] = None
        self._reader: Optional[asyncio.StreamReader] = None
        self._writer: Optional[asyncio.StreamWriter] = None
        self._read_task: "Optional[asyncio.Task[None]]" = None
        self._drain_lock: Optional[asyncio.Lock] = None

    @classmethod
    async def connect(cls, path: Optional[PathLike] = None, **kwargs: Any) -> "AsyncClient":
        """Creates a client and connects it (raising `DaemonNotRunning` if nothing listens)."""
        return await cls(path, **kwargs).open()

    async def open(self) -> "AsyncClient":
        """Connects and, given `app`, names the app with `daemon.hello`."""
        if self._writer is not None:
            return self
        try:
            self._reader, self._writer = await asyncio.open_unix_connection(self.path)
        except OSError as e:
            err = _wire.connect_error(self.path, e)
            if self._autostart is None or not isinstance(err, DaemonNotRunning):
                raise err from e
            loop = asyncio.get_running_loop()
            self.started_pid = await loop.run_in_executor(None, ensure_daemon, self.path, self._autostart)
            try:
                self._reader, self._writer = await asyncio.open_unix_connection(self.path)
            except OSError as e2:
                raise _wire.connect_error(self.path, e2) from e2
        self._drain_lock = asyncio.Lock()
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop())
        if self.app is not None:
            try:
                self.hello_result = await self.hello(self.app, version=self.app_version)
            except BaseException:
                await self.close()
                raise
        return self

    async def close(self) -> None:
        """Closes the connection; the daemon cancels whatever still runs on it."""
        self._shutdown(ConnectionClosed("the client closed the connection"))
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
        task = self._read_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def __aenter__(self) -> "AsyncClient":
        return await self.open()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # ---- sending ---------------------------------------------------------------------------

    def _transmit(self, data: bytes) -> None:
        if self._writer is None:
            raise ConnectionClosed("not connected: call `await client.open()` first")
        if self._closed or self._writer.is_closing():
            raise ConnectionClosed("the connection is closed")
        self._writer.write(data)

    async def _drain(self) -> None:
        if self._writer is None or self._drain_lock is None:
            return
        try:
            async with self._drain_lock:
                await self._writer.drain()
        except OSError as e:
            self._shutdown(ConnectionClosed(f"connection lost: {e}"))
            raise ConnectionClosed(f"connection to the daemon lost: {e}") from e

    def start(self, method: str, params: Params = None, *, streaming: bool = False) -> AsyncPendingCall[Any]:
        """Sends a request without waiting for it; `await` the returned call for its result.

        With `streaming=True` the notifications `[msgid, payload]` the daemon sends for this
        request are kept for an `AsyncStream` (see `stream()`)."""
        return self._start(method, params, lambda msgid: AsyncPendingCall(self, msgid, method, streaming))

    async def call(self, method: str, params: Params = None, *, timeout: TimeoutLike = None) -> Any:
        """Calls any method and returns its result; raises its error as a `SidecarError` subclass.

        `params`: a map is sent as the single map argument, a list as the params array itself.
        `timeout` (seconds or a `Timeout`, default the client's; only its `total` applies)
        cancels the call when it expires and raises `CallTimeout`.
        """
        pending = self.start(method, params)
        await self._drain()
        total = pick(timeout, self.timeout).total
        if total is None:
            return await pending
        try:
            return await asyncio.wait_for(pending._wait(), total)
        except asyncio.TimeoutError:
            raise Deadline(Timeout(total=total), method, pending.msgid, pending._started).expired("total") from None

    def stream(self, method: str, params: Params = None, *, timeout: TimeoutLike = None) -> AsyncStream[Any, Any]:
        """Starts a streaming request; its notifications' payloads are the chunks. Returns at once
        (errors come from the iteration; `chat(stream=True)` instead waits for the first chunk).
        `timeout`: as for `chat`."""
        return AsyncStream(self.start(method, params, streaming=True), pick(timeout, self.timeout))

    async def _open_stream(self, stream: AS) -> AS:
        try:
            await self._drain()
            await stream._open()
        except BaseException:
            stream._call.cancel()
            raise
        return stream

    # ---- chat ------------------------------------------------------------------------------

    @overload
    async def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        stream: Literal[True],
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
    ) -> AsyncChatStream: ...

    @overload
    async def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        stream: Literal[False] = False,
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

    async def chat(
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
    ) -> "Union[ChatResult, AsyncChatStream]":
        """`chat`: a completion via a route, alias or `provider/model`.

        `tools`, `tool_choice`, `parallel_tool_calls`, `response_format` and `reasoning` are
        passed through. `stream=True` returns an `AsyncChatStream` once the first chunk (or the
        answer) arrived, so a refusal (`QuotaExceeded`, `TierRequired`, `RateLimited`,
        `InvalidParams`, ...) is raised here: `async for` its `{delta, seq}` text chunks (or
        `.deltas()` for typed text, reasoning and tool-call deltas), then read `.result`.
        Otherwise returns the result.

        `timeout` (default the client's): seconds for the whole call, or a `Timeout` with
        `total`, `first_chunk` and `chunk` limits; when one expires the call is cancelled on
        the daemon and `CallTimeout` is raised (by `chat` or by the iteration).
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
            s = AsyncChatStream(self.start("chat", params, streaming=True), pick(timeout, self.timeout))
            return await self._open_stream(s)
        return cast(ChatResult, await self.call("chat", params, timeout=timeout))

    # ---- events ----------------------------------------------------------------------------

    async def subscribe(self, kinds: Sequence[str] = ("*",), callback: Optional[EventCallback] = None) -> AsyncSubscription:
        """Subscribes to daemon events of these kinds (`"*"` for all).

        Returns an `AsyncSubscription` to `async for` over; with `callback` (a function or
        coroutine function) it is called for each event instead. Raises `InvalidParams` for an
        unknown kind.
        """
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        # Registered before asking, so an event sent right after the answer is not missed.
        sub = AsyncSubscription(self, frozenset(kinds), callback)
        self._add_subscription(sub)
        try:
            answered = await self.events_subscribe(kinds)
        except BaseException:
            self._remove_subscription(sub)
            sub._end()
            raise
        sub.kinds = _wire.subscribed_kinds(kinds, answered)
        return sub

    async def _drop_subscription(self, sub: AsyncSubscription) -> None:
        send, drop = self._remove_subscription(sub)
        if not send:
            return
        try:
            await self.events_unsubscribe(kinds=drop)
        except ConnectionClosed:
            pass

    # ---- receiving -------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        assert self._reader is not None
        unpacker = _wire.unpacker()
        reason: SidecarError = ConnectionClosed("the daemon closed the connection")
        try:
            while True:
                data = await self._reader.read(_wire.READ_SIZE)
                if not data:
                    break
                unpacker.feed(data)
                for msg in unpacker:
                    self._dispatch(_wire.parse(msg))
        except (SidecarError, ValueError, OSError) as e:
            reason = read_failure(e)
            if self._writer is not None:
                self._writer.close()
        self._shutdown(reason)


async def connect_async(path: Optional[PathLike] = None, **kwargs: Any) -> AsyncClient:
    """Connects to the daemon (see `AsyncClient`)."""
    return await AsyncClient.connect(path, **kwargs)
