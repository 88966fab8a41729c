#!/usr/bin/env bash
# Installs what the fuzz targets (fuzz/) need, only if missing: cargo-fuzz from crates.io.
# The nightly toolchain itself is the machine's (rustup); without it the fuzz step is skipped.
# Exits 0 with a message when nightly is absent, so callers can test for it separately.
set -euo pipefail
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "install-fuzz-deps: no nightly toolchain (cargo +nightly); not installing cargo-fuzz" >&2
    exit 0
fi
if cargo fuzz --version >/dev/null 2>&1; then
    echo "install-fuzz-deps: $(cargo fuzz --version) already installed"
else
    echo "install-fuzz-deps: installing cargo-fuzz (cargo install --locked cargo-fuzz, ~1 min)"
    cargo install --locked cargo-fuzz
fi
