# Two things a newcomer needs: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9

.PHONY: demo ui test lint format bench bench-full lock clean

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

demo: $(VENV)/.installed
	$(BIN)/shopsync demo

# The demo again, then the Dagster UI on it with its local Shopify still running, so every
# button works (materialise, backfill, re-sync a store); Ctrl-C stops both.
ui: $(VENV)/.installed
	$(BIN)/shopsync demo --ui

test: $(VENV)/.installed
	$(BIN)/python -m pytest -n 2

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Every benchmark at a small size (minutes); bench-full runs the sizes the issues name (an hour+).
bench: $(VENV)/.installed
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done

# bench_identity also measures Splink 5 on the same million-record world (--splink).
bench-full: $(VENV)/.installed
	@for b in bench/bench_*.py; do echo "== $$b"; extra=""; \
		if [ "$$b" = bench/bench_identity.py ]; then extra="--splink"; fi; \
		$(BIN)/python $$b $$extra || exit 1; done

lock:
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) data/demo .dagster_home
