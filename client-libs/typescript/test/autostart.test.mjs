// Autostart against the real daemon binary: two separate Node processes racing to start it
// against a fresh runtime/data dir make exactly one daemon; failures name the binary and log.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { Client, DaemonNotRunning, DaemonStartFailed, bundledBinaryPaths, defaultDataDir, findDaemonBinary, socketPath } from "llm-sidecar";
import { LIB_DIR, daemonBinary, tempDir, waitUntil } from "./support.mjs";

/** Env of a fresh user: HOME and every XDG dir under `root`, no socket override. */
function freshEnv(root, extra = {}) {
  const env = { ...process.env };
  for (const k of ["LLM_SIDECAR_SOCK", "LLM_SIDECAR_CONFIG", "TMPDIR", "RUST_LOG"]) delete env[k];
  return {
    ...env,
    HOME: join(root, "home"),
    XDG_CONFIG_HOME: join(root, "config"),
    XDG_DATA_HOME: join(root, "data"),
    XDG_STATE_HOME: join(root, "state"),
    XDG_RUNTIME_DIR: join(root, "run"),
    ...extra,
  };
}

/** Pids of live processes whose command line contains `needle`. */
function processesWith(needle) {
  const pids = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const cmd = readFileSync(`/proc/${d}/cmdline`, "utf8").split("\0");
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      if (/\) Z /.test(stat)) continue; // a zombie has exited
      if (cmd.some((a) => a.includes(needle)) && cmd.includes("serve")) pids.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

const alive = (pid) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const roots = [];
const daemons = new Set();
after(async () => {
  for (const pid of daemons) if (alive(pid)) process.kill(pid, "SIGKILL");
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

function runChild(env, name) {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(LIB_DIR, "test", "autostart-child.mjs"), name], { env, cwd: LIB_DIR, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ err, stdout, stderr }),
    );
  });
}

describe("autostart", () => {
  test("two apps starting at once make exactly one daemon; both calls succeed", async () => {
    const root = tempDir();
    roots.push(root);
    const env = freshEnv(root, { LLM_SIDECAR_BIN: daemonBinary() });
    const sock = socketPath(undefined, env);
    assert.equal(sock, join(root, "run", "llm-sidecar", "sock"));
    const t0 = Date.now();
    const [a, b] = await Promise.all([runChild(env, "app-a"), runChild(env, "app-b")]);
    const elapsed = Date.now() - t0;
    for (const r of [a, b]) assert.equal(r.err, null, `${r.err}\n${r.stderr}`);
    const [ra, rb] = [JSON.parse(a.stdout), JSON.parse(b.stdout)];
    for (const pid of [ra.pid, rb.pid]) daemons.add(pid);
    assert.equal(ra.pid, rb.pid, "both apps talk to the same daemon");
    assert.equal(ra.socket, sock);
    const spawned = [ra, rb].filter((r) => r.autostarted?.spawned);
    assert.equal(spawned.length, 1, `exactly one app spawned the daemon: ${a.stdout} ${b.stdout}`);
    assert.equal(spawned[0].autostarted.pid, ra.pid);
    const log = join(root, "data", "llm-sidecar", "daemon.log");
    assert.equal(spawned[0].autostarted.log, log);
    assert.ok(existsSync(log));
    // Both apps have exited; the detached daemon runs on, alone.
    assert.deepEqual(processesWith(sock), [ra.pid], readFileSync(log, "utf8"));
    assert.ok(!existsSync(`${sock}.autostart.lock`), "the start lock is released");
    // A third app finds it running and starts nothing.
    const c = await Client.connect({ path: sock, autostart: true, binary: "/nonexistent" });
    assert.equal(c.autostarted, undefined);
    assert.equal((await c.info()).pid, ra.pid);
    c.close();
    process.kill(ra.pid, "SIGTERM");
    await waitUntil(() => !alive(ra.pid), { timeoutMs: 15_000, what: "the daemon to stop" });
    console.log(`# autostart race: ${elapsed} ms for both apps`);
  });

  test("a stale start lock (its owner died) is taken over", async () => {
    const root = tempDir();
    roots.push(root);
    const env = freshEnv(root);
    const sock = socketPath(undefined, env);
    mkdirSync(join(root, "run", "llm-sidecar"), { recursive: true, mode: 0o700 });
    writeFileSync(`${sock}.autostart.lock`, "999999999\n");
    const c = await Client.connect({
      path: sock,
      autostart: { binary: daemonBinary(), dataDir: join(root, "data", "x"), env },
    });
    try {
      assert.equal(c.autostarted.spawned, true);
      daemons.add(c.autostarted.pid);
      assert.equal((await c.info()).data_dir, join(root, "data", "x"));
    } finally {
      c.close();
      process.kill(c.autostarted.pid, "SIGTERM");
      await waitUntil(() => !alive(c.autostarted.pid), { timeoutMs: 15_000, what: "the daemon to stop" });
    }
  });

  test("failures are DaemonStartFailed naming the binary and the log; without autostart DaemonNotRunning", async () => {
    const root = tempDir();
    roots.push(root);
    const env = freshEnv(root);
    const sock = join(root, "run", "s", "sock");
    await assert.rejects(Client.connect({ path: sock }), DaemonNotRunning);
    await assert.rejects(Client.connect({ path: sock, autostart: { binary: join(root, "missing"), env } }), (e) => {
      assert.ok(e instanceof DaemonStartFailed, String(e));
      assert.match(e.message, /missing does not exist/);
      return true;
    });
    // A binary that exits at once (a bad config, say): the error quotes its log.
    const bad = join(root, "bad-daemon");
    writeFileSync(bad, "#!/bin/sh\necho 'error: config.toml line 3: unknown key' >&2\nexit 1\n");
    chmodSync(bad, 0o755);
    const dataDir = join(root, "d");
    await assert.rejects(Client.connect({ path: sock, autostart: { binary: bad, dataDir, env } }), (e) => {
      assert.ok(e instanceof DaemonStartFailed, String(e));
      assert.equal(e.data.log, join(dataDir, "daemon.log"));
      assert.match(e.message, /stopped \(exit status 1\) before listening/);
      assert.match(e.message, /config\.toml line 3: unknown key/);
      return true;
    });
    // One that never listens: bounded by startTimeoutMs.
    const mute = join(root, "mute-daemon");
    writeFileSync(mute, "#!/bin/sh\nexec sleep 30\n");
    chmodSync(mute, 0o755);
    const t0 = Date.now();
    await assert.rejects(Client.connect({ path: sock, autostart: { binary: mute, dataDir, env, startTimeoutMs: 500 } }), (e) => {
      assert.ok(e instanceof DaemonStartFailed, String(e));
      assert.match(e.message, /did not listen on .* within 500 ms/);
      if (e.data.pid) daemons.add(e.data.pid);
      return true;
    });
    assert.ok(Date.now() - t0 < 3000);
    // A live process holds the start lock and nothing comes up: the error says who holds it.
    writeFileSync(`${sock}.autostart.lock`, `${process.pid}\n`);
    await assert.rejects(Client.connect({ path: sock, autostart: { binary: bad, dataDir, env, startTimeoutMs: 300 } }), (e) => {
      assert.ok(e instanceof DaemonStartFailed, String(e));
      assert.match(e.message, new RegExp(`process ${process.pid} holds the start lock`));
      return true;
    });
  });

  test("binary lookup: explicit, then $LLM_SIDECAR_BIN, then bundled, then PATH", () => {
    const root = tempDir();
    roots.push(root);
    const exe = (p) => {
      mkdirSync(join(p, ".."), { recursive: true });
      writeFileSync(p, "#!/bin/sh\n");
      chmodSync(p, 0o755);
      return p;
    };
    const onPath = exe(join(root, "path-dir", "llm-sidecar"));
    const fromEnv = exe(join(root, "env", "llm-sidecar"));
    const explicit = exe(join(root, "explicit", "llm-sidecar"));
    const env = { PATH: `/nonexistent:${join(root, "path-dir")}` };
    // A binary bundled into this checkout (`npm run bundle-binary`) comes before PATH.
    const bundled = bundledBinaryPaths().find((p) => existsSync(p));
    assert.equal(findDaemonBinary(undefined, env), bundled ?? onPath);
    assert.equal(findDaemonBinary(undefined, { ...env, LLM_SIDECAR_BIN: fromEnv }), fromEnv);
    assert.equal(findDaemonBinary(explicit, { ...env, LLM_SIDECAR_BIN: fromEnv }), explicit);
    if (!bundled) assert.throws(() => findDaemonBinary(undefined, { PATH: "/nonexistent" }), (e) => {
      assert.ok(e instanceof DaemonStartFailed);
      assert.match(e.message, /bin\/linux-|bin\/darwin-/);
      assert.match(e.message, /PATH/);
      return true;
    });
    assert.deepEqual(bundledBinaryPaths("/app/node_modules/llm-sidecar"), [`/app/node_modules/llm-sidecar/bin/${process.platform}-${process.arch}/llm-sidecar`]);
    // In an Electron bundle the unpacked copy (asarUnpack) is the one that can run.
    assert.deepEqual(bundledBinaryPaths("/x/resources/app.asar/node_modules/llm-sidecar"), [
      `/x/resources/app.asar.unpacked/node_modules/llm-sidecar/bin/${process.platform}-${process.arch}/llm-sidecar`,
      `/x/resources/app.asar/node_modules/llm-sidecar/bin/${process.platform}-${process.arch}/llm-sidecar`,
    ]);
    assert.equal(defaultDataDir({ HOME: "/h", XDG_DATA_HOME: "/x" }), process.platform === "darwin" ? "/h/Library/Application Support/llm-sidecar" : "/x/llm-sidecar");
    assert.equal(defaultDataDir({ HOME: "/h" }), process.platform === "darwin" ? "/h/Library/Application Support/llm-sidecar" : "/h/.local/share/llm-sidecar");
  });
});
