// Stream timeouts, refusals at await time and the outcome of a cancelled stream, through the
// real daemon to the OpenAI-compatible mock provider (support.mjs), whose pace the tests set.

import assert from "node:assert/strict";
import { after, before, beforeEach, describe, test } from "node:test";
import { CallTimeout, Cancelled, ChatStream, Client, InvalidParams, QuotaExceeded, RateLimited, TierRequired } from "llm-sidecar";
import { MockProvider, daemonWithMock, waitUntil } from "./support.mjs";

const MESSAGES = [{ role: "user", content: "hi" }];
const MODEL = "openai/gpt-4o-mini";

/** The deadline check: `ms` elapsed within ±20 % of `want`. */
function near(ms, want, what) {
  assert.ok(ms >= want * 0.8 && ms <= want * 1.2, `${what}: fired after ${ms} ms, want ${want} ms ±20 %`);
}

/** Drains an iterator, returning the deltas seen and the error it threw. */
async function drain(stream) {
  const seen = [];
  try {
    for await (const ch of stream) seen.push({ delta: ch.delta, at: Date.now() });
  } catch (e) {
    return { seen, error: e, at: Date.now() };
  }
  return { seen, error: null, at: Date.now() };
}

let mock;
let daemon;
let c;
before(async () => {
  mock = await new MockProvider().listen();
  daemon = await daemonWithMock(mock);
  c = await Client.connect({ path: daemon.sock, app: "node-streams" });
});
after(async () => {
  c?.close();
  await daemon?.remove();
  await mock?.close();
});
beforeEach(() => mock.reset());

describe("stream timeouts", () => {
  test("firstChunkTimeoutMs: the await rejects with CallTimeout at the deadline; the upstream request is dropped", async () => {
    mock.pace = { firstDelayMs: 5000, count: 3 };
    const t0 = Date.now();
    const pending = c.chat({ model: MODEL, messages: MESSAGES, stream: true }, { firstChunkTimeoutMs: 600 });
    await assert.rejects(
      async () => await pending,
      (e) => {
        assert.ok(e instanceof CallTimeout, String(e));
        assert.equal(e.code, "timeout");
        assert.equal(e.data.timeout, "first_chunk");
        assert.equal(e.data.timeout_ms, 600);
        assert.equal(e.data.msgid, pending.msgid);
        assert.match(e.message, /no first chunk within 600 ms/);
        return true;
      },
    );
    near(Date.now() - t0, 600, "first-chunk timeout");
    await waitUntil(() => mock.closedEarly, { timeoutMs: 5000, what: "the daemon to drop the upstream stream ($/cancel)" });
    await assert.rejects(pending.finalResult(), CallTimeout);
  });

  test("idleTimeoutMs: iteration throws CallTimeout that long after the last chunk", async () => {
    mock.pace = { count: 10, gapMs: 20, stallAfter: 2 };
    const stream = await c.chat({ model: MODEL, messages: MESSAGES, stream: true }, { idleTimeoutMs: 600, firstChunkTimeoutMs: 5000 });
    const { seen, error, at } = await drain(stream);
    assert.deepEqual(
      seen.map((s) => s.delta),
      ["w0 ", "w1 "],
    );
    assert.ok(error instanceof CallTimeout, String(error));
    assert.equal(error.data.timeout, "idle");
    near(at - seen.at(-1).at, 600, "idle timeout");
    await waitUntil(() => mock.closedEarly, { timeoutMs: 5000, what: "the daemon to drop the upstream stream" });
    assert.equal(stream.result, undefined);
  });

  test("timeoutMs bounds the whole stream, chunks flowing or not", async () => {
    mock.pace = { count: 100, gapMs: 50 };
    const t0 = Date.now();
    const stream = await c.chat({ model: MODEL, messages: MESSAGES, stream: true }, { timeoutMs: 800, idleTimeoutMs: 5000 });
    const { seen, error, at } = await drain(stream);
    assert.ok(seen.length >= 5, `chunks before the deadline: ${seen.length}`);
    assert.ok(error instanceof CallTimeout, String(error));
    assert.equal(error.data.timeout, "total");
    near(at - t0, 800, "overall timeout");
    await waitUntil(() => mock.closedEarly, { timeoutMs: 5000, what: "the daemon to drop the upstream stream" });
  });

  test("AbortSignal.timeout() is a CallTimeout (streams and plain calls); a plain abort stays Cancelled", async () => {
    mock.pace = { count: 100, gapMs: 50 };
    const t0 = Date.now();
    const stream = await c.chat({ model: MODEL, messages: MESSAGES, stream: true }, { signal: AbortSignal.timeout(700) });
    const { error, at } = await drain(stream);
    assert.ok(error instanceof CallTimeout, String(error));
    assert.equal(error.data.timeout, "signal");
    near(at - t0, 700, "AbortSignal.timeout on a stream");
    await waitUntil(() => mock.closedEarly, { timeoutMs: 5000, what: "the daemon to drop the upstream stream" });

    const t1 = Date.now();
    await assert.rejects(c.ping({ delay_ms: 30_000 }, { signal: AbortSignal.timeout(500) }), (e) => e instanceof CallTimeout && e.data.timeout === "signal");
    near(Date.now() - t1, 500, "AbortSignal.timeout on daemon.ping");
    // Already timed out before the call: rejects at once, nothing sent.
    const gone = AbortSignal.timeout(1);
    await new Promise((r) => setTimeout(r, 20));
    await assert.rejects(c.ping({}, { signal: gone }), CallTimeout);

    mock.reset();
    mock.pace = { count: 100, gapMs: 50 };
    const ac = new AbortController();
    const s2 = await c.chat({ model: MODEL, messages: MESSAGES, stream: true }, { signal: ac.signal });
    setTimeout(() => ac.abort(), 200);
    const r2 = await drain(s2);
    assert.ok(r2.error instanceof Cancelled && !(r2.error instanceof CallTimeout), String(r2.error));
    assert.ok("usage" in r2.error.data, JSON.stringify(r2.error.data)); // the daemon's answer, with what it billed
    assert.equal((await s2.finalResult()).status, "cancelled");
    // The connection stays usable.
    assert.equal((await c.ping({ delay_ms: 1 })).pong, true);
  });
});

describe("the result of a cancelled stream", () => {
  for (const how of ["break", "abort"]) {
    test(`after ${how}: finalResult() holds the billed usage with status cancelled, as recorded`, async () => {
      mock.pace = { count: 100, gapMs: 30 };
      const ac = new AbortController();
      const stream = await c.chat({ model: MODEL, messages: MESSAGES, stream: true }, { signal: ac.signal });
      assert.ok(stream instanceof ChatStream);
      let text = "";
      try {
        for await (const ch of stream) {
          text += ch.delta;
          if (text.split(" ").length > 3) {
            if (how === "break") break;
            ac.abort();
          }
        }
        assert.equal(how, "break");
      } catch (e) {
        assert.equal(how, "abort");
        assert.ok(e instanceof Cancelled, String(e));
      }
      const out = await stream.finalResult();
      assert.equal(out.status, "cancelled", JSON.stringify(out));
      for (const k of ["input", "output", "cached", "cache_write", "reasoning"]) assert.equal(typeof out.usage[k], "number", k);
      assert.ok(out.usage.input > 0, JSON.stringify(out.usage));
      assert.ok(out.usage.output > 0, JSON.stringify(out.usage)); // text reached the app: it was billed
      assert.ok(out.content.startsWith(text), `${out.content} / ${text}`);
      assert.equal(typeof out.cost_microusd, "number");
      assert.equal(out.provider, "openai");
      assert.equal(stream.result, undefined);
      await waitUntil(() => mock.closedEarly, { timeoutMs: 5000, what: "the daemon to drop the upstream stream" });
      // What finalResult() reports is what the daemon metered.
      const rec = (await c.usageRecords({ order: "desc", limit: 1 })).records[0];
      assert.equal(rec.status, "cancelled");
      assert.equal(rec.input_tokens, out.usage.input);
      assert.equal(rec.output_tokens, out.usage.output);
      assert.equal(rec.cost_microusd, out.cost_microusd);
      assert.equal(rec.usage_estimated, out.usage.estimated);
    });
  }

  test("a completed stream: finalResult() is the result with status ok", async () => {
    const stream = await c.chat({ model: MODEL, messages: MESSAGES, stream: true });
    for await (const _ of stream) void _;
    const out = await stream.finalResult();
    assert.equal(out.status, "ok");
    assert.equal(out.content, "Hello there");
    assert.deepEqual(out.usage, stream.result.usage);
  });
});

describe("refusals reject the await of a stream", () => {
  let pd;
  let pc;
  before(async () => {
    pd = await daemonWithMock(
      mock,
      `[policy]\ndefault_tier = "free"\n[tiers.free]\nmodels = ["gpt-4o-mini"]\nmonthly_tokens = 100000\nrequests_per_minute = 3\n[tiers.pro]\nrank = 1\n`,
    );
    pc = await Client.connect({ path: pd.sock, app: "refused" });
  });
  after(async () => {
    pc?.close();
    await pd?.remove();
  });

  const refused = async (params, cls, check) => {
    const n = mock.requests.length;
    let iterated = false;
    await assert.rejects(
      async () => {
        const s = await pc.chat({ model: MODEL, messages: MESSAGES, stream: true, ...params });
        iterated = true;
        for await (const _ of s) void _;
      },
      (e) => {
        assert.ok(e instanceof cls, `${e?.constructor?.name}: ${e?.message}`);
        check?.(e);
        return true;
      },
    );
    assert.equal(iterated, false, "the await itself must reject");
    assert.equal(mock.requests.length, n, "nothing reached the provider");
  };

  test("tier_required", async () => {
    await refused({ model: "openai/gpt-4o" }, TierRequired, (e) => {
      assert.equal(e.data.required_tier, "pro");
      assert.equal(e.data.model, "gpt-4o");
    });
  });

  test("quota_exceeded", async () => {
    await refused({ max_tokens: 200_000 }, QuotaExceeded, (e) => {
      assert.equal(e.data.metric, "tokens");
      assert.equal(e.data.limit, 100000);
      assert.equal(typeof e.data.period_end, "string");
    });
  });

  test("invalid_params", async () => {
    await refused({ messages: [] }, InvalidParams);
  });

  test("rate_limited", async () => {
    let limited = null;
    for (let i = 0; i < 6 && !limited; i++) {
      try {
        const s = await pc.chat({ model: MODEL, messages: MESSAGES, stream: true });
        for await (const _ of s) void _;
      } catch (e) {
        limited = e;
      }
    }
    assert.ok(limited instanceof RateLimited, String(limited));
    assert.ok(limited.data.retry_after_ms > 0);
    assert.equal(limited.data.limit, 3);
    await refused({}, RateLimited);
  });
});
