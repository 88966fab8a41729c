/**
 * Shapes of params and results (docs/protocol.md). Results are plain objects; the daemon may add
 * fields within one protocol revision, so these interfaces list the fields this library knows.
 */

/** Any result map of a method this library does not describe in detail. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyMap = Record<string, any>;

/** Options of one call. */
export interface CallOptions {
  /** Aborting sends `$/cancel`; the call then rejects with the daemon's `Cancelled` error. */
  signal?: AbortSignal;
  /** After this many ms the call is cancelled on the daemon and rejects with `CallTimeout`. */
  timeoutMs?: number;
}

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

export interface ChatUsage {
  input?: number;
  output?: number;
  cached?: number;
  cache_write?: number;
  reasoning?: number;
  estimated?: boolean;
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
  outcome: string;
  status: number | null;
  ms: number;
  usage?: ChatUsage;
  cost_microusd?: number;
}

export type FinishReason = "stop" | "length" | "tool_calls" | "content_filter" | "refusal" | "other";

/** The answer to `chat` (and the end of a stream: the assembled whole). */
export interface ChatResult {
  /** The text parts joined. */
  content: string;
  /** The assistant message with every part (text, thinking, tool calls): append it to `messages`. */
  message: { role: "assistant"; content: ContentPart[] };
  tool_calls: ToolCall[];
  /** The reasoning text, when the model reasoned and the provider showed it. */
  reasoning?: string;
  /** A normalised reason, or the provider's own string. */
  finish_reason?: FinishReason | (string & {}) | null;
  model?: string;
  provider?: string;
  usage?: ChatUsage;
  cost_microusd?: number;
  cost_source?: "table" | "provider" | "unknown";
  latency_ms?: number;
  ttft_ms?: number | null;
  attempts?: ChatAttempt[];
  [field: string]: unknown;
}

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
  [field: string]: unknown;
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
