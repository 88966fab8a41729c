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


class ChatUsage(TypedDict):
    """Token counts of a call: `input` includes `cached`; `output` includes `reasoning`;
    `estimated` when the provider reported nothing and these are the daemon's estimate."""

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


class _ChatAttempt(TypedDict):
    provider: str
    model: str
    outcome: str
    status: Optional[int]
    ms: int


class ChatAttempt(_ChatAttempt, total=False):
    """One try of a call; `usage` and `cost_microusd` only when a failed attempt was billed."""

    usage: ChatUsage
    cost_microusd: int


class _ChatResult(TypedDict):
    content: str
    message: ChatMessage
    model: str
    provider: str
    usage: ChatUsage
    cost_microusd: int
    attempts: List[ChatAttempt]


class ChatResult(_ChatResult, total=False):
    """The answer to `chat` (for a stream: the assembled whole).

    `message` is the assistant message with every part (text, thinking, tool calls), to append
    to the conversation as is; `finish_reason` is stop, length, tool_calls, content_filter,
    refusal or the provider's own string.

    A cancelled stream's `.result` (after `break`, `close()`, a timeout) is the partial answer
    the daemon reported with `cancelled`: `content` and `message` so far, `usage` and
    `cost_microusd` billed, `attempts`, `provider` and `model`; the other keys are then
    absent. A completed answer has every key but `reasoning` (present when the model reasoned)."""

    tool_calls: List[ToolCall]
    reasoning: str
    finish_reason: Optional[str]
    cost_source: Literal["table", "provider", "unknown"]
    latency_ms: int
    ttft_ms: Optional[int]


#: How a stream stands: running, or how it ended (a timeout is `"cancelled"`).
StreamStatus = Literal["open", "ok", "cancelled", "error"]

_PARTIAL_KEYS = ("content", "message", "model", "provider", "usage", "cost_microusd", "attempts")


def partial_result(data: Mapping[str, Any]) -> Optional[ChatResult]:
    """The `.result` of a cancelled chat stream: the fields of the `cancelled` error's `data`
    that a `ChatResult` has (what was produced and billed before the cancel); None when the
    answer carries no usage (nothing was billed, e.g. cancelled before it reached a provider)."""
    if not isinstance(data.get("usage"), Mapping):
        return None
    out: Dict[str, Any] = {k: data[k] for k in _PARTIAL_KEYS if k in data}
    return out  # type: ignore[return-value]


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


# ---- results of the usage, quota, account, keys, vault, models and sync methods --------------
# Checked against the daemon's answers (tests/test_typed_results.py). Keys are always present
# unless the class says otherwise; `Optional` marks the ones that may be nil.


class UsageTotals(TypedDict):
    """Sums over some usage records (`usage.summary`)."""

    requests: int
    failed: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    total_tokens: int
    cost_microusd: int


class UsageGroup(UsageTotals):
    """The totals of one group (`key`: the provider, model, app, key_source or user)."""

    key: str


class UsageRow(UsageGroup):
    """The totals of one group in one period (`period`: `YYYY-MM-DD` or `YYYY-MM`)."""

    period: str


class ProjectedMonthEnd(TypedDict):
    month: str
    elapsed_fraction: float
    month_to_date: UsageTotals
    requests: int
    total_tokens: int
    cost_microusd: int


# `from` is a Python keyword, so that key is declared the functional way (read it as s["from"]).
_UsageSummaryFrom = TypedDict("_UsageSummaryFrom", {"from": str})


class UsageSummary(_UsageSummaryFrom):
    """`usage.summary`: rows per period and group, groups over the whole range, totals, and the
    month-end projection."""

    period: Literal["day", "month"]
    group_by: str
    to: str
    rows: List[UsageRow]
    groups: List[UsageGroup]
    totals: UsageTotals
    projected_month_end: ProjectedMonthEnd


class _UsageRecord(TypedDict):
    id: str
    ts: int
    app: str
    user: str
    provider: str
    model: str
    route: str
    key_source: Literal["byok", "platform", "local"]
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    usage_estimated: bool
    cost_microusd: int
    overage_microusd: int
    latency_ms: int
    ttft_ms: Optional[int]
    status: Literal["ok", "error", "cancelled"]
    error_code: Optional[str]
    attempts: int


class UsageRecord(_UsageRecord, total=False):
    """One metered call (`usage.records`, `usage.export`). `ts` is Unix ms; `source` is set
    only on records imported from another device."""

    source: str


class UsageRecords(TypedDict):
    """`usage.records`: one page; pass `next_cursor` back as `cursor` for the next one."""

    records: List[UsageRecord]
    next_cursor: Optional[str]


class ExportedRecord(UsageRecord):
    """A record of `usage.export`: also whether it was already synced to the backend."""

    synced: bool


class UsageExport(TypedDict):
    """`usage.export`: one page in the versioned export format (feed it to `usage_import`)."""

    format: str
    version: int
    device_id: str
    exported_at_ms: int
    records: List[ExportedRecord]
    next_cursor: Optional[str]


class UsageRecorded(TypedDict):
    """`usage.record`: the record's id, whether it was a retry of a known id, its cost."""

    id: str
    duplicate: bool
    cost_microusd: int


class QuotaLimit(TypedDict):
    """One limit of the tier in the current period (`reserved`: held by calls running now;
    `projected`: the month-end figure at the current rate)."""

    metric: Literal["tokens", "requests", "cost_microusd"]
    limit: int
    used: int
    remaining: int
    reserved: int
    projected: int


class ByokUsage(TypedDict):
    tokens: int
    requests: int
    cost_microusd: int


class ByokPolicy(TypedDict):
    allowed: bool
    counts_toward_quota: bool
    used: ByokUsage


class QuotaStatus(TypedDict):
    """`quota.status`: the tier in force (None when no tiers are configured: `enabled` false),
    its limits, and the period (RFC 3339 UTC)."""

    enabled: bool
    tier: Optional[str]
    tier_source: Literal["config", "entitlement"]
    period_start: str
    period_end: str
    limits: List[QuotaLimit]
    overage: bool
    requests_per_minute: Optional[int]
    byok: Optional[ByokPolicy]


class QuotaError(TypedDict):
    code: str
    message: str
    data: Dict[str, Any]


class _QuotaCheck(TypedDict):
    allowed: bool
    tier: Optional[str]


class QuotaCheck(_QuotaCheck, total=False):
    """`quota.check`: `allowed` with the `targets` the call would try, or not with the `error`
    (`{code, message, data}`) the call would get."""

    targets: List[str]
    error: QuotaError


class BackendUsage(TypedDict):
    tokens: int
    requests: int
    cost_microusd: int
    period_start: str
    fetched_at: int


class AccountStatus(TypedDict):
    """`account.status` / `account.refresh`: the entitlement in force; the optional fields are
    None when logged out or without a backend."""

    logged_in: bool
    sub: Optional[str]
    tier: Optional[str]
    tier_source: Literal["config", "entitlement"]
    period_start: Optional[str]
    period_end: Optional[str]
    expires_at: Optional[int]
    backend_url: Optional[str]
    backend_usage: Optional[BackendUsage]


class AccountLogin(TypedDict):
    """`account.login`: the verified token's subject, tier and period."""

    logged_in: bool
    sub: Optional[str]
    tier: Optional[str]
    period_start: Optional[str]
    period_end: Optional[str]
    expires_at: Optional[int]


class AccountLogout(TypedDict):
    logged_out: bool
    tier: Optional[str]


class UrlResult(TypedDict):
    """`account.checkout_url` / `account.portal_url`."""

    url: str


class KeyInfo(TypedDict):
    """A stored provider key's metadata (never the secret); times are Unix ms."""

    id: str
    provider: str
    label: Optional[str]
    last4: Optional[str]
    created_at: int
    last_used: Optional[int]
    status: Literal["unknown", "valid", "invalid"]


class KeysList(TypedDict):
    keys: List[KeyInfo]


class VaultStatus(TypedDict):
    """`vault.status` / `vault.unlock` / `vault.lock`."""

    mode: Literal["identity", "passphrase"]
    state: Literal["uninitialized", "locked", "unlocked"]
    locked: bool
    keys: Optional[int]
    auto_lock_secs: int
    lock_in_secs: Optional[int]
    vault_file: str
    identity_file: str
