# The README's two commands: `make run` (the main job, embedded) and `make test` (the suite).
# Each creates .venv and installs what it needs on a fresh machine with Python 3.11+.

PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Test processes (pytest-xdist): every test has its own ledger database, queue and throwaway
# servers, and most of a test's time is spent waiting on workers, so two share 2 cores well.
TEST_WORKERS ?= 2

.PHONY: run test unit integration faults soak bench lint typecheck services clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: Python 3.11 or newer is required" >&2; exit 2; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/keyturn run $(ARGS)

test: $(STAMP) services
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

unit: $(STAMP)
	$(BIN)/python -m pytest -m unit

integration: $(STAMP) services
	$(BIN)/python -m pytest -m integration

faults: $(STAMP) services
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "faults and not soak" tests/faults

soak: $(STAMP) services
	$(BIN)/python -m pytest -m soak tests/faults

bench: $(STAMP) services
	for b in bench/[!_]*.py; do $(BIN)/python $$b || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check rotation worker tests bench migrations
	$(BIN)/ruff format --check rotation worker tests bench migrations

typecheck: $(STAMP)
	$(BIN)/mypy

services:
	@scripts/install-test-deps.sh
	@scripts/services.sh

clean:
	rm -rf $(VENV) .keyturn .pytest_cache
