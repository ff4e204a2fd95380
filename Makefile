# okrstream — every developer entry point. `make help` lists them.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

PYTEST := $(BIN)/pytest
SOURCES := events projections contracts services deploy tests

.DEFAULT_GOAL := help
.PHONY: help install run test test-unit test-integration test-e2e test-faults lint fmt bench demo schemas clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-17s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "okrstream needs Python 3.11 ($(PYTHON) not found)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv/ and install okrstream (editable) with the dev tools

run: $(STAMP) ## install if needed, then start the embedded stack (okrstream up)
	$(BIN)/okrstream up

test: $(STAMP) ## install if needed, then run the whole suite (unit, integration, e2e, faults)
	$(PYTEST) -q

test-unit: $(STAMP) ## pure logic: events/, projections/, contracts/
	$(PYTEST) -q tests/unit

test-integration: $(STAMP) ## services against the real broker, SQLite and PostgreSQL
	$(PYTEST) -q tests/integration

test-e2e: $(STAMP) ## HTTP against the running stack
	$(PYTEST) -q tests/e2e

test-faults: $(STAMP) ## fault injection: SIGKILL each process, broker outage
	$(PYTEST) -q -m faults tests

lint: $(STAMP) ## ruff check, ruff format --check, mypy strict, import-linter
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(STAMP) ## format and autofix
	$(BIN)/ruff format $(SOURCES)
	$(BIN)/ruff check --fix $(SOURCES)

schemas: $(STAMP) ## regenerate the checked-in JSON Schemas of contracts/
	$(BIN)/okrstream schemas write

bench: $(STAMP) ## run every benchmark side by side; last stdout line is one JSON object
	$(BIN)/python -m tests.bench.run

demo: $(STAMP) ## seed a believable organisation into the running stack and stream readings
	$(BIN)/okrstream demo

clean: ## remove the venv and local data
	rm -rf $(VENV) var
