/**
 * Shapes of params and results (docs/protocol.md). Results are plain objects; the daemon may add
 * fields within one protocol revision, so these interfaces list the fields this library knows.
 */

/** Any result map of a method this library does not describe in detail. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyMap = Record<string, any>;

/** Options of one call. */
export interface CallOptions {
  /**
   * Aborting sends `$/cancel`; the call then rejects with the daemon's `Cancelled` error (for
   * chat, with the usage billed so far in `data`). An abort whose reason is a `TimeoutError`
   * (`AbortSignal.timeout(ms)`) rejects at once with `CallTimeout` instead.
   */
  signal?: AbortSignal;
  /**
   * Deadline of the whole call, in ms from sending it (for a stream: until its final answer).
   * On expiry the call is cancelled on the daemon and rejects (a stream: throws) `CallTimeout`.
   */
  timeoutMs?: number;
}

/** Options of a streaming call: `CallOptions` plus the stream's own timeouts. */
export interface StreamOptions extends CallOptions {
  /**
   * Time from sending the call to its first chunk (or its answer, when it sends none). On
   * expiry: `$/cancel`, and `CallTimeout` (`data.timeout = "first_chunk"`).
   */
  firstChunkTimeoutMs?: number;
  /**
   * Longest gap between two chunks (and from the last chunk to the answer), counted when they
   * arrive, not when the app reads them. On expiry: `$/cancel`, and `CallTimeout`
   * (`data.timeout = "idle"`).
   */
  idleTimeoutMs?: number;
}

/** Which limit a `CallTimeout` hit (`data.timeout`): `timeoutMs`, `firstChunkTimeoutMs`, `idleTimeoutMs`, the signal's. */
export type TimeoutKind = "total" | "first_chunk" | "idle" | "signal";

// ---- chat: messages and their parts ----------------------------------------------------------

export interface TextPart {
  type: "text";
  text: string;
}

/** An image by URL (`https:` or `data:<media type>;base64,...`). `detail`: OpenAI's low/high/auto. */
export interface ImageUrlPart {
  type: "image";
  url: string;
  detail?: "low" | "high" | "auto";
}

/** An image as base64 bytes. */
export interface ImageDataPart {
  type: "image";
  data: string;
  media_type: "image/png" | "image/jpeg" | "image/gif" | "image/webp";
  detail?: "low" | "high" | "auto";
}

export type ImagePart = ImageUrlPart | ImageDataPart;

/** A PDF as base64 bytes. */
export interface DocumentPart {
  type: "document";
  data: string;
  media_type: "application/pdf";
  name?: string;
}

/** A tool call the model made (in an `assistant` message). `arguments`: parsed JSON or its text. */
export interface ToolCallPart {
  type: "tool_call";
  id: string;
  name: string;
  arguments: unknown;
}

/** The answer to a tool call (in a `tool` message); `content` holds text and images. */
export interface ToolResultPart {
  type: "tool_result";
  tool_call_id: string;
  content: string | (TextPart | ImagePart)[];
  is_error?: boolean;
}

/** Model reasoning; send it back unchanged (with its `signature`) in later turns. */
export interface ThinkingPart {
  type: "thinking";
  text: string;
  signature?: string;
}

export type ContentPart = TextPart | ImagePart | DocumentPart | ToolCallPart | ToolResultPart | ThinkingPart;

export type ChatRole = "system" | "user" | "assistant" | "tool";

/**
 * One message. `content`: a string (one text part) or parts. `{role: "tool", tool_call_id,
 * content}` is shorthand for one `tool_result` part (`is_error` marks a failed tool run).
 */
export interface ChatMessage {
  role: ChatRole;
  content: string | ContentPart[];
  tool_call_id?: string;
  is_error?: boolean;
}

// ---- chat: request options --------------------------------------------------------------------

/** A function the model may call; `parameters` is a JSON Schema object (absent: no arguments). */
export interface ChatTool {
  name: string;
  description?: string;
  parameters?: Record<string, unknown>;
}

/** Whether the model may (`auto`), must not (`none`) or must (`required`, `{name}`) call a tool. */
export type ToolChoice = "auto" | "none" | "required" | { name: string };

export type ResponseFormat =
  | { type: "text" | "json_object" }
  | { type: "json_schema"; name: string; schema: Record<string, unknown>; strict?: boolean };

/** How hard a reasoning model thinks: an effort or a token budget. */
export type Reasoning = { effort: "low" | "medium" | "high" } | { budget_tokens: number };

export interface HelloResult {
  server: string;
  version: string;
  protocol: number;
  app: string;
  connection_id: number;
  /** How this connection's error responses are sent: maps (this library's default) or `"<code>: <message>"` strings. */
  errors: "map" | "string";
}

export interface InfoResult {
  server: string;
  version: string;
  protocol: number;
  pid: number;
  started_at: number;
  uptime_ms: number;
  socket: string;
  /** The HTTP face's address ("127.0.0.1:8931"), or null when it is off. */
  http: string | null;
  config_file: string;
  data_dir: string;
  connections: number;
  app: string;
  vault: VaultStatus;
  /** Route targets that failed recently. */
  providers: { target: string; consecutive_failures: number; cooldown_remaining_ms: number }[];
  sync: SyncState;
  /** The ledger's durable commits since start (one fsync each), the writes they carried, the µs spent on them. */
  ledger: { commits: number; writes: number; busy_us: number };
}

export interface MethodInfo {
  name: string;
  kind: "request" | "notification" | string;
  params: string;
  result: string;
  summary: string;
}

export interface MethodsResult {
  version: string;
  protocol: number;
  methods: MethodInfo[];
}

export interface PingResult {
  pong: boolean;
  delay_ms: number;
}

export interface KindsResult {
  kinds: string[];
}

/** Tokens of a chat call as the provider billed them (`output` includes `reasoning`). */
export interface ChatUsage {
  /** Every prompt token billed, cached ones included. */
  input: number;
  output: number;
  /** The part of `input` read from cache. */
  cached: number;
  /** The part of `input` written to cache (Anthropic). */
  cache_write: number;
  reasoning: number;
  /** The provider reported nothing; the daemon estimated the counts. */
  estimated: boolean;
}

/** A tool call of the answer; `arguments` is parsed JSON (`null` with `arguments_raw` when it is not JSON). */
export interface ToolCall {
  id: string;
  name: string;
  arguments: unknown;
  arguments_raw?: string;
}

/** One provider attempt of a call. */
export interface ChatAttempt {
  provider: string;
  model: string;
  /** `ok`, `rate_limited`, `server_error`, `timeout`, ..., `cancelled`, `cooldown`, `skipped_tier`, ... (docs/chat.md). */
  outcome: string;
  /** The HTTP status, when a request was made and answered. */
  status: number | null;
  ms: number;
  /** Present when the provider billed this failed attempt. */
  usage?: ChatUsage;
  cost_microusd?: number;
}

export type FinishReason = "stop" | "length" | "tool_calls" | "content_filter" | "refusal" | "other";

/** The assistant message of an answer: append it to `messages` as it is. */
export interface AssistantMessage {
  role: "assistant";
  content: ContentPart[];
}

/** The answer to `chat` (and the end of a stream: the assembled whole). */
export interface ChatResult {
  /** The text parts joined. */
  content: string;
  /** The assistant message with every part (text, thinking, tool calls): append it to `messages`. */
  message: AssistantMessage;
  tool_calls: ToolCall[];
  /** The reasoning text, when the model reasoned and the provider showed it. */
  reasoning?: string;
  /** A normalised reason, or the provider's own string. */
  finish_reason: FinishReason | (string & {}) | null;
  /** The model the provider says answered. */
  model: string;
  provider: string;
  usage: ChatUsage;
  cost_microusd: number;
  cost_source: "table" | "provider" | "unknown";
  latency_ms: number;
  /** Time to the first content chunk (non-streaming: the whole answer). */
  ttft_ms: number | null;
  attempts: ChatAttempt[];
}

/** `data` of a chat's `cancelled` (and `provider_error`) answer: what happened until then. */
export interface ChatFailureData {
  provider: string;
  model: string;
  /** The provider's HTTP status (`provider_error`; null for `cancelled`). */
  status: number | null;
  retry_after_ms?: number;
  /** What was billed until the end: recorded in the ledger with status `cancelled` / `error`. */
  usage: ChatUsage;
  cost_microusd: number;
  /** The text received so far. */
  content: string;
  message: AssistantMessage;
  after_first_chunk: boolean;
  attempts: ChatAttempt[];
}

/** A stream's `finalResult()` when the call completed. */
export interface ChatCompleted extends ChatResult {
  status: "ok";
}

/** A stream's `finalResult()` after this client cancelled it (break, close, cancel, abort). */
export interface ChatCancelled extends Omit<ChatFailureData, "status" | "retry_after_ms"> {
  status: "cancelled";
}

/** What a chat stream ended with; narrow on `status`. */
export type ChatOutcome = ChatCompleted | ChatCancelled;

/** The `tool_call` piece of a `chat.chunk`: a fragment of one tool call's arguments. */
export interface ToolCallChunk {
  index: number;
  id?: string;
  name?: string;
  arguments_delta: string;
}

/** One `chat.chunk` notification's payload: one of `delta`, `reasoning_delta`, `tool_call`. */
export interface ChatChunk {
  delta?: string;
  reasoning_delta?: string;
  tool_call?: ToolCallChunk;
  seq?: number;
}

/** A text chunk (what iterating a `ChatStream` yields). */
export interface TextChunk extends ChatChunk {
  delta: string;
}

/** Typed stream deltas, from `ChatStream.deltas()`; switch on `kind`. */
export interface TextDelta {
  kind: "text";
  text: string;
  seq?: number;
}

export interface ReasoningDelta {
  kind: "reasoning";
  text: string;
  seq?: number;
}

/** A piece of tool call `index`: `id` and `name` come with its first piece. */
export interface ToolCallDelta {
  kind: "tool_call";
  index: number;
  id?: string;
  name?: string;
  arguments_delta: string;
  seq?: number;
}

export type ChatDelta = TextDelta | ReasoningDelta | ToolCallDelta;

/** An `event` notification's payload: `{kind, ...fields}`. */
export interface SidecarEvent {
  kind: string;
  [field: string]: unknown;
}

// ---- results of the other methods (shapes of `daemon.methods` and docs/*.md) ------------------

/** `daemon.reload`. */
export interface ReloadResult {
  /** Sections that changed and are in force. */
  applied: string[];
  /** Sections that changed but are read only at start. */
  restart_required: string[];
  not_reloadable: string[];
  config_file: string;
}

/** Metadata of a key in the vault (never the secret). Times are Unix ms. */
export interface KeyInfo {
  id: string;
  provider: string;
  label: string | null;
  last4: string | null;
  created_at: number;
  last_used: number | null;
  status: "unknown" | "valid" | "invalid";
}

export interface KeysSetResult {
  key: KeyInfo;
  /** Whether a key with the same provider and label was replaced. */
  replaced: boolean;
}

export interface KeysListResult {
  keys: KeyInfo[];
}

export interface KeysRemoveResult {
  key: KeyInfo;
}

export interface KeysTestResult {
  key: KeyInfo;
  valid: boolean;
  http_status: number;
  latency_ms: number;
}

/** `vault.status`, `vault.lock`, `vault.unlock` (and `info().vault`). */
export interface VaultStatus {
  mode: "identity" | "passphrase";
  state: "uninitialized" | "locked" | "unlocked";
  locked: boolean;
  /** How many keys, or null while locked. */
  keys: number | null;
  auto_lock_secs: number;
  lock_in_secs: number | null;
  vault_file: string;
  identity_file: string;
}

export interface AppsAddResult {
  name: string;
  /** The app's token (`lsk_...`): shown only here. */
  token: string;
}

export interface AppsListResult {
  apps: { name: string; created: string; last_used: string | null; calls_this_month: number }[];
}

export interface AppsRemoveResult {
  removed: boolean;
}

export interface ChatCancelResult {
  cancelled: boolean;
}

/** Price in micro-dollars per million tokens. */
export interface ModelPrice {
  input: number;
  output: number;
  cached: number;
  cache_write: number;
  reasoning?: number;
}

export interface ModelsListResult {
  providers: {
    name: string;
    adapter: string;
    base_url: string;
    keyless: boolean;
    key_present: boolean;
    models: { id: string; price: ModelPrice | null; allowed: boolean }[];
  }[];
  routes: { name: string; targets: string[] }[];
}

/** One usage record (docs/usage-sync.md). Times are Unix ms, money integer micro-dollars. */
export interface UsageRecord {
  /** UUIDv7; also the CloudEvent id. */
  id: string;
  ts: number;
  app: string;
  user: string;
  provider: string;
  model: string;
  route: string;
  key_source: "byok" | "platform" | "local";
  input_tokens: number;
  output_tokens: number;
  cached_tokens: number;
  cache_write_tokens: number;
  reasoning_tokens: number;
  usage_estimated: boolean;
  cost_microusd: number;
  overage_microusd: number;
  latency_ms: number;
  ttft_ms: number | null;
  status: "ok" | "error" | "cancelled";
  error_code: string | null;
  attempts: number;
}

export interface UsageRecordResult {
  id: string;
  /** The id was already recorded (the call is idempotent by id). */
  duplicate: boolean;
  cost_microusd: number;
}

export interface UsageRecordsResult {
  records: UsageRecord[];
  /** Pass it back as `cursor` for the next page; null on the last. */
  next_cursor: string | null;
}

export interface UsageTotals {
  requests: number;
  /** Records whose status is not `ok`. */
  failed: number;
  input_tokens: number;
  output_tokens: number;
  cached_tokens: number;
  cache_write_tokens: number;
  reasoning_tokens: number;
  total_tokens: number;
  cost_microusd: number;
}

export interface UsageSummary {
  period: "day" | "month";
  group_by: string | null;
  from: string;
  to: string;
  rows: (UsageTotals & { period: string; key: string | null })[];
  groups: (UsageTotals & { key: string | null })[];
  totals: UsageTotals;
  projected_month_end: {
    month: string;
    elapsed_fraction: number;
    month_to_date: UsageTotals;
    requests: number;
    total_tokens: number;
    cost_microusd: number;
  };
}

/** A record in the export format: `source` (the device that made it) and whether it was synced. */
export interface ExportedUsageRecord extends UsageRecord {
  source: string;
  synced: boolean;
}

export interface UsageExport {
  format: "llm-sidecar.usage";
  version: number;
  device_id: string;
  exported_at_ms: number;
  records: ExportedUsageRecord[];
  next_cursor: string | null;
}

export interface UsageImportResult {
  imported: number;
  duplicates: number;
}

export interface UsageClearResult {
  records_removed: number;
  outbox_removed: number;
  dead_letters_removed: number;
  pending_kept: number;
}

export interface SyncError {
  at_ms: number;
  status: number | null;
  message: string;
}

/** The sync state (`info().sync`; `sync.status` adds `recent_dead_letters`). */
export interface SyncState {
  enabled: boolean;
  state: "disabled" | "idle" | "sending" | "retrying" | "paused" | "misconfigured";
  endpoint: string | null;
  source: string;
  subject: string;
  pending: number;
  oldest_pending_age_ms: number | null;
  dead_letters: number;
  last_attempt_at_ms: number | null;
  last_success_at_ms: number | null;
  last_error: SyncError | null;
  next_attempt_at_ms: number | null;
  failures: number;
  sent_total: number;
  batches_total: number;
}

export interface DeadLetter {
  id: string;
  batch_id: string;
  status: number | null;
  reason: "rejected" | "too_old" | "future" | "unreadable";
  body: string | null;
  at_ms: number;
}

export interface SyncStatus extends SyncState {
  recent_dead_letters: DeadLetter[];
}

export interface SyncNowResult {
  state: SyncState["state"];
  sent: number;
  dead_lettered: number;
  requeued: number;
  pending: number;
  error: SyncError | null;
}

export interface SyncDeadLettersResult {
  dead_letters: (DeadLetter & { record: unknown })[];
}

export interface SyncRequeueResult {
  requeued: number;
}

/** Tokens, requests and cost (micro-dollars). */
export interface Amount {
  tokens: number;
  requests: number;
  cost_microusd: number;
}

/** One limit of the tier in `quota.status`. */
export interface QuotaLimit {
  metric: "tokens" | "requests" | "cost_microusd";
  limit: number;
  used: number;
  remaining: number;
  /** Held by calls running now (their worst case). */
  reserved: number;
  /** `used` extrapolated linearly to the end of the period. */
  projected: number;
}

export interface QuotaStatus {
  /** Whether a policy is configured (`[tiers]`); without one every call is allowed. */
  enabled: boolean;
  tier: string | null;
  tier_source: "config" | "entitlement";
  /** RFC 3339. */
  period_start: string;
  period_end: string;
  limits: QuotaLimit[];
  overage: boolean;
  requests_per_minute: number | null;
  byok: { allowed: boolean; counts_toward_quota: boolean; used: Amount } | null;
}

/** `quota.check`: allowed (with the targets the call would try), or the error `chat` would get. */
export type QuotaCheckResult =
  | { allowed: true; tier: string | null; targets: string[] }
  | { allowed: false; tier: string | null; error: { code: string; message: string; data: AnyMap } };

/** `account.status`, `account.login`, `account.refresh`. Times RFC 3339. */
export interface AccountStatus {
  logged_in: boolean;
  sub: string | null;
  tier: string | null;
  tier_source: "config" | "entitlement";
  period_start: string | null;
  period_end: string | null;
  expires_at: string | null;
  backend_url: string | null;
  backend_usage: (Amount & { period_start: string; fetched_at: string }) | null;
}

export interface AccountLogoutResult {
  logged_out: boolean;
  tier: string | null;
}

export interface UrlResult {
  url: string;
}

// ---- the `data` of some errors ------------------------------------------------------------------

/** `QuotaExceeded.data`. */
export interface QuotaExceededData {
  metric: QuotaLimit["metric"];
  limit: number;
  used: number;
  remaining: number;
  period_start: string;
  period_end: string;
  /** When it is the app's own limit. */
  app?: string;
}

/** `TierRequired.data`. */
export interface TierRequiredData {
  /** The cheapest tier that allows it, or null. */
  required_tier: string | null;
  provider: string;
  model: string;
  /** `tools`, `tool:<name>`, `images`, `documents` when a feature is refused. */
  feature?: string;
  /** How to get to that tier, or null. */
  upgrade: string | null;
  app?: string;
}

/** `RateLimited.data`. */
export interface RateLimitedData {
  retry_after_ms: number;
  limit: number;
  app?: string;
}
