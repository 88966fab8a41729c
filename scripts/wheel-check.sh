#!/usr/bin/env bash
# Builds the Python wheel that carries the daemon (client-libs/python/bundle: maturin,
# bindings = "bin"), installs it into a fresh venv in a temp dir, runs `llm-sidecar --version`
# from that venv, and makes one client call from it: `Client(autostart=True)` with empty
# runtime/data/config dirs must find the wheel's own executable (next to the package, not on
# PATH), start it, answer `daemon.info` and `models.list`; the daemon is then stopped.
#
#   scripts/wheel-check.sh                 # debug build (what CI runs)
#   WHEEL_RELEASE=1 scripts/wheel-check.sh # release build (what to publish)
#
# maturin (pinned below) is installed into client-libs/python/.venv-maturin. Cargo's
# CARGO_TARGET_DIR is honoured, so a target dir that already holds the daemon's build is reused.
# WHEEL_OUT=DIR keeps the built wheel there. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
PYTHON=${PYTHON:-python3}
MATURIN_VERSION=1.16.0
t_start=$(date +%s)
step() { echo "== wheel-check: $* ($(($(date +%s) - t_start)) s so far)"; }

tools="$root/client-libs/python/.venv-maturin"
if [ ! -x "$tools/bin/maturin" ] || [ "$("$tools/bin/maturin" --version)" != "maturin $MATURIN_VERSION" ]; then
    step "installing maturin $MATURIN_VERSION into $tools"
    rm -rf "$tools"
    "$PYTHON" -m venv "$tools"
    "$tools/bin/pip" install --quiet --disable-pip-version-check "maturin==$MATURIN_VERSION"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/llm-sidecar-wheel.XXXXXX")
daemon_pid=""
cleanup() {
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then kill "$daemon_pid" || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

profile=()
[ "${WHEEL_RELEASE:-0}" = 1 ] && profile=(--release)
step "maturin build ${profile[*]:-(debug)} (CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target})"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
(cd client-libs/python/bundle && "$tools/bin/maturin" build --quiet "${profile[@]}" -o "$tmp/wheels")
wheel=$(ls "$tmp"/wheels/*.whl)
echo "built $(basename "$wheel") ($(du -h "$wheel" | cut -f1))"
"$tools/bin/python" - "$wheel" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = ["llm_sidecar/__init__.py", "llm_sidecar/client.py", "llm_sidecar/autostart.py", "llm_sidecar/py.typed"]
missing = [n for n in need if n not in names]
scripts = [n for n in names if n.endswith(".data/scripts/llm-sidecar")]
stray = [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
if missing or not scripts or stray:
    sys.exit(f"wheel-check: the wheel is incomplete: missing {missing}, executable {scripts}, stray {stray}")
print(f"wheel holds the llm_sidecar package ({sum(n.startswith('llm_sidecar/') for n in names)} files) and {scripts[0]}")
EOF
[ -n "${WHEEL_OUT:-}" ] && mkdir -p "$WHEEL_OUT" && cp "$wheel" "$WHEEL_OUT/"

step "installing it into a fresh venv"
"$PYTHON" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet --disable-pip-version-check "$wheel"

step "llm-sidecar --version from the venv"
version=$("$tmp/venv/bin/llm-sidecar" --version)
echo "$version"
expected=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
[ "$version" = "llm-sidecar $expected" ] || { echo "wheel-check: expected 'llm-sidecar $expected'" >&2; exit 1; }

step "one client call from the venv (autostart)"
mkdir -m 700 "$tmp/run"
mkdir -p "$tmp/home"
env -i PATH=/usr/bin:/bin HOME="$tmp/home" XDG_RUNTIME_DIR="$tmp/run" XDG_DATA_HOME="$tmp/data" \
    XDG_CONFIG_HOME="$tmp/config" XDG_STATE_HOME="$tmp/state" \
    "$tmp/venv/bin/python" - "$tmp" <<'EOF' > "$tmp/call.out"
import os, sys, time
import llm_sidecar
from llm_sidecar import Client

tmp = sys.argv[1]
venv_bin = os.path.join(tmp, "venv", "bin", "llm-sidecar")
assert llm_sidecar.__file__.startswith(os.path.join(tmp, "venv")), llm_sidecar.__file__
assert llm_sidecar.find_binary() == venv_bin, llm_sidecar.find_binary()
t0 = time.monotonic()
with Client(app="wheel-check", autostart=True) as c:
    info = c.info()
    assert c.started_pid == info["pid"], (c.started_pid, info)
    exe = os.readlink(f"/proc/{info['pid']}/exe") if os.path.exists("/proc") else venv_bin
    assert os.path.realpath(exe) == os.path.realpath(venv_bin), exe
    assert info["socket"] == os.path.join(tmp, "run", "llm-sidecar", "sock"), info["socket"]
    providers = [p["name"] for p in c.models_list()["providers"]]
    assert providers, "models.list listed no provider"
print(info["pid"])
print(f"daemon {info['version']} (pid {info['pid']}, {exe}) started and answered in {time.monotonic() - t0:.2f} s; "
      f"data dir {info['data_dir']}; {len(providers)} providers", file=sys.stderr)
EOF
daemon_pid=$(head -1 "$tmp/call.out")
log="$tmp/data/llm-sidecar/daemon.log"
[ -s "$log" ] || { echo "wheel-check: the daemon's log $log is missing" >&2; exit 1; }

step "stopping the daemon (pid $daemon_pid)"
kill "$daemon_pid"
for _ in $(seq 1 200); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$daemon_pid" 2>/dev/null; then echo "wheel-check: the daemon did not stop" >&2; exit 1; fi
daemon_pid=""
step "ok"
