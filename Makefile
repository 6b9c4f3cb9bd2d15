# Two commands on a fresh machine with Python 3.11+:
#   make run   - create .venv, install, start the receiver (embedded PostgreSQL when DATABASE_URL is unset)
#   make test  - install the test extras and run lint, types and the whole suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint bench demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/receiver run

demo: $(VENV)/.installed
	$(BIN)/receiver demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check receiver migrations tests bench
	$(BIN)/ruff format --check receiver migrations tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q -ra

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	touch $@ $(VENV)/.installed $(VENV)/.installed-test

# Figures for the README; each script prints its own targets and PASS/FAIL.
bench: $(VENV)/.installed-bench
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/publish.py
	$(BIN)/python bench/simulate.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
