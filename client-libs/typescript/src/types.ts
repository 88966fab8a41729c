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

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

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

export interface ChatResult {
  content: string;
  finish_reason?: string;
  model?: string;
  provider?: string;
  usage?: ChatUsage;
  cost_microusd?: number;
  latency_ms?: number;
  ttft_ms?: number;
  attempts?: AnyMap[];
  [field: string]: unknown;
}

/** One `chat.chunk` notification's payload. */
export interface ChatChunk {
  delta: string;
  seq?: number;
  [field: string]: unknown;
}

/** An `event` notification's payload: `{kind, ...fields}`. */
export interface SidecarEvent {
  kind: string;
  [field: string]: unknown;
}
