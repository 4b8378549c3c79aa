# Everything a fresh machine needs: `make test`, `make demo`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.deps-stamp
ACT     := VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH

.PHONY: all venv build wheel lint test test-rust test-python test-matrix test-tools valkey demo chaos soak fuzz bench clean

all: test

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python requirements-dev.txt tests/requirements-lifecycle.txt
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q -r tests/requirements-lifecycle.txt
	touch $@

venv: $(STAMP)

# The shipped artefacts, in dist/: an abi3 wheel for x86_64 Linux that needs
# glibc 2.17 at most (manylinux2014, linked by zig from the ziglang package),
# and the sdist. The same choices as .github/workflows/release.yml: the
# release profile (fat LTO), the default features (`python`: no test hooks),
# abi3-py310 (Cargo.toml). Rebuilt only when an input is newer (not the .so
# that `make build` leaves in python/). --target keeps its build apart from
# `make build`'s in target/, so neither undoes the other.
VERSION    := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
WHEEL      := dist/shmcache-$(VERSION)-cp310-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
SDIST      := dist/shmcache-$(VERSION).tar.gz
WSTAMP     := $(VENV)/.wheel-deps-stamp
PKG_INPUTS := Cargo.toml Cargo.lock build.rs pyproject.toml README.md LICENSE \
              $(shell find src python -type f ! -name '*.so' ! -path '*/__pycache__/*')
MATURIN_WHEEL_ARGS := --release --target x86_64-unknown-linux-gnu --compatibility manylinux2014 --zig

$(WSTAMP): $(BIN)/python requirements-wheel.txt
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-wheel.txt
	touch $@

$(WHEEL) $(SDIST) &: $(WSTAMP) $(PKG_INPUTS)
	rm -f dist/shmcache-*
	$(ACT) $(BIN)/maturin build $(MATURIN_WHEEL_ARGS) --sdist --out dist
	test -f $(WHEEL) && test -f $(SDIST)
	touch $(WHEEL) $(SDIST)

wheel: $(WHEEL) $(SDIST)

# Build the extension into the venv (release mode: tests exercise real speed paths).
build: $(STAMP)
	$(ACT) $(BIN)/maturin develop --release -q --features python,test-hooks

# rustfmt (rustfmt.toml), clippy on every target and feature, ruff
# (pyproject.toml), no import circle in python/shmcache nor module circle in
# src/ (tools/import_cycles.py), and the stub of _core checked against the
# built module.
lint: build
	cargo fmt --check
	rustfmt --check --edition 2021 --config-path rustfmt.toml fuzz/fuzz_targets/*.rs
	cargo clippy -q --all-targets --all-features -- -D warnings
	$(BIN)/ruff check .
	$(BIN)/python -m tools.import_cycles
	$(ACT) $(BIN)/python -m mypy.stubtest shmcache._core

test-rust:
	cargo test --release

# tests/ops/test_top.py drives `shmcache top` in a real terminal: tmux, from
# apt-get when missing (as root; otherwise that one test is skipped, saying so).
# tests/tiered/ start their own redis-server (Debian's package), likewise.
test-tools:
	@command -v tmux >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -q tmux >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -q tmux >/dev/null; }; }; } || \
	  echo "tmux missing and not installable: tests/ops/test_top.py's terminal test is skipped"
	@command -v redis-server >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -q redis-server >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -q redis-server >/dev/null; }; }; } || \
	  echo "redis-server missing and not installable: the TieredCache tests (tests/tiered/) are skipped"
	@command -v openssl >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get install -y -q openssl >/dev/null 2>&1; } || echo "openssl missing: the TLS tests are skipped"
	@command -v valkey-server >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && $(MAKE) -s valkey; } || \
	  echo "valkey-server missing and not installable: the Valkey tests (tests/tiered/test_production_redis.py) are skipped"

# Valkey 8 from Debian's bookworm-backports (the suite added where missing).
BACKPORTS := /etc/apt/sources.list.d/shmcache-bookworm-backports.sources
valkey:
	@grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/ || \
	  printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' > $(BACKPORTS)
	apt-get update -qq && apt-get install -y -q -t bookworm-backports valkey-server >/dev/null

# tests/packaging/test_wheel.py's short run: the wheel in one fresh venv (oldest Python).
test-python: build wheel test-tools
	$(ACT) SHMCACHE_WHEEL_REQUIRED=1 $(BIN)/python -m pytest -q tests

# The wheel in fresh venvs, no Rust on PATH: Python 3.10 + Django 4.2, 3.11 +
# 5.2, 3.13 + 6.0, 3.12 + 6.1 and 3.13 + 6.1, each with a two-process smoke
# test and Django's own cache test-suite on SharedMemoryCache and TieredCache
# (a redis-server of ours: test-tools) (docs/install.md).
test-matrix: build wheel test-tools
	$(ACT) SHMCACHE_WHEEL_REQUIRED=1 SHMCACHE_MATRIX=1 $(BIN)/python -m pytest -q -rs tests/packaging/test_wheel.py

test: lint test-rust test-python

demo: build
	$(ACT) $(BIN)/python -m demo.run_demo

# Long runs with their own targets; a short version of each is inside `make test`.
chaos: build
	$(ACT) $(BIN)/python -m tools.chaos --seconds 300

soak: build
	$(ACT) $(BIN)/python -m tools.soak --seconds 600

fuzz: build
	$(ACT) bash tools/fuzz.sh 600

bench: build
	$(BIN)/python -m pip install -q -r bench/requirements.txt
	$(ACT) $(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) target dist
