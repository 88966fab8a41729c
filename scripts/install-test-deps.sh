#!/usr/bin/env bash
# Installs the system tools the test suites use, when missing: systemd-socket-activate and
# systemd-analyze (Debian package `systemd`), setpriv, and the `sqlite3` CLI (it reads the ledger in
# tests/usage.rs), and for the power-cut test (tests/powercut.rs) Debian's python3-fusepy for
# /usr/bin/python3 (it pulls libfuse2) and umount, and Neovim for the Neovim plugin's test
# (tests/nvim.rs). Node/npm and python3 come with the machine image.
# Safe to run repeatedly; does nothing when everything is present.
set -euo pipefail
missing=()
command -v systemd-socket-activate >/dev/null 2>&1 || missing+=(systemd)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
command -v sqlite3 >/dev/null 2>&1 || missing+=(sqlite3)
/usr/bin/python3 -c 'import fusepy' >/dev/null 2>&1 || missing+=(python3-fusepy)
command -v umount >/dev/null 2>&1 || missing+=(mount)
command -v nvim >/dev/null 2>&1 || missing+=(neovim)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-deps: missing ${missing[*]}; install them with your package manager" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
