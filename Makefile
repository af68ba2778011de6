# nexus-schedd developer entry points. Everything runs from ./.venv, created on demand.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: run test lint typecheck check bench soak clean venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,web]'
	touch $(STAMP)

venv: $(STAMP)

## Start the daemon in the foreground on ./var with a demo schedule.
run: $(STAMP)
	mkdir -p var
	$(BIN)/nexus-schedd --config config/dev.toml

## Run the whole test suite (exit 5, "no tests collected", counts as failure).
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

## Long reliability runs: 50 kill -9 cycles of the real daemon under load (see docs/reliability.md).
soak: $(STAMP)
	$(BIN)/python -m benchmarks.reliability_soak --cycles 50
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/reliability $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
