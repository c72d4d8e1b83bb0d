# agent-ops: the two commands are `make run` and `make test`; the rest are their parts.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
AGENT_OPS := $(BIN)/agent-ops
# Deno comes from package.json (the npm `deno` package), never from a global install; its cache of the Edge
# Function's npm imports lives in the checkout, like node_modules.
DENO := node_modules/.bin/deno
export DENO_DIR := $(CURDIR)/.deno
export DENO_NO_UPDATE_CHECK := 1
EDGE_FUNCTION := supabase/functions/ops-heartbeat

.PHONY: help setup system-deps db migrate run test lint typecheck edge-check pgtap pytest bench chaos chaos-short stop clean

help:
	@echo "make run    set up, start the embedded Postgres, migrate, run the live loop and the console (DEMO_SECONDS=N to stop)"
	@echo "make test   set up, then ruff, mypy, deno check/lint, pgTAP, pytest (incl. Supabase CLI and Edge Function checks), the short chaos suite"
	@echo "make bench  P1-P7 benchmarks against the raw Postgres ceiling and peers (about 6 minutes)"
	@echo "make chaos  the full chaos suite R1-R7 (make chaos-short: the form make test runs)"
	@echo "make stop   stop the embedded Postgres"

setup: system-deps $(VENV)/.installed node_modules/.installed

system-deps:
	@scripts/system-deps

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# `npm install --no-save` rather than `npm ci`: the registry this project is built against carries only the
# linux-x64 binary package of the CLI, so the lock cannot list the other platforms that `npm ci` insists on.
# It installs exactly what the lock pins and never rewrites it.
node_modules/.installed: package.json package-lock.json
	npm install --no-save --no-audit --no-fund --loglevel=error
	@touch $@

db: setup
	@$(AGENT_OPS) db start >/dev/null

migrate: db
	@$(AGENT_OPS) migrate --seed

# The live loop on the embedded Postgres until Ctrl-C; DEMO_SECONDS=N stops by itself with a summary.
run: migrate
	@scripts/run-summary
	@$(AGENT_OPS) demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

# The Edge Function against the supabase-js its deno.lock pins (--frozen: a changed lock fails), then lint and
# format checks. Its HTTP behaviour is tested by pytest (tests/test_edge_function.py).
edge-check: setup
	$(DENO) check --frozen --config $(EDGE_FUNCTION)/deno.json $(EDGE_FUNCTION)/index.ts
	$(DENO) lint --config $(EDGE_FUNCTION)/deno.json $(EDGE_FUNCTION)
	$(DENO) fmt --check --config $(EDGE_FUNCTION)/deno.json $(EDGE_FUNCTION)

pgtap: db
	@scripts/pgtap

pytest: db
	$(BIN)/pytest

test: lint typecheck edge-check pgtap pytest chaos-short

# Benchmarks are measurements, not tests: the peers (procrastinate, pgqueuer) come from the `bench` extra.
$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $@

bench: db $(VENV)/.bench-installed
	$(BIN)/python -m bench

# Real worker processes, SIGKILLs, a Postgres restart, races and fuzzing; exits non-zero if an invariant breaks.
chaos: db
	$(BIN)/python -m bench.chaos --full

chaos-short: db
	$(BIN)/python -m bench.chaos --short

stop:
	@test ! -x $(AGENT_OPS) || $(AGENT_OPS) db stop

# The embedded server's data may live outside the checkout (see README); `db destroy` finds it.
clean:
	@test ! -x $(AGENT_OPS) || $(AGENT_OPS) db destroy --yes
	rm -rf .agent-ops $(VENV) node_modules .deno .mypy_cache .ruff_cache .pytest_cache
