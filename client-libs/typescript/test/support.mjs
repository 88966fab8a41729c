// Test support: the real llm-sidecar daemon in a temp dir, and a fake MessagePack-RPC server.
//
// The daemon binary comes from $LLM_SIDECAR_BIN, default ../../target/debug/llm-sidecar relative
// to client-libs/typescript. Readiness is awaited by polling the socket, never a fixed sleep.

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { decodeMultiStream, encode } from "@msgpack/msgpack";

const HERE = dirname(fileURLToPath(import.meta.url));
export const LIB_DIR = resolve(HERE, "..");

export function daemonBinary() {
  const path = process.env.LLM_SIDECAR_BIN || resolve(LIB_DIR, "..", "..", "target", "debug", "llm-sidecar");
  if (!existsSync(path)) throw new Error(`daemon binary not found at ${path}; run \`cargo build\` or set LLM_SIDECAR_BIN`);
  return path;
}

export function tempDir(prefix = "llm-sidecar-ts-") {
  return mkdtempSync(join(tmpdir(), prefix));
}

export async function waitUntil(pred, { timeoutMs = 10_000, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export function accepts(path) {
  return new Promise((resolveAccepts) => {
    const s = createConnection({ path });
    s.once("connect", () => {
      s.destroy();
      resolveAccepts(true);
    });
    s.once("error", () => resolveAccepts(false));
  });
}

/** A daemon with every path (HOME, XDG_*, data, socket) inside its own temp dir. */
export class Daemon {
  constructor({ socketArg = true, env = {}, args = [] } = {}) {
    this.root = tempDir();
    this.args = [...args];
    this.socketArg = socketArg;
    this.sock = socketArg ? join(this.root, "run", "sock") : "";
    const base = { ...process.env };
    for (const k of ["LLM_SIDECAR_SOCK", "RUST_LOG", "XDG_RUNTIME_DIR", "TMPDIR"]) delete base[k];
    this.env = {
      ...base,
      HOME: join(this.root, "home"),
      XDG_CONFIG_HOME: join(this.root, "config"),
      XDG_DATA_HOME: join(this.root, "xdg-data"),
      XDG_STATE_HOME: join(this.root, "state"),
      XDG_CACHE_HOME: join(this.root, "cache"),
      XDG_RUNTIME_DIR: join(this.root, "xdg-run"),
      RUST_LOG: "llm_sidecar=debug",
      ...env,
    };
    for (const [k, v] of Object.entries(this.env)) if (v === undefined || v === null) delete this.env[k];
    this.logPath = join(this.root, "daemon.log");
    this.proc = null;
  }

  async start(expectSocket) {
    if (expectSocket) this.sock = expectSocket;
    const args = this.socketArg ? ["--socket", this.sock] : [];
    args.push("serve", "--data-dir", join(this.root, "data"), ...this.args);
    const log = openSync(this.logPath, "a");
    this.proc = spawn(daemonBinary(), args, { env: this.env, stdio: ["ignore", "ignore", log] });
    closeSync(log);
    let exited = null;
    this.proc.once("exit", (code, signal) => {
      exited = { code, signal };
    });
    const deadline = Date.now() + 30_000;
    while (!(await accepts(this.sock))) {
      if (exited) throw new Error(`daemon exited (${JSON.stringify(exited)}):\n${this.logs()}`);
      if (Date.now() > deadline) throw new Error(`daemon did not listen on ${this.sock}:\n${this.logs()}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    return this;
  }

  logs() {
    return existsSync(this.logPath) ? readFileSync(this.logPath, "utf8") : "";
  }

  async stop(signal = "SIGTERM") {
    const p = this.proc;
    if (p && p.exitCode === null && p.signalCode === null) {
      const done = new Promise((r) => p.once("exit", r));
      p.kill(signal);
      await done;
    }
  }

  async remove() {
    await this.stop("SIGKILL");
    rmSync(this.root, { recursive: true, force: true });
  }
}

/**
 * Speaks MessagePack-RPC like the daemon, for streams, events and odd answers:
 * - `chat`: with `stream: true` sends `chat.chunk [msgid, {delta, seq}]` for each string of
 *   `metadata.chunks` (default Hel/lo/!), then the result. `metadata.hold` then waits for
 *   `$/cancel [msgid]` or `chat.cancel {id}` and answers `cancelled` with the usage so far;
 *   `metadata.fail` answers `provider_error`. `metadata.raw_chunks` (chunk bodies such as
 *   `{reasoning_delta}` or `{tool_call: {...}}`) are sent as they are, with `seq`, instead of
 *   `chunks`; `metadata.result` is merged into the result.
 * - `events.subscribe`/`events.unsubscribe` answer `{kinds}` (followed in the same write by the
 *   event `afterSubscribe`, if set); `emit()` sends `event`s.
 * - `weird`: an unknown error code; `break`: sends a request (the daemon never does); `garbage`:
 *   sends bytes that are not MessagePack; `nope`: method_not_found; anything else echoes.
 * Every received message is kept in `received`.
 */
export class FakeServer {
  constructor() {
    this.root = tempDir("llm-sidecar-fake-");
    this.path = join(this.root, "sock");
    this.received = [];
    this.conns = new Set();
    this.cancelWaiters = new Map();
    this.cancelled = new Set();
    this.afterSubscribe = null;
    this.server = createServer((sock) => this.serve(sock));
  }

  listen() {
    return new Promise((r) => this.server.listen(this.path, () => r(this)));
  }

  async close() {
    for (const c of this.conns) c.destroy();
    await new Promise((r) => this.server.close(r));
    rmSync(this.root, { recursive: true, force: true });
  }

  messages(method) {
    return this.received.filter((m) => (m[0] === 0 && m[2] === method) || (m[0] === 2 && m[1] === method));
  }

  cancelledIds() {
    return this.messages("$/cancel").map((m) => m[2][0]);
  }

  emit(body) {
    for (const c of this.conns) c.write(encode([2, "event", [body]]));
  }

  markCancelled(msgid) {
    this.cancelled.add(msgid);
    this.cancelWaiters.get(msgid)?.();
  }

  async serve(sock) {
    this.conns.add(sock);
    sock.on("error", () => undefined);
    sock.on("close", () => this.conns.delete(sock));
    try {
      for await (const msg of decodeMultiStream(sock)) {
        this.received.push(msg);
        if (msg[0] === 2 && msg[1] === "$/cancel") this.markCancelled(msg[2][0]);
        else if (msg[0] === 0) void this.request(sock, msg);
      }
    } catch {
      // connection reset
    }
  }

  async request(sock, [, msgid, method, params]) {
    const arg = params[0] ?? {};
    const send = (m) => sock.writable && sock.write(encode(m));
    switch (method) {
      case "chat":
        return this.chat(send, msgid, arg);
      case "chat.cancel":
        this.markCancelled(arg.id);
        return send([1, msgid, null, { cancelled: true }]);
      case "events.subscribe":
        if (this.afterSubscribe) {
          // The answer and an event in one write.
          const reply = encode([1, msgid, null, { kinds: arg.kinds ?? [] }]);
          const event = encode([2, "event", [this.afterSubscribe]]);
          return sock.write(Buffer.concat([reply, event]));
        }
        return send([1, msgid, null, { kinds: arg.kinds ?? [] }]);
      case "events.unsubscribe":
        return send([1, msgid, null, { kinds: arg.kinds ?? [] }]);
      case "nope":
        return send([1, msgid, { code: "method_not_found", message: "no", data: { method: "nope" } }, null]);
      case "weird":
        return send([1, msgid, { code: "teapot", message: "short and stout", data: { a: 1 } }, null]);
      case "break":
        return send([0, 99, "client.method", []]);
      case "garbage":
        return sock.write(Buffer.from([0xc1, 0xc1, 0xc1]));
      case "slow":
        await new Promise((r) => setTimeout(r, arg.ms ?? 0));
        return send([1, msgid, null, { slow: arg.ms ?? 0 }]);
      default:
        return send([1, msgid, null, { method, params }]);
    }
  }

  async chat(send, msgid, arg) {
    const meta = arg.metadata ?? {};
    let chunks = meta.chunks ?? ["Hel", "lo", "!"];
    if (meta.fail) {
      return send([1, msgid, { code: "provider_error", message: "upstream 500", data: { provider: "mock", status: 500, attempts: 3 } }, null]);
    }
    let sent = 0;
    if (arg.stream && meta.raw_chunks) {
      for (const [i, body] of meta.raw_chunks.entries()) send([2, "chat.chunk", [msgid, { ...body, seq: i }]]);
      chunks = meta.raw_chunks.filter((b) => "delta" in b).map((b) => b.delta);
    } else if (arg.stream) {
      for (const [i, delta] of chunks.entries()) {
        if (this.cancelled.has(msgid)) break;
        send([2, "chat.chunk", [msgid, { delta, seq: i }]]);
        sent++;
        await new Promise((r) => setImmediate(r));
      }
    }
    if (meta.hold && !this.cancelled.has(msgid)) {
      await new Promise((r) => {
        this.cancelWaiters.set(msgid, r);
        setTimeout(r, 30_000).unref();
      });
    }
    const usage = { input: 5, output: arg.stream ? sent : chunks.length, cached: 0, reasoning: 0, estimated: false };
    if (this.cancelled.has(msgid)) {
      return send([1, msgid, { code: "cancelled", message: "the request was cancelled", data: { usage, cost_microusd: 7 } }, null]);
    }
    send([1, msgid, null, { content: chunks.join(""), finish_reason: "stop", model: arg.model, provider: "mock", usage, cost_microusd: 42, ...(meta.result ?? {}) }]);
  }
}

// ---- an OpenAI-compatible mock provider ----------------------------------------------------

export const DELTAS = ["Hel", "lo", " the", "re"];
export const USAGE = { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 };
const COMPLETION = {
  id: "x",
  object: "chat.completion",
  model: "gpt-4o-mini",
  choices: [{ index: 0, message: { role: "assistant", content: "Hello there" }, finish_reason: "stop" }],
  usage: USAGE,
};

export const TOOLS = [
  {
    name: "get_weather",
    description: "Current weather of a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
];
const TOOL_COMPLETION = {
  id: "t",
  object: "chat.completion",
  model: "gpt-4o-mini",
  choices: [
    {
      index: 0,
      message: {
        role: "assistant",
        content: null,
        tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city": "Paris"}' } }],
      },
      finish_reason: "tool_calls",
    },
  ],
  usage: { prompt_tokens: 20, completion_tokens: 8, total_tokens: 28 },
};
/** `delta.tool_calls` pieces of a streamed tool call: id and name first, then the arguments in parts. */
const TOOL_STREAM = [
  { tool_calls: [{ index: 0, id: "call_1", type: "function", function: { name: "get_weather", arguments: "" } }] },
  { tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] },
  { tool_calls: [{ index: 0, function: { arguments: ' "Paris"}' } }] },
];
/** A request with tools whose last message is not a tool result: the mock calls the tool. */
const wantsToolCall = (body) => Boolean(body.tools?.length) && body.messages?.at(-1)?.role !== "tool";

const chunk = (choices, usage) =>
  `data: ${JSON.stringify({ id: "x", object: "chat.completion.chunk", model: "gpt-4o-mini", choices, ...(usage ? { usage } : {}) })}\n\n`;

/**
 * POST /v1/chat/completions: JSON, or SSE for `stream: true`, in the real OpenAI wire format.
 * `slow`: a chunk every 200 ms for ~10 s. `pace = {firstDelayMs, gapMs, count, stallAfter}`: wait
 * `firstDelayMs` before the first chunk, then `count` chunks `gapMs` apart, and after
 * `stallAfter` chunks send nothing more (until the daemon closes the connection). `closedEarly`:
 * the daemon closed a stream before its end (a cancel reached the provider).
 */
export class MockProvider {
  constructor() {
    this.requests = [];
    this.auth = [];
    this.reset();
    this.server = createHttpServer((req, res) => this.handle(req, res));
  }

  reset() {
    this.slow = false;
    this.pace = null;
    this.closedEarly = false;
  }

  listen() {
    return new Promise((r) => this.server.listen(0, "127.0.0.1", () => r(this)));
  }

  get port() {
    return this.server.address().port;
  }

  close() {
    this.server.closeAllConnections?.();
    return new Promise((r) => this.server.close(r));
  }

  async handle(req, res) {
    let raw = "";
    for await (const part of req) raw += part;
    const body = raw ? JSON.parse(raw) : {};
    this.requests.push(body);
    this.auth.push(req.headers.authorization ?? "");
    if (req.method !== "POST" || req.url !== "/v1/chat/completions") {
      res.writeHead(404).end();
      return;
    }
    if (!body.stream) {
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(wantsToolCall(body) ? TOOL_COMPLETION : COMPLETION));
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    let finished = false;
    res.once("close", () => {
      if (!finished) this.closedEarly = true;
    });
    const pace = this.slow ? { gapMs: 200, count: 50 } : this.pace;
    if (wantsToolCall(body)) {
      for (const d of TOOL_STREAM) res.write(chunk([{ index: 0, delta: d, finish_reason: null }]));
      res.write(chunk([{ index: 0, delta: {}, finish_reason: "tool_calls" }]));
    } else if (pace) {
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
      if (pace.firstDelayMs) await sleep(pace.firstDelayMs);
      for (let i = 0; i < (pace.count ?? 4); i++) {
        if (res.destroyed || this.closedEarly) return;
        if (pace.stallAfter !== undefined && i >= pace.stallAfter) {
          await new Promise((r) => res.once("close", r));
          return;
        }
        if (i > 0 && pace.gapMs) await sleep(pace.gapMs);
        if (res.destroyed || this.closedEarly) return;
        res.write(chunk([{ index: 0, delta: { content: `w${i} ` }, finish_reason: null }]));
      }
      if (res.destroyed || this.closedEarly) return;
      res.write(chunk([{ index: 0, delta: {}, finish_reason: "stop" }]));
    } else {
      for (const d of DELTAS) res.write(chunk([{ index: 0, delta: { content: d }, finish_reason: null }]));
      res.write(chunk([{ index: 0, delta: {}, finish_reason: "stop" }]));
    }
    finished = true;
    res.write(chunk([], USAGE));
    res.end("data: [DONE]\n\n");
  }
}

/** A daemon whose `openai` provider is `mock` (key from MOCK_KEY); `extraConfig` is appended to config.toml. */
export async function daemonWithMock(mock, extraConfig = "") {
  const daemon = new Daemon({ env: { MOCK_KEY: "sk-test-client-lib" } });
  const config = join(daemon.root, "config.toml");
  writeFileSync(config, `[providers.openai]\nbase_url = "http://127.0.0.1:${mock.port}/v1"\nkey_env = "MOCK_KEY"\n${extraConfig}`);
  daemon.args.push("--config", config);
  return daemon.start();
}
