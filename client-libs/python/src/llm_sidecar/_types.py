"""Shapes of params and results (docs/protocol.md). Results are plain dicts at run time.

The daemon may add fields to a result within one protocol revision, so these TypedDicts list the
fields this library knows; others can still be present.
"""

from typing import Any, Dict, List, Literal, Mapping, Sequence, TypedDict, Union

#: What `call()` accepts as params: a map (sent as the single map argument `[map]`), a list or
#: tuple (sent as the params array itself) or None (sent as `[]`).
Params = Union[None, Mapping[str, Any], Sequence[Any]]


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


class HelloResult(TypedDict):
    server: str
    version: str
    protocol: int
    app: str
    connection_id: int


class InfoResult(TypedDict):
    server: str
    version: str
    protocol: int
    pid: int
    started_at: int
    uptime_ms: int
    socket: str
    config_file: str
    data_dir: str
    connections: int
    app: str


class MethodInfo(TypedDict):
    name: str
    kind: str
    params: str
    result: str
    summary: str


class MethodsResult(TypedDict):
    version: str
    protocol: int
    methods: List[MethodInfo]


class PingResult(TypedDict):
    pong: bool
    delay_ms: int


class KindsResult(TypedDict):
    kinds: List[str]


class ChatUsage(TypedDict, total=False):
    input: int
    output: int
    cached: int
    cache_write: int
    reasoning: int
    estimated: bool


class ChatResult(TypedDict, total=False):
    content: str
    finish_reason: str
    model: str
    provider: str
    usage: ChatUsage
    cost_microusd: int
    latency_ms: int
    ttft_ms: int
    attempts: List[Dict[str, Any]]


class ChatChunk(TypedDict, total=False):
    """One `chat.chunk` notification's payload: `{delta, seq, ...}`."""

    delta: str
    seq: int


#: An `event` notification's payload: `{kind, ...fields}`.
Event = Dict[str, Any]
