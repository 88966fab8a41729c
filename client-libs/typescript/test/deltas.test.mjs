// Typed chat stream deltas (text, reasoning, tool-call) and the new chat params, against the
// fake server (support.mjs FakeServer, `metadata.raw_chunks`).

import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, test } from "node:test";
import { ChatStream, Client, chatDelta } from "llm-sidecar";
import { FakeServer, waitUntil } from "./support.mjs";

const MESSAGES = [{ role: "user", content: "weather in Paris?" }];
const RAW = [
  { reasoning_delta: "The user wants " },
  { reasoning_delta: "the weather." },
  { delta: "Let me check." },
  { tool_call: { index: 0, id: "call_1", name: "get_weather", arguments_delta: '{"city":' } },
  { tool_call: { index: 0, arguments_delta: ' "Paris"}' } },
  { tool_call: { index: 1, id: "call_2", name: "get_time", arguments_delta: "{}" } },
  { delta: " Done." },
  { future_kind: 1 }, // a kind this library does not know: left out
];
const RESULT = {
  content: "Let me check. Done.",
  message: {
    role: "assistant",
    content: [
      { type: "thinking", text: "The user wants the weather." },
      { type: "text", text: "Let me check. Done." },
      { type: "tool_call", id: "call_1", name: "get_weather", arguments: { city: "Paris" } },
      { type: "tool_call", id: "call_2", name: "get_time", arguments: {} },
    ],
  },
  tool_calls: [
    { id: "call_1", name: "get_weather", arguments: { city: "Paris" } },
    { id: "call_2", name: "get_time", arguments: {} },
  ],
  reasoning: "The user wants the weather.",
  finish_reason: "tool_calls",
};
const EXPECTED = [
  { kind: "reasoning", text: "The user wants ", seq: 0 },
  { kind: "reasoning", text: "the weather.", seq: 1 },
  { kind: "text", text: "Let me check.", seq: 2 },
  { kind: "tool_call", index: 0, id: "call_1", name: "get_weather", arguments_delta: '{"city":', seq: 3 },
  { kind: "tool_call", index: 0, arguments_delta: ' "Paris"}', seq: 4 },
  { kind: "tool_call", index: 1, id: "call_2", name: "get_time", arguments_delta: "{}", seq: 5 },
  { kind: "text", text: " Done.", seq: 6 },
];
const META = { raw_chunks: RAW, result: RESULT };

let fake;
let c;
beforeEach(async () => {
  fake = await new FakeServer().listen();
  c = await Client.connect(fake.path);
});
afterEach(async () => {
  c.close();
  await fake.close();
});

describe("typed chat deltas", () => {
  test("deltas() yields every kind typed; .result is the assembled answer", async () => {
    const stream = await c.chat({ model: "fast", messages: MESSAGES, stream: true, metadata: META });
    assert.ok(stream instanceof ChatStream);
    const deltas = [];
    for await (const d of stream.deltas()) deltas.push(d);
    assert.deepEqual(deltas, EXPECTED);
    const args = {};
    for (const d of deltas) if (d.kind === "tool_call") args[d.index] = (args[d.index] ?? "") + d.arguments_delta;
    assert.deepEqual(args, { 0: '{"city": "Paris"}', 1: "{}" });
    assert.deepEqual(stream.result.tool_calls[0].arguments, { city: "Paris" });
    assert.equal(stream.result.finish_reason, "tool_calls");
  });

  test("for await still yields only the text chunks", async () => {
    const stream = c.chat({ model: "fast", messages: MESSAGES, stream: true, metadata: META });
    const chunks = [];
    for await (const ch of stream) chunks.push(ch);
    assert.deepEqual(chunks, [
      { delta: "Let me check.", seq: 2 },
      { delta: " Done.", seq: 6 },
    ]);
    assert.equal(stream.result.content, "Let me check. Done.");
  });

  test("generic stream() yields the raw chunks", async () => {
    const s = c.stream("chat", { model: "x", messages: [], stream: true, metadata: META });
    const got = [];
    for await (const ch of s) got.push(ch);
    assert.deepEqual(got, RAW.map((b, i) => ({ ...b, seq: i })));
  });

  test("chatDelta parses each kind", () => {
    assert.deepEqual(chatDelta({ delta: "a", seq: 3 }), { kind: "text", text: "a", seq: 3 });
    assert.deepEqual(chatDelta({ reasoning_delta: "r" }), { kind: "reasoning", text: "r", seq: undefined });
    assert.deepEqual(chatDelta({ tool_call: { index: 2, arguments_delta: "{" }, seq: 1 }), {
      kind: "tool_call",
      index: 2,
      arguments_delta: "{",
      seq: 1,
    });
    assert.equal(chatDelta({ other: 1 }), undefined);
    assert.equal(chatDelta(null), undefined);
  });

  test("breaking out of deltas() sends $/cancel", async () => {
    const stream = c.chat({ model: "fast", messages: MESSAGES, stream: true, metadata: { ...META, hold: true } });
    for await (const d of stream.deltas()) {
      assert.equal(d.kind, "reasoning");
      break;
    }
    await waitUntil(() => fake.cancelledIds().includes(stream.msgid), { what: "$/cancel after break" });
  });

  test("tools, tool_choice, parallel_tool_calls, response_format and reasoning are sent", async () => {
    const tools = [{ name: "get_weather", description: "Weather of a city", parameters: { type: "object" } }];
    await c.chat({
      model: "fast",
      messages: MESSAGES,
      tools,
      tool_choice: { name: "get_weather" },
      parallel_tool_calls: false,
      response_format: { type: "json_schema", name: "w", schema: { type: "object" }, strict: true },
      reasoning: { budget_tokens: 1024 },
    });
    assert.deepEqual(fake.messages("chat")[0][3], [
      {
        model: "fast",
        messages: MESSAGES,
        tools,
        tool_choice: { name: "get_weather" },
        parallel_tool_calls: false,
        response_format: { type: "json_schema", name: "w", schema: { type: "object" }, strict: true },
        reasoning: { budget_tokens: 1024 },
      },
    ]);
  });
});
