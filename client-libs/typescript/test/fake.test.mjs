// Streaming, events and wire shapes against a fake MessagePack-RPC server (support.mjs FakeServer).
// Odd answers, holds and event delivery are easier to drive from a fake; the fake speaks the
// daemon's wire format (docs/protocol.md §7-8). `chat` through the real daemon and a mock
// provider is in chat.test.mjs.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, test } from "node:test";
import { Cancelled, Client, ConnectionClosed, MethodNotFound, ProtocolError, ProviderError, SidecarError } from "llm-sidecar";
import { FakeServer, LIB_DIR, waitUntil } from "./support.mjs";

const MESSAGES = [{ role: "user", content: "hi" }];
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

describe("streaming chat", () => {
  test("for await yields chunks, then .result holds the final result", async () => {
    const stream = c.chat({ model: "fast", messages: MESSAGES, stream: true, max_tokens: 5, system: undefined, metadata: { chunks: ["a", "b", "c", "d"] } });
    assert.equal(stream.result, undefined);
    const chunks = [];
    for await (const ch of stream) chunks.push(ch);
    assert.deepEqual(chunks.map((ch) => ch.delta), ["a", "b", "c", "d"]);
    assert.deepEqual(chunks.map((ch) => ch.seq), [0, 1, 2, 3]);
    assert.equal(stream.result.content, "abcd");
    assert.equal(stream.result.usage.output, 4);
    assert.equal(stream.result.cost_microusd, 42);
    assert.deepEqual(await stream.finalResult(), { ...stream.result, status: "ok" });
    const [req] = fake.messages("chat");
    assert.deepEqual(req[3], [{ model: "fast", messages: MESSAGES, stream: true, max_tokens: 5, metadata: { chunks: ["a", "b", "c", "d"] } }]);
  });

  test("without stream: the result", async () => {
    const res = await c.chat({ model: "fast", messages: MESSAGES, stop: ["x"], temperature: 0.5 });
    assert.equal(res.content, "Hello!");
    assert.deepEqual(fake.messages("chat")[0][3], [{ model: "fast", messages: MESSAGES, stop: ["x"], temperature: 0.5 }]);
  });

  test("cancel() mid-stream: iteration throws Cancelled with the usage so far", async () => {
    const stream = c.chat({ model: "fast", messages: MESSAGES, stream: true, metadata: { hold: true } });
    let seen = 0;
    await assert.rejects(
      (async () => {
        for await (const ch of stream) {
          seen++;
          if (seen === 1) {
            assert.equal(ch.delta, "Hel");
            stream.cancel();
          }
        }
      })(),
      (e) => {
        assert.ok(e instanceof Cancelled);
        assert.equal(e.data.usage.output, seen); // one output token per chunk the fake sent
        assert.equal(e.data.cost_microusd, 7);
        return true;
      },
    );
    assert.equal(stream.result, undefined);
    assert.deepEqual(fake.cancelledIds(), [stream.msgid]);
    // The call was this client's to cancel: finalResult() is the daemon's account of it.
    assert.deepEqual(await stream.finalResult(), { status: "cancelled", usage: { input: 5, output: seen, cached: 0, reasoning: 0, estimated: false }, cost_microusd: 7 });
  });

  test("breaking out of for await sends $/cancel", async () => {
    const stream = c.chat({ model: "fast", messages: MESSAGES, stream: true, metadata: { hold: true } });
    for await (const ch of stream) {
      assert.equal(ch.delta, "Hel");
      break;
    }
    await waitUntil(() => fake.cancelledIds().includes(stream.msgid), { what: "$/cancel after break" });
    assert.deepEqual(fake.cancelledIds(), [stream.msgid]);
    assert.equal((await c.call("echo", { x: 1 })).method, "echo");
  });

  test("AbortSignal and close() cancel a stream", async () => {
    const ac = new AbortController();
    const s1 = c.chat({ model: "fast", messages: MESSAGES, stream: true, metadata: { hold: true } }, { signal: ac.signal });
    const it = s1[Symbol.asyncIterator]();
    assert.equal((await it.next()).value.delta, "Hel");
    ac.abort();
    await assert.rejects(async () => {
      while (!(await it.next()).done);
    }, Cancelled);
    assert.equal((await s1.finalResult()).status, "cancelled");
    const s2 = c.chat({ model: "fast", messages: MESSAGES, stream: true, metadata: { hold: true } });
    s2.close();
    const rest = [];
    for await (const ch of s2) rest.push(ch);
    assert.deepEqual(rest, []);
    await waitUntil(() => fake.cancelledIds().length === 2, { what: "$/cancel" });
    assert.deepEqual(fake.cancelledIds(), [s1.msgid, s2.msgid]);
  });

  test("chatCancel wrapper", async () => {
    const stream = c.chat({ model: "fast", messages: MESSAGES, stream: true, metadata: { hold: true } });
    assert.deepEqual(await c.chatCancel({ id: stream.msgid }), { cancelled: true });
    assert.equal((await stream.finalResult()).status, "cancelled");
    assert.deepEqual(fake.messages("chat.cancel")[0][3], [{ id: stream.msgid }]);
  });

  test("provider error before the first chunk: the await rejects; iterating without await throws it", async () => {
    await assert.rejects(async () => await c.chat({ model: "fast", messages: MESSAGES, stream: true, metadata: { fail: true } }), ProviderError);
    const stream = c.chat({ model: "fast", messages: MESSAGES, stream: true, metadata: { fail: true } });
    await assert.rejects(stream.finalResult(), ProviderError);
    await assert.rejects(
      (async () => {
        for await (const _ of stream) void _;
      })(),
      (e) => e instanceof ProviderError && e.data.status === 500 && e.data.attempts === 3,
    );
  });

  test("interleaved streams on one connection", async () => {
    const streams = Array.from({ length: 10 }, (_, i) =>
      c.chat({ model: "m", messages: MESSAGES, stream: true, metadata: { chunks: Array.from({ length: 20 }, (_, j) => `${i}-${j}`) } }),
    );
    const outs = await Promise.all(
      streams.map(async (s) => {
        const out = [];
        for await (const ch of s) out.push(ch.delta);
        return out;
      }),
    );
    outs.forEach((out, i) => {
      assert.deepEqual(out, Array.from({ length: 20 }, (_, j) => `${i}-${j}`));
      assert.equal(streams[i].result.content, out.join(""));
    });
  });

  test("generic stream()", async () => {
    const s = c.stream("chat", { model: "x", messages: [], stream: true, metadata: { chunks: ["1", "2"] } });
    const out = [];
    for await (const ch of s) out.push(ch.delta);
    assert.deepEqual(out, ["1", "2"]);
    assert.equal(s.result.content, "12");
  });
});

describe("events", () => {
  test("EventEmitter and async iterator, filtered by kind", async () => {
    const onlyVault = await c.subscribe(["vault.locked"]);
    const got = [];
    const every = await c.subscribe("*", (e) => got.push(e.kind));
    fake.emit({ kind: "quota.threshold", percent: 80 });
    fake.emit({ kind: "vault.locked" });
    fake.emit({ kind: "events.lagged", missed: 3 });
    const it = onlyVault[Symbol.asyncIterator]();
    assert.deepEqual((await it.next()).value, { kind: "vault.locked" });
    assert.deepEqual((await it.next()).value, { kind: "events.lagged", missed: 3 });
    await waitUntil(() => got.length === 3, { what: "callback events" });
    assert.deepEqual(got, ["quota.threshold", "vault.locked", "events.lagged"]);
    await onlyVault.close();
    assert.deepEqual(await it.next(), { value: undefined, done: true });
    assert.deepEqual(fake.messages("events.unsubscribe"), []); // "*" still needs everything
    await every.close(); // the last one: unsubscribe from everything
    assert.deepEqual(fake.messages("events.unsubscribe").map((m) => m[3]), [[{}]]);
  });

  test("an event right behind the subscribe answer is not lost", async () => {
    fake.afterSubscribe = { kind: "vault.locked", first: true };
    for (let i = 0; i < 20; i++) {
      const sub = await c.subscribe(["vault.locked"]);
      const it = sub[Symbol.asyncIterator]();
      assert.deepEqual((await it.next()).value, { kind: "vault.locked", first: true });
      await sub.close();
    }
    const viaListener = await new Promise((resolve) => void c.subscribe("vault.locked", resolve));
    assert.deepEqual(viaListener, { kind: "vault.locked", first: true });
  });

  test("events before the first listener are kept for it", async () => {
    const sub = await c.subscribe(["tier.changed"]);
    fake.emit({ kind: "tier.changed", tier: "pro" });
    // The fake wrote the event before it reads this request, so the event is dispatched (with
    // nobody listening yet) before this answer arrives.
    await c.call("echo");
    const e = await new Promise((r) => sub.once("event", r));
    assert.deepEqual(e, { kind: "tier.changed", tier: "pro" });
    await sub.close();
  });
});

describe("odd answers", () => {
  test("unknown error code is a plain SidecarError", async () => {
    await assert.rejects(c.call("weird"), (e) => {
      assert.equal(e.constructor, SidecarError);
      assert.equal(e.code, "teapot");
      assert.equal(e.message, "short and stout");
      assert.deepEqual(e.data, { a: 1 });
      return true;
    });
    await assert.rejects(c.call("nope"), MethodNotFound);
  });

  test("a request from the server closes the connection with ProtocolError", async () => {
    const waiting = c.call("slow", { ms: 5000 });
    await assert.rejects(c.call("break"), ConnectionClosed);
    await assert.rejects(waiting, (e) => e instanceof ConnectionClosed && /unexpected message/.test(e.message));
    assert.ok((await c.whenClosed) instanceof ProtocolError);
  });

  test("bytes that are not MessagePack close the connection with ProtocolError", async () => {
    await assert.rejects(c.call("garbage"), ConnectionClosed);
    assert.ok((await c.whenClosed) instanceof ProtocolError);
  });
});

describe("every generated wrapper sends its method and params", () => {
  const samples = {
    str: "s",
    int: 7,
    float: 0.5,
    bool: true,
    map: { k: "v" },
    strs: ["a", "b"],
    str_or_strs: ["x"],
    int_or_str: 12,
    messages: MESSAGES,
    records: [{ id: "r1" }],
  };
  const spec = JSON.parse(readFileSync(join(LIB_DIR, "..", "methods.json"), "utf8")).methods;
  for (const m of spec.filter((m) => !m.custom)) {
    test(m.method, async () => {
      const full = Object.fromEntries(m.params.map((p) => [p.name, samples[p.type]]));
      const minimal = Object.fromEntries(m.params.filter((p) => p.required).map((p) => [p.name, samples[p.type]]));
      await c[m.ts](full);
      await c[m.ts]({ ...minimal, ...Object.fromEntries(m.params.filter((p) => !p.required).map((p) => [p.name, undefined])) });
      assert.deepEqual(
        fake.messages(m.method).map((msg) => msg[3]),
        [[full], [minimal]],
      );
    });
  }
});
