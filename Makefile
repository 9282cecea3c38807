# gatewaylab — `make demo` (set up + the main study), `make test` (set up + every test).
SHELL := /bin/bash
PY    := .venv/bin/python
VENV_STAMP   := .venv/.deps-stamp
NATIVE_STAMP := .venv/.native-stamp
SYS_STAMP    := .venv/.sys-stamp
RUST_SRC := $(shell find native -path native/target -prune -o \( -name '*.rs' -o -name 'Cargo.toml' -o -name 'Cargo.lock' \) -print)
# Debian packages the studies and tests use: wrk (a second opinion on the mock), chromium (browser test, static figures)
SYS_PKGS := wrk chromium

.PHONY: dev demo test test-rust test-py test-notebooks lab clean sysdeps peers

dev: $(NATIVE_STAMP) $(SYS_STAMP)

$(SYS_STAMP):
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

$(VENV_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q -U pip 'maturin>=1.9,<2'
	.venv/bin/maturin develop --release --extras dev
	@touch $@ $(NATIVE_STAMP)

$(NATIVE_STAMP): $(VENV_STAMP) $(RUST_SRC)
	.venv/bin/maturin develop --release --skip-install
	@touch $@

test-rust: dev
	cd native && cargo test --release -p gatewaylab-core -p gatewaylab-tools

# Peer gateways (LiteLLM, Portkey, Noveum) into .peers/ at the pins in harness/peers/versions.toml;
# idempotent: a second run checks the installed versions and returns in about a second.
peers: dev
	$(PY) -m harness.cli peers install

test-py: dev peers
	$(PY) -m pytest -q

test-notebooks: dev
	$(PY) -m harness.notebooks --profile ci

test: dev peers test-rust test-py test-notebooks

demo: dev
	$(PY) -m harness.demo

lab: dev
	.venv/bin/jupyter lab --ip 127.0.0.1 notebooks/

clean:
	rm -rf .venv native/target gateway/_native*.so
