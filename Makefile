# Two commands on a fresh machine: `make run` and `make test`. Only Python 3.11+ and make
# are needed: uv is bootstrapped into .tools/ and the virtualenv is built from uv.lock.

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: install run worker test test-tools lint format openapi bench clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

install: $(VENV)/.synced

run: install
	$(BIN)/python -m app.serve

# The worker on its own, beside API processes started with RUN_WORKER=false (see README).
worker: install
	$(BIN)/billing worker

lint: install
	$(BIN)/ruff check app tests migrations bench
	$(BIN)/ruff format --check app tests migrations bench
	$(BIN)/mypy

# Chromium and PgBouncer come from Debian's packages (installed when missing).
test-tools:
	scripts/install-test-tools

test: lint test-tools
	$(BIN)/pytest

format: install
	$(BIN)/ruff check --fix app tests migrations bench
	$(BIN)/ruff format app tests migrations bench

openapi: install
	$(BIN)/python -m app.openapi_dump

# Throughput and latency of the service against the floor of its own transaction, printed
# and written to docs/performance.md (see bench/). Embedded PostgreSQL unless
# BENCH_DATABASE_URL is set. `make bench WORKERS=1`, `make bench BENCH_ARGS=--quick`.
# The `bench` dependency group (aiohttp, matplotlib) comes on top of the default ones.
WORKERS ?= 2
BENCH_ARGS ?=
bench: | $(UV)
	$(UV) sync --frozen --python $(PYTHON) --group bench
	@touch $(VENV)/.synced
	$(BIN)/python -m bench --workers $(WORKERS) $(BENCH_ARGS)

clean:
	rm -rf .venv .tools .data
