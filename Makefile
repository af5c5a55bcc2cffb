# The two commands (README): `make up` runs the service, `make test` runs the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: up test install install-test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	@if command -v npm >/dev/null 2>&1; then \
	  (cd tests/timescale && npm ci --silent --no-audit --no-fund >/dev/null 2>&1 || npm install --silent --no-audit --no-fund); \
	else echo "npm not found: the TimescaleDB DDL test will be skipped (install Node.js 20 to run it)"; fi

# Installs, then runs the service on its embedded default with a simulated Miraflores fleet.
up: install
	$(BIN)/serenazgo up --demo

# Installs, then runs lint, types and the whole test suite.
test: install-test
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

bench: install-test
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
