// The client against the real daemon: connect, discovery, wrappers, errors, cancel, concurrency, events.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  CallTimeout,
  Cancelled,
  Client,
  ConnectionClosed,
  DaemonNotRunning,
  InvalidParams,
  METHOD_PARAMS,
  MethodNotFound,
  PROTOCOL,
  SidecarConnectionError,
  SidecarError,
  connect,
  socketPath,
} from "llm-sidecar";
import { Daemon, LIB_DIR, tempDir, waitUntil } from "./support.mjs";

let daemon;
before(async () => {
  daemon = await new Daemon().start();
});
after(async () => {
  await daemon.remove();
});

async function withClient(opts, fn) {
  const c = await Client.connect(opts);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

describe("connect", () => {
  test("names the app with daemon.hello", async () => {
    await withClient({ path: daemon.sock, app: "node-app", appVersion: "1.0.0" }, async (c) => {
      assert.equal(c.helloResult.app, "node-app");
      assert.equal(c.helloResult.protocol, PROTOCOL);
      const info = await c.info();
      assert.equal(info.app, "node-app");
      assert.equal(info.socket, daemon.sock);
      assert.equal(info.pid, daemon.proc.pid);
      assert.ok(info.connections >= 1);
    });
  });

  test("no daemon: DaemonNotRunning with a hint", async () => {
    const dir = tempDir();
    const missing = join(dir, "nothing", "sock");
    await assert.rejects(Client.connect(missing), (e) => {
      assert.ok(e instanceof DaemonNotRunning && e instanceof SidecarConnectionError && e instanceof SidecarError);
      assert.equal(e.code, "daemon_not_running");
      assert.deepEqual(e.data, { path: missing });
      assert.match(e.message, /llm-sidecar serve/);
      return true;
    });
    // A socket file left by a dead daemon: connection refused, same error.
    const stale = join(dir, "stale.sock");
    execFileSync("python3", ["-c", "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])", stale]);
    await assert.rejects(connect({ path: stale }), DaemonNotRunning);
  });

  test("socket path rules", () => {
    const uid = process.getuid();
    assert.equal(socketPath("/x/sock", { LLM_SIDECAR_SOCK: "/env/sock" }), "/x/sock");
    assert.equal(socketPath(undefined, { LLM_SIDECAR_SOCK: "/env/sock", XDG_RUNTIME_DIR: "/run/user/1" }), "/env/sock");
    assert.equal(socketPath(undefined, { LLM_SIDECAR_SOCK: "", XDG_RUNTIME_DIR: "/run/user/1" }), "/run/user/1/llm-sidecar/sock");
    assert.equal(socketPath(undefined, { XDG_RUNTIME_DIR: "", TMPDIR: "/var/tmp/" }), `/var/tmp/llm-sidecar-${uid}/sock`);
    assert.equal(socketPath(undefined, {}), `/tmp/llm-sidecar-${uid}/sock`);
  });

  test("discovery by $LLM_SIDECAR_SOCK", async () => {
    const saved = process.env.LLM_SIDECAR_SOCK;
    process.env.LLM_SIDECAR_SOCK = daemon.sock;
    try {
      await withClient({}, async (c) => {
        assert.equal(c.path, daemon.sock);
        assert.equal((await c.ping()).pong, true);
      });
    } finally {
      if (saved === undefined) delete process.env.LLM_SIDECAR_SOCK;
      else process.env.LLM_SIDECAR_SOCK = saved;
    }
  });

  for (const where of ["XDG_RUNTIME_DIR", "TMPDIR"]) {
    test(`a daemon without --socket binds where a client looks (${where})`, async () => {
      const d = new Daemon({ socketArg: false });
      try {
        const env = { LLM_SIDECAR_SOCK: undefined };
        if (where === "XDG_RUNTIME_DIR") {
          env.XDG_RUNTIME_DIR = join(d.root, "xdg");
        } else {
          env.XDG_RUNTIME_DIR = undefined;
          env.TMPDIR = join(d.root, "tmp");
          mkdirSync(env.TMPDIR);
        }
        for (const [k, v] of Object.entries(env)) {
          if (v === undefined) delete d.env[k];
          else d.env[k] = v;
        }
        const expected = socketPath(undefined, d.env);
        await d.start(expected);
        await withClient({ path: socketPath(undefined, d.env) }, async (c) => {
          assert.equal((await c.info()).socket, expected);
        });
      } finally {
        await d.remove();
      }
    });
  }
});

describe("wrappers", () => {
  test("daemon.* and events.*", async () => {
    await withClient(daemon.sock, async (c) => {
      const hello = await c.hello({ app: "wrapper-test", version: "0.0.1" });
      assert.equal(hello.server, "llm-sidecar");
      assert.equal(hello.app, "wrapper-test");
      assert.equal(typeof hello.connection_id, "number");
      const info = await c.info();
      assert.equal(info.app, "wrapper-test");
      const names = new Set((await c.methods()).methods.map((m) => m.name));
      for (const n of ["daemon.hello", "daemon.info", "daemon.methods", "daemon.ping", "events.subscribe", "events.unsubscribe"]) {
        assert.ok(names.has(n), n);
      }
      assert.deepEqual(await c.ping(), { pong: true, delay_ms: 0 });
      assert.deepEqual(await c.ping({ delay_ms: 20 }), { pong: true, delay_ms: 20 });
      assert.deepEqual((await c.eventsSubscribe({ kinds: ["vault.locked", "tier.changed"] })).kinds, ["tier.changed", "vault.locked"]);
      assert.deepEqual((await c.eventsUnsubscribe({ kinds: ["tier.changed"] })).kinds, ["vault.locked"]);
      assert.deepEqual((await c.eventsUnsubscribe()).kinds, []);
    });
  });

  test("every method the daemon lists has a wrapper with its param names", async () => {
    const listed = await withClient(daemon.sock, async (c) => (await c.methods()).methods.filter((m) => m.kind === "request"));
    assert.ok(listed.length > 0);
    const problems = [];
    for (const m of listed) {
      const ours = METHOD_PARAMS[m.name];
      if (!ours) problems.push(`no wrapper for ${m.name}`);
      else if ([...shapeNames(m.params)].sort().join() !== [...ours].sort().join()) {
        problems.push(`${m.name}: daemon ${[...shapeNames(m.params)].sort()} vs wrapper ${[...ours].sort()}`);
      }
    }
    assert.deepEqual(problems, [], "update client-libs/methods.json and run generate.py");
  });

  test("generated wrappers are up to date with methods.json", () => {
    execFileSync("python3", [join(LIB_DIR, "..", "generate.py"), "--check"], { stdio: "pipe" });
  });

  test("generic call", async () => {
    await withClient(daemon.sock, async (c) => {
      assert.deepEqual(await c.call("daemon.ping", { delay_ms: 1 }), { pong: true, delay_ms: 1 });
      assert.equal((await c.call("daemon.ping", [{ delay_ms: 2 }])).delay_ms, 2);
      assert.equal((await c.call("daemon.ping", { delay_ms: undefined })).delay_ms, 0);
      assert.equal((await c.call("daemon.info")).server, "llm-sidecar");
      assert.equal((await c.call("daemon.info", [])).server, "llm-sidecar");
      await assert.rejects(c.call("daemon.info", "nope"), TypeError);
    });
  });
});

/** Top-level field names of a `daemon.methods` params shape like `{app: str, version?: str}`. */
function shapeNames(shape) {
  const names = new Set();
  const start = shape.indexOf("{");
  if (start < 0) return names;
  let depth = 0;
  let token = "";
  for (const ch of shape.slice(start)) {
    if ("{[(".includes(ch)) depth++;
    else if ("}])".includes(ch)) {
      depth--;
      if (depth === 0) break;
    }
    if (depth === 1) {
      token += ch;
      if (ch === ":") {
        const m = /(\w+)\??\s*:$/.exec(token);
        if (m) names.add(m[1]);
        token = "";
      } else if (ch === "," || ch === "|") token = "";
    }
  }
  return names;
}

test("shape parser", () => {
  assert.deepEqual([...shapeNames("{app: str, version?: str}")], ["app", "version"]);
  assert.deepEqual([...shapeNames("{}")], []);
  assert.deepEqual([...shapeNames('{kinds: [str]}  ("*" for all)')], ["kinds"]);
  assert.deepEqual([...shapeNames("{a?: int | b?: float, c: {d: int}, e: [{f: str}]}")], ["a", "b", "c", "e"]);
});

describe("errors", () => {
  test("codes map to classes carrying data", async () => {
    await withClient(daemon.sock, async (c) => {
      await assert.rejects(c.call("no.such.method", {}), (e) => {
        assert.ok(e instanceof MethodNotFound && e instanceof SidecarError);
        assert.equal(e.code, "method_not_found");
        assert.equal(e.name, "MethodNotFound");
        assert.deepEqual(e.data, { method: "no.such.method" });
        assert.match(e.message, /daemon\.methods/);
        return true;
      });
      await assert.rejects(c.ping({ delay_ms: 60_001 }), (e) => e instanceof InvalidParams && /60000/.test(e.message));
      await assert.rejects(c.call("daemon.ping", { bogus: 1 }), (e) => e instanceof InvalidParams && /unknown field/.test(e.message));
      await assert.rejects(c.hello({ app: "" }), InvalidParams);
      await assert.rejects(c.call("daemon.info", [42]), InvalidParams);
      assert.equal((await c.ping()).pong, true);
    });
  });
});

describe("cancellation", () => {
  test("AbortSignal sends $/cancel; the call rejects with Cancelled", async () => {
    await withClient(daemon.sock, async (c) => {
      const t0 = Date.now();
      const ac = new AbortController();
      const p = c.ping({ delay_ms: 30_000 }, { signal: ac.signal });
      ac.abort();
      await assert.rejects(p, (e) => e instanceof Cancelled && e.code === "cancelled");
      assert.ok(Date.now() - t0 < 10_000);
      // Aborted before it was sent: rejects at once, nothing is sent.
      await assert.rejects(c.ping({}, { signal: AbortSignal.abort() }), Cancelled);
    });
  });

  test("start().cancel() and timeoutMs", async () => {
    await withClient(daemon.sock, async (c) => {
      const pending = c.start("daemon.ping", { delay_ms: 30_000 });
      assert.equal(typeof pending.msgid, "number");
      pending.cancel();
      await assert.rejects(pending.promise, Cancelled);
      const t0 = Date.now();
      await assert.rejects(c.ping({ delay_ms: 30_000 }, { timeoutMs: 100 }), CallTimeout);
      assert.ok(Date.now() - t0 < 5_000);
      assert.equal((await c.ping({ delay_ms: 1 }, { timeoutMs: 10_000 })).pong, true);
    });
  });
});

describe("concurrency", () => {
  test("many concurrent calls on one connection, answered in completion order", async () => {
    await withClient(daemon.sock, async (c) => {
      const slow = c.start("daemon.ping", { delay_ms: 1000 });
      assert.equal((await c.ping()).delay_ms, 0);
      assert.equal(slow.done, false);
      const delays = Array.from({ length: 500 }, (_, i) => (i * 13) % 97);
      const order = [];
      const results = await Promise.all(
        delays.map(async (d) => {
          const r = await c.ping({ delay_ms: d });
          order.push(d);
          return r.delay_ms;
        }),
      );
      assert.deepEqual(results, delays);
      assert.notDeepEqual(order, delays);
      assert.equal((await slow).delay_ms, 1000); // PendingCall is awaitable
    });
  });

  test("many clients", async () => {
    const clients = await Promise.all(Array.from({ length: 20 }, (_, i) => Client.connect({ path: daemon.sock, app: `app-${i}` })));
    try {
      const infos = await Promise.all(clients.map((c) => c.info()));
      infos.forEach((info, i) => assert.equal(info.app, `app-${i}`));
    } finally {
      clients.forEach((c) => c.close());
    }
  });
});

describe("events", () => {
  test("subscribe: unknown kind rejected, '*' expands, close unsubscribes", async () => {
    await withClient(daemon.sock, async (c) => {
      await assert.rejects(c.subscribe(["no.such.kind"]), (e) => e instanceof InvalidParams && /unknown event kind/.test(e.message));
      const every = await c.subscribe("*");
      for (const k of ["vault.locked", "quota.exceeded", "tier.changed"]) assert.ok(every.kinds.has(k), k);
      const one = await c.subscribe(["vault.locked"]);
      await every.close();
      assert.deepEqual((await c.eventsUnsubscribe({ kinds: [] })).kinds, ["vault.locked"]);
      await one.close();
      assert.deepEqual((await c.eventsUnsubscribe({ kinds: [] })).kinds, []);
    });
  });
});

describe("connection loss", () => {
  test("daemon killed: pending calls reject with ConnectionClosed, subscriptions end", async () => {
    const d = await new Daemon().start();
    try {
      const c = await Client.connect(d.sock);
      const pending = c.ping({ delay_ms: 30_000 });
      const sub = await c.subscribe("*");
      const subClosed = new Promise((r) => sub.once("close", r));
      await d.stop("SIGKILL");
      await assert.rejects(pending, ConnectionClosed);
      await subClosed;
      const reason = await c.whenClosed;
      assert.ok(reason instanceof ConnectionClosed);
      await waitUntil(() => c.isClosed);
      await assert.rejects(c.ping(), ConnectionClosed);
      c.close();
    } finally {
      await d.remove();
    }
  });
});
