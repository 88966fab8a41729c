"""Client for the llm-sidecar daemon: MessagePack-RPC over its Unix socket.

    from llm_sidecar import Client
    with Client(app="my-app") as c:
        print(c.info()["version"])

`Client` blocks (thread-safe); `AsyncClient` is for asyncio. Both find the socket as the daemon
does (`socket_path`), have a typed wrapper for every daemon method plus `call(method, params)`,
stream `chat(..., stream=True)`, deliver events via `subscribe(kinds)`, and raise one
`SidecarError` subclass per error code.
"""

from ._methods import METHOD_PARAMS
from ._types import (
    ChatChunk,
    ChatMessage,
    ChatResult,
    ChatUsage,
    Event,
    HelloResult,
    InfoResult,
    KindsResult,
    MethodInfo,
    MethodsResult,
    Params,
    PingResult,
)
from .aio import AsyncClient, AsyncPendingCall, AsyncStream, AsyncSubscription, connect_async
from .client import Client, PendingCall, Stream, Subscription, connect
from .discovery import socket_path
from .errors import (
    ERRORS_BY_CODE,
    Cancelled,
    ConnectionClosed,
    DaemonNotRunning,
    Internal,
    InvalidParams,
    InvalidRequest,
    KeyMissing,
    MethodNotFound,
    ProtocolError,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    ShuttingDown,
    ConfigInvalid,
    SidecarConnectionError,
    SidecarError,
    TierRequired,
    Unauthorized,
    VaultLocked,
    error_from_wire,
)

__version__ = "0.1.0"
#: The protocol revision this library was written for (`protocol` in hello/info answers).
PROTOCOL = 1

__all__ = [
    "PROTOCOL",
    "METHOD_PARAMS",
    "AsyncClient",
    "AsyncPendingCall",
    "AsyncStream",
    "AsyncSubscription",
    "Cancelled",
    "ChatChunk",
    "ChatMessage",
    "ChatResult",
    "ChatUsage",
    "Client",
    "ConnectionClosed",
    "DaemonNotRunning",
    "ERRORS_BY_CODE",
    "Event",
    "HelloResult",
    "InfoResult",
    "Internal",
    "InvalidParams",
    "InvalidRequest",
    "KeyMissing",
    "KindsResult",
    "MethodInfo",
    "MethodNotFound",
    "MethodsResult",
    "Params",
    "PendingCall",
    "PingResult",
    "ProtocolError",
    "ProviderError",
    "QuotaExceeded",
    "RateLimited",
    "ShuttingDown",
    "ConfigInvalid",
    "SidecarConnectionError",
    "SidecarError",
    "Stream",
    "Subscription",
    "TierRequired",
    "Unauthorized",
    "VaultLocked",
    "connect",
    "connect_async",
    "error_from_wire",
    "socket_path",
]
