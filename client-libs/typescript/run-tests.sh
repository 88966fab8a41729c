#!/usr/bin/env bash
# Runs the TypeScript client's tests against the real daemon binary.
# Installs exactly the locked dependencies (npm ci), builds the ESM and CJS outputs, type-checks
# the public typings, then runs `node --test`. Builds the daemon with cargo if LLM_SIDECAR_BIN is
# unset and the debug binary is missing. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
npm run --silent typecheck
if [ -z "${LLM_SIDECAR_BIN:-}" ]; then
  root=$(cd ../.. && pwd)
  export LLM_SIDECAR_BIN="$root/target/debug/llm-sidecar"
  [ -x "$LLM_SIDECAR_BIN" ] || (cd "$root" && cargo build --quiet)
fi
node --test test/*.test.mjs test/*.test.cjs
