#!/usr/bin/env bash
# Runs the Python client's tests against the real daemon binary.
# Creates client-libs/python/.venv (once per pyproject.toml change) with the package installed
# editable plus its test extras; builds the daemon with cargo if LLM_SIDECAR_BIN is unset and the
# debug binary is missing. Extra arguments go to pytest. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
stamp=".venv/.installed-$(cksum < pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ]; then
  rm -rf .venv
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi
if [ -z "${LLM_SIDECAR_BIN:-}" ]; then
  root=$(cd ../.. && pwd)
  export LLM_SIDECAR_BIN="$root/target/debug/llm-sidecar"
  [ -x "$LLM_SIDECAR_BIN" ] || (cd "$root" && cargo build --quiet)
fi
exec .venv/bin/python -m pytest -q "$@"
