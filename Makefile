# `make test` runs every test suite of the repository and installs what they need.
CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
VENV_STAMP := $(VENV)/.installed-$(shell cat tests/python/requirements.txt | cksum | cut -d' ' -f1)
# The daemon the Python and client suites run: cargo's target dir (CARGO_TARGET_DIR if set).
BIN := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/debug/llm-sidecar

.PHONY: test deps test-rust test-python test-clients build bench lint fmt clean-venv fuzz-short wheel-check pack-check

test: deps test-rust test-python test-clients

deps:
	scripts/install-test-deps.sh

build:
	$(CARGO) build

# The HTTP face's SDK tests (tests/http.rs) run the official openai/anthropic SDKs from the venv.
test-rust: $(VENV_STAMP)
	LLM_SIDECAR_SDK_PYTHON=$(CURDIR)/$(VENV)/bin/python $(CARGO) test

$(VENV_STAMP): tests/python/requirements.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	touch $@

test-python: build $(VENV_STAMP)
	LLM_SIDECAR_BIN=$(BIN) $(VENV)/bin/python -m pytest -q tests/python

# Client libraries: each script installs its own dependencies (venv / npm ci) and runs its tests
# against the daemon built above.
test-clients: build
	LLM_SIDECAR_BIN=$(BIN) client-libs/python/run-tests.sh
	LLM_SIDECAR_BIN=$(BIN) client-libs/typescript/run-tests.sh

# The Python wheel that carries the daemon, and the npm package with a bundled binary, each
# installed somewhere fresh and used from there (CI runs both).
wheel-check: build
	scripts/wheel-check.sh

pack-check: build
	LLM_SIDECAR_BIN=$(BIN) scripts/npm-pack-check.sh

bench:
	$(CARGO) bench --bench rpc

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

# 60 s per fuzz target (nightly; installs cargo-fuzz if missing; see fuzz/README.md).
fuzz-short:
	FUZZ_SECS=60 scripts/fuzz-short.sh

clean-venv:
	rm -rf $(VENV)
