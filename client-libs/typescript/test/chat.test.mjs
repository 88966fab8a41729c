// `chat` through the real daemon to a tiny OpenAI-compatible mock provider (http.createServer).
// Covers what the fake RPC server cannot: the daemon's provider path, streaming relay, cancel
// reaching the upstream connection, metering into usage.records, models.list and quota.status.

import assert from "node:assert/strict";
import { after, before, beforeEach, describe, test } from "node:test";
import { Cancelled, ChatStream, Client } from "llm-sidecar";
import { DELTAS, MockProvider, TOOLS, daemonWithMock, waitUntil } from "./support.mjs";

const MESSAGES = [{ role: "user", content: "hi" }];
const MODEL = "openai/gpt-4o-mini";

let mock;
let daemon;
let c;
before(async () => {
  mock = await new MockProvider().listen();
  daemon = await daemonWithMock(mock);
  c = await Client.connect({ path: daemon.sock, app: "node-chat" });
});
after(async () => {
  c?.close();
  await daemon?.remove();
  await mock?.close();
});
beforeEach(() => {
  mock.reset();
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
    const stream = await c.chat({ model: MODEL, messages: MESSAGES, stream: true });
    assert.ok(stream instanceof ChatStream);
    const deltas = [];
    for await (const ch of stream) deltas.push(ch.delta);
    assert.equal(deltas.join(""), "Hello there");
    assert.deepEqual(deltas.filter((d) => d), DELTAS);
    assert.equal(stream.result.content, "Hello there");
    assert.equal(stream.result.usage.input, 5);
    assert.equal(stream.result.usage.output, 2);
    assert.deepEqual(await stream.finalResult(), { ...stream.result, status: "ok" });
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

  // After the metering test, which counts the records of the chats above.
  test("tool call round trip: parsed arguments, message + tool message sent back", async () => {
    const n = mock.requests.length;
    const messages = [{ role: "user", content: "weather in Paris?" }];
    const res = await c.chat({ model: MODEL, messages, tools: TOOLS, tool_choice: "auto" });
    assert.equal(res.finish_reason, "tool_calls", daemon.logs());
    assert.deepEqual(res.tool_calls, [{ id: "call_1", name: "get_weather", arguments: { city: "Paris" } }]);
    assert.equal(res.message.role, "assistant");
    messages.push(res.message, { role: "tool", tool_call_id: res.tool_calls[0].id, content: "22 C, sunny" });
    const final = await c.chat({ model: MODEL, messages, tools: TOOLS });
    assert.equal(final.content, "Hello there");
    assert.deepEqual(final.tool_calls, []);
    assert.deepEqual(mock.requests[n].tools, [{ type: "function", function: TOOLS[0] }]);
    assert.equal(mock.requests[n].tool_choice, "auto");
    checkSecondRequest(mock.requests[n + 1]);
  });

  test("streamed tool call: typed tool_call deltas, then the round trip", async () => {
    const n = mock.requests.length;
    const messages = [{ role: "user", content: "weather in Paris?" }];
    const stream = await c.chat({ model: MODEL, messages, tools: TOOLS, stream: true });
    assert.ok(stream instanceof ChatStream);
    const deltas = [];
    for await (const d of stream.deltas()) deltas.push(d);
    const calls = deltas.filter((d) => d.kind === "tool_call");
    assert.ok(calls.length > 0 && calls.every((d) => d.index === 0), JSON.stringify(deltas));
    assert.equal(calls[0].id, "call_1");
    assert.equal(calls[0].name, "get_weather");
    assert.deepEqual(JSON.parse(calls.map((d) => d.arguments_delta).join("")), { city: "Paris" });
    assert.equal(deltas.filter((d) => d.kind === "text").length, 0);
    assert.equal(stream.result.finish_reason, "tool_calls");
    assert.deepEqual(stream.result.tool_calls, [{ id: "call_1", name: "get_weather", arguments: { city: "Paris" } }]);
    messages.push(stream.result.message, { role: "tool", tool_call_id: "call_1", content: "22 C, sunny" });
    const follow = c.chat({ model: MODEL, messages, tools: TOOLS, stream: true });
    let text = "";
    for await (const ch of follow) text += ch.delta;
    assert.equal(text, "Hello there");
    assert.equal(mock.requests[n].stream, true);
    checkSecondRequest(mock.requests[n + 1]);
  });
});

/** The request after the tool ran: the assistant's tool call, then the tool's answer. */
function checkSecondRequest(body) {
  const [user, assistant, tool] = body.messages;
  assert.deepEqual(user, { role: "user", content: "weather in Paris?" });
  assert.equal(assistant.role, "assistant");
  assert.equal(assistant.tool_calls.length, 1);
  const [call] = assistant.tool_calls;
  assert.equal(call.id, "call_1");
  assert.equal(call.type, "function");
  assert.equal(call.function.name, "get_weather");
  assert.deepEqual(JSON.parse(call.function.arguments), { city: "Paris" });
  assert.deepEqual(tool, { role: "tool", tool_call_id: "call_1", content: "22 C, sunny" });
  assert.equal(body.tools[0].function.name, "get_weather");
}
