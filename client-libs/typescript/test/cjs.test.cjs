// The CommonJS build: require() works and talks to the daemon like the ESM build.
const assert = require("node:assert/strict");
const { test } = require("node:test");

test("require('llm-sidecar') (the exports map's CommonJS build) connects, calls and maps errors", async () => {
  const lib = require("llm-sidecar");
  const esm = await import("llm-sidecar");
  assert.deepEqual(Object.keys(lib).sort(), Object.keys(esm).sort());
  assert.match(require.resolve("llm-sidecar"), /dist[\\/]cjs[\\/]index\.js$/);
  assert.notEqual(lib.Client, esm.Client); // two builds, as the exports map says
  const { Daemon } = await import("./support.mjs");
  const d = await new Daemon().start();
  try {
    const c = await lib.Client.connect({ path: d.sock, app: "cjs" });
    assert.equal(c.helloResult.app, "cjs");
    assert.deepEqual(await c.ping({ delay_ms: 1 }), { pong: true, delay_ms: 1 });
    await assert.rejects(c.call("nope"), lib.MethodNotFound);
    c.close();
  } finally {
    await d.remove();
  }
});
