#!/usr/bin/env bash
# Runs the Python client's tests against the real daemon binary.
# Creates client-libs/python/.venv (once per pyproject.toml change) with the package installed
# editable plus its test extras; builds the daemon with cargo if LLM_SIDECAR_BIN is unset and the
# debug binary is missing. Type-checks the package (mypy --strict) and an app-style example, then
# runs pytest; extra arguments go to pytest. Exits non-zero on any failure.
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
.venv/bin/python -m mypy --strict --no-error-summary src/llm_sidecar tests/typing_example.py
exec .venv/bin/python -m pytest -q "$@"
