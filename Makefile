# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap .venv from uv.lock.
.DEFAULT_GOAL := demo
SHELL := /bin/bash
# uv from PATH, else as a Python module (installed with pip on first use: no PATH or shim changes needed).
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
VENV := .venv
STAMP := $(VENV)/.synced

.PHONY: demo test lint bench format services clean

# --compile-bytecode: the packages' .pyc files are written once here, so no process (the servers and CLIs
# the tests start, a deployment's workers) compiles them again at import, even with PYTHONDONTWRITEBYTECODE.
$(STAMP): pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) sync --locked --all-extras --quiet --compile-bytecode
	@touch $(STAMP)

demo: $(STAMP)
	@$(VENV)/bin/pydantic-deep run "Explain why streaming matters for agent UIs"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench docs
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/pyright

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests bench docs
	$(VENV)/bin/ruff format src tests bench

# Services the suite drives for real: tmux for the terminal check, Redis for the bus, Chromium for the
# dashboard, the npm packages of tests/js for the JavaScript clients. Each is installed or started here
# when missing; the tests skip with a reason only if that fails.
services:
	@bash scripts/services.sh

test: $(STAMP) services lint
	$(VENV)/bin/pytest -q

# Never part of `make test`. bench_peers builds the other frameworks' environments (bench/.peers) with uv.
bench: $(STAMP)
	$(VENV)/bin/python bench/bench_streaming.py
	$(VENV)/bin/python bench/bench_fanout.py
	$(VENV)/bin/python bench/bench_run_cost.py
	$(VENV)/bin/python bench/bench_durable.py
	$(VENV)/bin/python bench/bench_takeover.py
	UV="$(UV)" $(VENV)/bin/python bench/bench_peers.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
