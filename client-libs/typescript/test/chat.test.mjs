// `chat` through the real daemon to a tiny OpenAI-compatible mock provider (http.createServer).
// Covers what the fake RPC server cannot: the daemon's provider path, streaming relay, cancel
// reaching the upstream connection, metering into usage.records, models.list and quota.status.

import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
import { after, before, beforeEach, describe, test } from "node:test";
import { Cancelled, Client } from "llm-sidecar";
import { Daemon, waitUntil } from "./support.mjs";

const MESSAGES = [{ role: "user", content: "hi" }];
const MODEL = "openai/gpt-4o-mini";
const DELTAS = ["Hel", "lo", " the", "re"];
const USAGE = { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 };
const COMPLETION = {
  id: "x",
  object: "chat.completion",
  model: "gpt-4o-mini",
  choices: [{ index: 0, message: { role: "assistant", content: "Hello there" }, finish_reason: "stop" }],
  usage: USAGE,
};

const chunk = (choices, usage) =>
  `data: ${JSON.stringify({ id: "x", object: "chat.completion.chunk", model: "gpt-4o-mini", choices, ...(usage ? { usage } : {}) })}\n\n`;

/** POST /v1/chat/completions: JSON, or SSE for `stream: true`; `slow` streams a chunk every 200 ms for ~10 s. */
class MockProvider {
  constructor() {
    this.slow = false;
    this.requests = [];
    this.auth = [];
    this.closedEarly = false;
    this.server = createServer((req, res) => this.handle(req, res));
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
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(COMPLETION));
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    if (this.slow) {
      let finished = false;
      res.once("close", () => {
        if (!finished) this.closedEarly = true;
      });
      for (let i = 0; i < 50; i++) {
        if (res.destroyed || this.closedEarly) return;
        res.write(chunk([{ index: 0, delta: { content: `w${i} ` }, finish_reason: null }]));
        await new Promise((r) => setTimeout(r, 200));
      }
      finished = true;
    } else {
      for (const d of DELTAS) res.write(chunk([{ index: 0, delta: { content: d }, finish_reason: null }]));
      res.write(chunk([{ index: 0, delta: {}, finish_reason: "stop" }]));
    }
    res.write(chunk([], USAGE));
    res.end("data: [DONE]\n\n");
  }
}

let mock;
let daemon;
let c;
before(async () => {
  mock = await new MockProvider().listen();
  daemon = new Daemon({ env: { MOCK_KEY: "sk-test-client-lib" } });
  const config = join(daemon.root, "config.toml");
  writeFileSync(config, `[providers.openai]\nbase_url = "http://127.0.0.1:${mock.port}/v1"\nkey_env = "MOCK_KEY"\n`);
  daemon.args.push("--config", config);
  await daemon.start();
  c = await Client.connect({ path: daemon.sock, app: "node-chat" });
});
after(async () => {
  c?.close();
  await daemon?.remove();
  await mock?.close();
});
beforeEach(() => {
  mock.slow = false;
});

describe("chat against the real daemon and a mock provider", () => {
  test("non-streaming: content and usage", async () => {
    const n = mock.requests.length;
    const res = await c.chat({ model: MODEL, messages: MESSAGES });
    assert.equal(res.content, "Hello there", daemon.logs());
    assert.equal(res.usage.input, 5);
    assert.equal(res.usage.output, 2);
    assert.deepEqual(mock.requests[n].messages, MESSAGES);
    assert.equal(mock.auth[n], "Bearer sk-test-client-lib");
  });

  test("streaming: deltas in order, then .result", async () => {
    const stream = c.chat({ model: MODEL, messages: MESSAGES, stream: true });
    const deltas = [];
    for await (const ch of stream) deltas.push(ch.delta);
    assert.equal(deltas.join(""), "Hello there");
    assert.deepEqual(deltas.filter((d) => d), DELTAS);
    assert.equal(stream.result.content, "Hello there");
    assert.equal(stream.result.usage.input, 5);
    assert.equal(stream.result.usage.output, 2);
    assert.deepEqual(await stream.finalResult(), stream.result);
  });

  test("cancelling a slow stream: Cancelled with usage, upstream connection closed", async () => {
    mock.slow = true;
    const started = Date.now();
    const stream = c.chat({ model: MODEL, messages: MESSAGES, stream: true });
    let seen = 0;
    await assert.rejects(
      (async () => {
        for await (const ch of stream) {
          seen++;
          if (seen === 1) assert.ok(ch.delta.startsWith("w0"));
          if (seen === 2) stream.cancel();
        }
      })(),
      (e) => {
        assert.ok(e instanceof Cancelled, String(e));
        assert.ok(e.data && "usage" in e.data, JSON.stringify(e.data));
        return true;
      },
    );
    assert.ok(Date.now() - started < 8000);
    assert.equal(stream.result, undefined);
    await waitUntil(() => mock.closedEarly, { timeoutMs: 5000, what: "the mock to see the connection closed" });
  });

  test("models.list, usage.records (every chat metered), quota.status", async () => {
    const models = await c.modelsList();
    assert.ok(models && typeof models === "object");
    assert.match(JSON.stringify(models), /openai/);
    const recs = await c.usageRecords({ provider: "openai" });
    const done = recs.records.filter((r) => r.status !== "cancelled" && r.status !== "error");
    assert.ok(done.length >= 2, JSON.stringify(recs));
    for (const r of done) {
      assert.equal(r.provider, "openai");
      assert.equal(r.input_tokens, 5);
      assert.equal(r.output_tokens, 2);
    }
    const quota = await c.quotaStatus();
    assert.ok(quota && typeof quota === "object");
  });
});
