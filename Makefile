# The two commands: `make run` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/aggregator.toml

.PHONY: run test lint typecheck unit bench bench-polling clean

$(BIN)/aggregator: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test-deps: $(BIN)/aggregator
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/aggregator
	$(BIN)/aggregator run --config $(CONFIG)

lint: $(VENV)/.test-deps
	$(BIN)/ruff check aggregator tests bench
	$(BIN)/ruff format --check aggregator tests bench

typecheck: $(VENV)/.test-deps
	$(BIN)/mypy

unit: $(VENV)/.test-deps
	$(BIN)/python -m pytest

test: lint typecheck unit

bench: $(BIN)/aggregator
	$(BIN)/python bench/farm.py

bench-polling: $(VENV)/.test-deps  # reuses the loopback servers of tests/
	$(BIN)/python bench/polling_farm.py

clean:
	rm -rf $(VENV) build *.egg-info
