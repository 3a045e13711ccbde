# customs-gateway: every target sets itself up from a fresh clone (Python 3.11+ and make).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTOS := $(wildcard protos/customs/gateway/v1/*.proto)
GEN    := customs/gateway/v1/__init__.py

.PHONY: all test lint demo bench gen clean fmt

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

test: $(GEN)
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
	rm -rf $(VENV) customs .pytest_cache .mypy_cache .ruff_cache .hypothesis demo-run
