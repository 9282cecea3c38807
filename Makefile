# gatewaylab — `make demo` (set up + the main study), `make test` (set up + every test).
SHELL := /bin/bash
PY    := .venv/bin/python
VENV_STAMP   := .venv/.deps-stamp
NATIVE_STAMP := .venv/.native-stamp
SYS_STAMP    := .venv/.sys-stamp
RUST_SRC := $(shell find native -path native/target -prune -o \( -name '*.rs' -o -name 'Cargo.toml' -o -name 'Cargo.lock' \) -print) .cargo/config.toml
# Debian packages the studies and tests use: wrk (a second opinion on the mock), chromium (browser test, static figures),
# python3-dev (libpython to link the binding crate's cargo tests against, for Debian's python3),
# valgrind (Cachegrind: `gatewaylab bench instructions`, instructions per request),
# linux-perf (native flamegraphs: perf record -e cpu-clock),
# libssl-dev (the native crates hash with OpenSSL's libcrypto, as hashlib does, linked statically: .cargo/config.toml)
SYS_PKGS := wrk chromium python3-dev valgrind linux-perf libssl-dev

.PHONY: dev demo lint test test-rust test-py test-notebooks test-fuzz test-bundle fuzz fuzz-tools flame-tools api-fuzz lab clean sysdeps peers

dev: $(NATIVE_STAMP) $(SYS_STAMP)

# re-checked when this file changes (a package added to SYS_PKGS reaches existing checkouts)
$(SYS_STAMP): Makefile
	@mkdir -p .venv
	@missing=""; for p in $(SYS_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# node + npm for the Portkey peer: checked as commands (a NodeSource nodejs ships npm itself)
	@if ! command -v npm >/dev/null 2>&1; then \
	  echo "installing Debian packages: nodejs npm"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm >/dev/null; \
	fi
	@touch $@

# the system packages first (order only): the native build links libcrypto
$(VENV_STAMP): pyproject.toml | $(SYS_STAMP)
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q -U pip 'maturin>=1.9,<2'
	.venv/bin/maturin develop --release --extras analysis,dev
	cd native && cargo build --release -p gatewaylab-server
	@touch $@ $(NATIVE_STAMP)

$(NATIVE_STAMP): $(VENV_STAMP) $(RUST_SRC) | $(SYS_STAMP)
	.venv/bin/maturin develop --release --skip-install
	cd native && cargo build --release -p gatewaylab-server   # rung 3: native/target/release/gatewaylab-server
	@touch $@

# Lint and format (config in pyproject.toml; first in `make test`, before the long parts):
# ruff (lint + format) over the tree, mypy over gateway/, rustfmt and clippy (warnings are
# errors) over the workspace. Clippy only checks, so the binding crate keeps its default
# features (extension-module); PYO3_PYTHON is the venv's, as for maturin, so pyo3's build
# script is not re-run for another interpreter.
# native/core/fuzz is a workspace of its own (cargo-fuzz builds it on nightly): it gets the
# same checks on stable, with its lock file held (--locked), so that a change to the core crate
# that breaks a fuzz target fails here, not minutes into `make test-fuzz`.
lint: dev
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	cd native && cargo fmt --all --check
	cd native && PYO3_PYTHON=$(CURDIR)/$(PY) cargo clippy --release --workspace --all-targets -- -D warnings
	cd native/core/fuzz && cargo fmt --check && cargo clippy --locked --bins -- -D warnings

# The binding crate's tests run in an embedded interpreter: built without `extension-module`
# so that they link the venv interpreter's libpython (found through LD_LIBRARY_PATH).
test-rust: dev
	cd native && cargo test --release -p gatewaylab-core -p gatewaylab-net -p gatewaylab-engine -p gatewaylab-tools -p gatewaylab-server -p gatewaylab-trace
	cd native && PYO3_PYTHON=$(CURDIR)/$(PY) \
	  LD_LIBRARY_PATH="$$($(CURDIR)/$(PY) -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH}" \
	  cargo test --release -p gatewaylab-py --no-default-features

# Peer gateways (LiteLLM, Portkey, Noveum) into .peers/ at the pins in harness/peers/versions.toml;
# idempotent: a second run checks the installed versions and returns in about a second.
peers: dev
	$(PY) -m harness.cli peers install

test-py: dev peers flame-tools
	$(PY) -m pytest -q

# then the exports as a reader sees them: each notebook's blog folder rendered in headless
# Chromium, screenshots in the run folder (tests/notebooks/test_blog_exports.py, newest ci run)
test-notebooks: dev flame-tools
	$(PY) -m harness.notebooks --profile ci
	$(PY) -m pytest -q -p no:cacheprovider tests/notebooks/test_blog_exports.py

# The bundle round trip (docs/bundle.md): build a bundle, install it into a fresh venv offline
# (--no-index), sweep from it without pandas, import the raw results; about 1-2 minutes, part of
# `make test` (plain pytest leaves it out: it is marked `bundle`); prints its timings.
test-bundle: dev
	$(PY) -m pytest -q -s -m bundle tests/harness/test_bundle_roundtrip.py

# Fuzzing (docs/reliability.md): cargo-fuzz targets on the core crate (nightly) and the
# differential twin targets. `make fuzz FUZZ_SECONDS=600` runs each that long; `make test`
# runs each for FUZZ_SMOKE_SECONDS (the first run also builds the targets with nightly + ASan).
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 5

fuzz-tools:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# Native flamegraphs (docs/profiling.md): inferno folds `perf script` output and draws the SVG;
# perf itself is Debian's (SYS_PKGS). Idempotent: once in cargo's bin folder, a second run returns at once.
INFERNO_VERSION ?= 0.12.8
flame-tools:
	@PATH="$${CARGO_HOME:-$$HOME/.cargo}/bin:$$PATH"; \
	command -v inferno-flamegraph >/dev/null && command -v inferno-collapse-perf >/dev/null || \
	  cargo install inferno --locked --version $(INFERNO_VERSION)

test-fuzz: dev fuzz-tools
	native/core/fuzz/run.sh $(FUZZ_SMOKE_SECONDS)

fuzz: dev fuzz-tools
	native/core/fuzz/run.sh $(FUZZ_SECONDS)
	GATEWAYLAB_FUZZ_SECONDS=$(FUZZ_SECONDS) GATEWAYLAB_FUZZ_EXAMPLES=500 GATEWAYLAB_POWERLOSS_SCALE=10 \
	  $(PY) -m pytest -q -s -p no:cacheprovider tests/reliability/test_differential.py tests/reliability/test_power_loss.py

# schemathesis against docs/openapi.yaml on every rung (make test: py and rs-server, 10 examples)
API_FUZZ_EXAMPLES ?= 200
api-fuzz: dev
	$(PY) -m harness.infra.api_fuzz --examples $(API_FUZZ_EXAMPLES)

test: dev lint peers test-rust test-fuzz test-py test-bundle test-notebooks

demo: dev
	$(PY) -m harness.studies.demo

lab: dev flame-tools
	.venv/bin/jupyter lab --ip 127.0.0.1 notebooks/

clean:
	rm -rf .venv native/target gateway/_native*.so
