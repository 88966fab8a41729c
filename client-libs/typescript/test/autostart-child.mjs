// One "app" of the autostart race (test/autostart.test.mjs): connects with autostart (socket and
// data dir from its environment), calls daemon.info, prints what happened as JSON, exits.
import { Client } from "llm-sidecar";

const c = await Client.connect({ app: process.argv[2] ?? "racer", autostart: { startTimeoutMs: 30_000 } });
const info = await c.info();
console.log(JSON.stringify({ pid: info.pid, socket: info.socket, autostarted: c.autostarted ?? null }));
c.close();
