"""Shapes of params and results (docs/protocol.md). Results are plain dicts at run time.

The daemon may add fields to a result within one protocol revision, so these TypedDicts list the
fields this library knows; others can still be present.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, TypedDict, Union

#: What `call()` accepts as params: a map (sent as the single map argument `[map]`), a list or
#: tuple (sent as the params array itself) or None (sent as `[]`).
Params = Union[None, Mapping[str, Any], Sequence[Any]]


# ---- chat: messages and their parts (optional keys via a total=False subclass, for 3.9) ------


class TextPart(TypedDict):
    type: Literal["text"]
    text: str


class _ImageUrlPart(TypedDict):
    type: Literal["image"]
    url: str


class ImageUrlPart(_ImageUrlPart, total=False):
    """An image by URL (`https:` or `data:<media type>;base64,...`); `detail`: low/high/auto (OpenAI)."""

    detail: Literal["low", "high", "auto"]


class _ImageDataPart(TypedDict):
    type: Literal["image"]
    data: str
    media_type: Literal["image/png", "image/jpeg", "image/gif", "image/webp"]


class ImageDataPart(_ImageDataPart, total=False):
    """An image as base64 bytes."""

    detail: Literal["low", "high", "auto"]


ImagePart = Union[ImageUrlPart, ImageDataPart]


class _DocumentPart(TypedDict):
    type: Literal["document"]
    data: str
    media_type: Literal["application/pdf"]


class DocumentPart(_DocumentPart, total=False):
    """A PDF as base64 bytes."""

    name: str


class ToolCallPart(TypedDict):
    """A tool call the model made (in an `assistant` message); `arguments`: parsed JSON or its text."""

    type: Literal["tool_call"]
    id: str
    name: str
    arguments: Any


class _ToolResultPart(TypedDict):
    type: Literal["tool_result"]
    tool_call_id: str
    content: Union[str, Sequence[Union[TextPart, ImageUrlPart, ImageDataPart]]]


class ToolResultPart(_ToolResultPart, total=False):
    """The answer to a tool call (in a `tool` message); `content` holds text and images."""

    is_error: bool


class _ThinkingPart(TypedDict):
    type: Literal["thinking"]
    text: str


class ThinkingPart(_ThinkingPart, total=False):
    """Model reasoning; send it back unchanged (with its `signature`) in later turns."""

    signature: str


ContentPart = Union[TextPart, ImageUrlPart, ImageDataPart, DocumentPart, ToolCallPart, ToolResultPart, ThinkingPart]

ChatRole = Literal["system", "user", "assistant", "tool"]


class _ChatMessage(TypedDict):
    role: ChatRole
    content: Union[str, Sequence[ContentPart]]


class ChatMessage(_ChatMessage, total=False):
    """One message; `content` is a string (one text part) or parts. `{"role": "tool",
    "tool_call_id": ..., "content": ...}` is shorthand for one `tool_result` part (`is_error`
    marks a failed tool run)."""

    tool_call_id: str
    is_error: bool


# ---- chat: request options ---------------------------------------------------------------------


class _ChatTool(TypedDict):
    name: str


class ChatTool(_ChatTool, total=False):
    """A function the model may call; `parameters` is a JSON Schema object (absent: no arguments)."""

    description: str
    parameters: Mapping[str, Any]


class ToolChoiceName(TypedDict):
    name: str


#: Whether the model may (`auto`), must not (`none`) or must (`required`, `{"name": ...}`) call a tool.
ToolChoice = Union[Literal["auto", "none", "required"], ToolChoiceName]


class ResponseFormatPlain(TypedDict):
    type: Literal["text", "json_object"]


class _ResponseFormatSchema(TypedDict):
    type: Literal["json_schema"]
    name: str
    schema: Mapping[str, Any]


class ResponseFormatSchema(_ResponseFormatSchema, total=False):
    strict: bool


ResponseFormat = Union[ResponseFormatPlain, ResponseFormatSchema]


class ReasoningEffort(TypedDict):
    effort: Literal["low", "medium", "high"]


class ReasoningBudget(TypedDict):
    budget_tokens: int


#: How hard a reasoning model thinks: an effort or a token budget.
Reasoning = Union[ReasoningEffort, ReasoningBudget]


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
    # The HTTP face's address ("127.0.0.1:8931"), or None when it is off.
    http: Optional[str]
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


class _ToolCall(TypedDict):
    id: str
    name: str
    arguments: Any


class ToolCall(_ToolCall, total=False):
    """A tool call of the answer: `arguments` is the parsed JSON (None, with `arguments_raw`
    holding the text, when the model's arguments are not valid JSON)."""

    arguments_raw: str


class ChatAttempt(TypedDict, total=False):
    provider: str
    model: str
    outcome: str
    status: Optional[int]
    ms: int
    usage: ChatUsage
    cost_microusd: int


class ChatResult(TypedDict, total=False):
    """The answer to `chat` (for a stream: the assembled whole).

    `message` is the assistant message with every part (text, thinking, tool calls), to append
    to the conversation as is; `finish_reason` is stop, length, tool_calls, content_filter,
    refusal or the provider's own string."""

    content: str
    message: ChatMessage
    tool_calls: List[ToolCall]
    reasoning: str
    finish_reason: Optional[str]
    model: str
    provider: str
    usage: ChatUsage
    cost_microusd: int
    cost_source: Literal["table", "provider", "unknown"]
    latency_ms: int
    ttft_ms: Optional[int]
    attempts: List[ChatAttempt]


class _ToolCallChunk(TypedDict):
    index: int
    arguments_delta: str


class ToolCallChunk(_ToolCallChunk, total=False):
    id: str
    name: str


class ChatChunk(TypedDict, total=False):
    """One `chat.chunk` notification's payload: `{delta | reasoning_delta | tool_call, seq}`.

    Iterating a chat `Stream` yields only the text chunks (`delta` is then always there);
    `Stream.deltas()` yields every chunk as a typed `ChatDelta`."""

    delta: str
    reasoning_delta: str
    tool_call: ToolCallChunk
    seq: int


# ---- typed stream deltas (`Stream.deltas()`) ---------------------------------------------------


@dataclass(frozen=True)
class TextDelta:
    """A piece of the answer's text."""

    text: str
    seq: Optional[int] = None
    kind: Literal["text"] = "text"


@dataclass(frozen=True)
class ReasoningDelta:
    """A piece of the model's reasoning (when the provider shows it)."""

    text: str
    seq: Optional[int] = None
    kind: Literal["reasoning"] = "reasoning"


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of tool call `index`; its `id` and `name` come with its first piece."""

    index: int
    arguments_delta: str
    id: Optional[str] = None
    name: Optional[str] = None
    seq: Optional[int] = None
    kind: Literal["tool_call"] = "tool_call"


#: One typed stream delta: match on `kind` (or `isinstance`).
ChatDelta = Union[TextDelta, ReasoningDelta, ToolCallDelta]


def chat_delta(payload: Any) -> Optional[ChatDelta]:
    """The typed delta of one `chat.chunk` payload; None for a kind this library does not know."""
    if not isinstance(payload, dict):
        return None
    seq = payload.get("seq")
    seq = seq if isinstance(seq, int) else None
    if isinstance(payload.get("delta"), str):
        return TextDelta(payload["delta"], seq)
    if isinstance(payload.get("reasoning_delta"), str):
        return ReasoningDelta(payload["reasoning_delta"], seq)
    tc = payload.get("tool_call")
    if isinstance(tc, dict):
        index = tc.get("index")
        args = tc.get("arguments_delta")
        ident = tc.get("id")
        name = tc.get("name")
        return ToolCallDelta(
            index=index if isinstance(index, int) else 0,
            arguments_delta=args if isinstance(args, str) else "",
            id=ident if isinstance(ident, str) else None,
            name=name if isinstance(name, str) else None,
            seq=seq,
        )
    return None


def is_text_chunk(payload: Any) -> bool:
    return isinstance(payload, dict) and isinstance(payload.get("delta"), str)


#: An `event` notification's payload: `{kind, ...fields}`.
Event = Dict[str, Any]
