#!/usr/bin/env bash
# Packs the TypeScript client with a prebuilt daemon binary bundled ($LLM_SIDECAR_BIN), installs the
# tarball into a fresh temp project (the npm registry is the only network it needs, for
# @msgpack/msgpack), and from there makes one client call with autostart: with no daemon running,
# no $LLM_SIDECAR_BIN and no llm-sidecar on PATH, the client must start the binary bundled in the
# installed package (HOME / XDG dirs in a temp dir). Then stops that daemon. Prints timings; exits
# non-zero on any failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
lib="$root/client-libs/typescript"
bin="${LLM_SIDECAR_BIN:-}"
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "npm-pack-check: set LLM_SIDECAR_BIN to the daemon binary to bundle (got '${bin}')" >&2
  exit 1
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
work=$(mktemp -d "${TMPDIR:-/tmp}/llm-sidecar-pack.XXXXXX")
daemon_pid=""
cleanup() {
  # A daemon left by a failed check: its pid is in its single-instance lock beside the socket.
  if [ -z "$daemon_pid" ] && [ -f "$work/home/run/llm-sidecar/sock.lock" ]; then
    daemon_pid=$(head -n 1 "$work/home/run/llm-sidecar/sock.lock" | tr -cd '0-9')
  fi
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then kill -KILL "$daemon_pid" 2>/dev/null || true; fi
  (cd "$lib" && node scripts/bundle-binary.mjs --clean >/dev/null) || true
  rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s%N; }
since() { echo "$(( ($(now) - $1) / 1000000 )) ms"; }
t_all=$(now)

cd "$lib"
t=$(now)
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
node scripts/bundle-binary.mjs "$bin"
npm pack --silent --pack-destination "$work" >"$work/pack.out"
tgz="$work/$(tail -n 1 "$work/pack.out")"
node scripts/bundle-binary.mjs --clean >/dev/null
echo "pack: $(basename "$tgz") $(du -h "$tgz" | cut -f1) in $(since "$t")"
tar -tzvf "$tgz" >"$work/contents"
grep -E "^-rwx.* package/bin/$(node -p 'process.platform + "-" + process.arch')/llm-sidecar$" "$work/contents" >/dev/null \
  || { echo "npm-pack-check: the tarball holds no executable bundled binary:" >&2; cat "$work/contents" >&2; exit 1; }

app="$work/app"
mkdir -p "$app"
cd "$app"
t=$(now)
printf '{ "name": "pack-check-app", "version": "1.0.0", "private": true, "type": "module" }\n' >package.json
npm install --no-audit --no-fund --loglevel=error "$tgz"
echo "install: $(since "$t")"

cat >check.mjs <<'JS'
import { Client } from "llm-sidecar";
import { createRequire } from "node:module";
const require = createRequire(import.meta.url);
const t0 = Date.now();
const c = await Client.connect({ app: "pack-check", autostart: true });
const info = await c.info();
const ms = Date.now() - t0;
const a = c.autostarted;
if (!a?.spawned || !a.binary.includes("/node_modules/llm-sidecar/bin/")) throw new Error(`not started from the bundled binary: ${JSON.stringify(a)}`);
if (info.pid !== a.pid) throw new Error(`info.pid ${info.pid} is not the started daemon ${a.pid}`);
// The CommonJS build finds the same bundled binary.
const cjs = require("llm-sidecar");
if (cjs.findDaemonBinary() !== a.binary) throw new Error(`CJS build finds ${cjs.findDaemonBinary()}, ESM ${a.binary}`);
console.log(JSON.stringify({ pid: info.pid, version: info.version, socket: info.socket, binary: a.binary, log: a.log, connect_ms: ms }));
c.close();
JS

home="$work/home"
mkdir -p "$home"
t=$(now)
out=$(env -u LLM_SIDECAR_BIN -u LLM_SIDECAR_SOCK -u LLM_SIDECAR_CONFIG -u TMPDIR \
  HOME="$home" XDG_CONFIG_HOME="$home/config" XDG_DATA_HOME="$home/data" XDG_RUNTIME_DIR="$home/run" \
  PATH="$(dirname "$(command -v node)"):/usr/bin:/bin" node check.mjs)
echo "autostarted call: $(since "$t") ($out)"
daemon_pid=$(node -e 'console.log(JSON.parse(process.argv[1]).pid)' "$out")
kill -TERM "$daemon_pid"
for _ in $(seq 1 150); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$daemon_pid" 2>/dev/null; then echo "npm-pack-check: the daemon did not stop on SIGTERM" >&2; exit 1; fi
daemon_pid=""
echo "npm-pack-check: ok in $(since "$t_all")"
