# Two commands on a fresh machine with Python 3.11+:
#   make run   - create .venv, install, start the receiver (embedded PostgreSQL when DATABASE_URL is unset)
#   make test  - install the test extras; lint, types, import contracts, the wheel smoke, the whole suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint wheel-smoke browser fuzz bench demo clean

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
	$(BIN)/lint-imports

# The package as a user installs it: a wheel in a fresh venv outside the checkout runs migrate,
# run (one signed webhook), demo and simulate. Dependencies come from .venv/wheelhouse after the first run.
wheel-smoke: | $(BIN)/python
	tests/wheel_smoke.sh $(BIN)/python

# The console's browser tests (tests/browser) drive Debian's Chromium. It is installed here when it
# is missing and this is root with apt-get; otherwise those tests skip, and under CI=true they fail.
CHROMIUM := /usr/bin/chromium
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the console's browser tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; \
	  else \
	    echo "make: $(CHROMIUM) is missing and cannot be installed here; the browser tests will skip (CI=true: fail)"; \
	  fi; \
	fi

test: lint wheel-smoke browser
	$(BIN)/pytest -q -ra

# The fuzz targets for longer than `make test` runs them (about 50 times the examples; FUZZ_SCALE=N to choose).
fuzz: $(VENV)/.installed-test
	HYPOTHESIS_PROFILE=long $(BIN)/pytest -q -m fuzz tests/fuzz

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	touch $@ $(VENV)/.installed $(VENV)/.installed-test

# Figures for the README; each script prints its own targets and PASS/FAIL.
bench: $(VENV)/.installed-bench
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/publish.py
	$(BIN)/python bench/simulate.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache build *.egg-info
