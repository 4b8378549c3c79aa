# Everything a fresh machine needs: `make test`, `make demo`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.deps-stamp
ACT     := VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH

.PHONY: all venv build lint test test-rust test-python demo chaos soak fuzz bench clean

all: test

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python requirements-dev.txt tests/requirements-lifecycle.txt
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q -r tests/requirements-lifecycle.txt
	touch $@

venv: $(STAMP)

# Build the extension into the venv (release mode: tests exercise real speed paths).
build: $(STAMP)
	$(ACT) $(BIN)/maturin develop --release -q --features python,test-hooks

# rustfmt (rustfmt.toml), clippy on every target and feature, ruff
# (pyproject.toml), and the stub of _core checked against the built module.
lint: build
	cargo fmt --check
	rustfmt --check --edition 2021 --config-path rustfmt.toml fuzz/fuzz_targets/*.rs
	cargo clippy -q --all-targets --all-features -- -D warnings
	$(BIN)/ruff check .
	$(ACT) $(BIN)/python -m mypy.stubtest shmcache._core

test-rust:
	cargo test --release

test-python: build
	$(ACT) $(BIN)/python -m pytest -q tests

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
	rm -rf $(VENV) target
