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
	$(BIN)/python -m pip install --quiet -e '.[dev,web,queues,otel]'
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

## Benchmarks (issue 6): their own venv with APScheduler 3.11 + SQLAlchemy (not
## package dependencies), the web extra (the HTTP API row) and otel (tracing_overhead); prints one table and JSON. BENCH_ARGS=--quick for a smoke run.
BENCH_VENV  := benchmarks/.venv
BENCH_STAMP := $(BENCH_VENV)/.installed-bench

$(BENCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e '.[web,queues,otel]' 'APScheduler>=3.11,<3.12' SQLAlchemy
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python -m benchmarks.run_all --json-out benchmarks/results.json $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(BENCH_VENV) var .pytest_cache .mypy_cache .ruff_cache
