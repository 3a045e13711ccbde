# customs-gateway: every target sets itself up from a fresh clone (Python 3.11+ and make).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTOS := $(wildcard protos/customs/gateway/v1/*.proto protos/google/*/*.proto)
GEN    := customs/gateway/v1/__init__.py
# The Node.js partner client of tests/interop (its test is skipped, in one line, where npm is
# missing; under CI=true it fails instead).
INTEROP := tests/interop/node_modules/.installed

.PHONY: all test lint demo bench gen clean fmt interop

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The generated `customs` package must exist before the editable install maps the packages.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet 'grpcio-tools>=1.70,<2' 'googleapis-common-protos>=1.60,<2'
	$(BIN)/python protos/generate.py
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

$(GEN): $(PROTOS) | $(STAMP)
	$(BIN)/python protos/generate.py
	@echo "generated customs.gateway.v1 from protos/"

gen: $(GEN)

$(INTEROP): tests/interop/package.json tests/interop/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd tests/interop && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else \
		echo "npm not found: the Node.js interop test will be skipped (install Node.js 20 and npm)"; \
	fi

interop: $(INTEROP)

test: $(GEN) $(INTEROP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(GEN)
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway tests bench
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format gateway tests bench
	$(BIN)/ruff check --fix gateway tests bench

demo: $(GEN)
	$(BIN)/python -m gateway demo $(DEMO_ARGS)

bench: $(GEN)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) customs .pytest_cache .mypy_cache .ruff_cache .hypothesis demo-run \
		tests/interop/node_modules
