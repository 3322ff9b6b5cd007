# kdesk — the operator's entry points. Every target sets up its own virtualenv first,
# so a fresh clone needs nothing but python3 (>= 3.11).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help venv run test test-fast lint bench migrate clean

help:
	@echo "make run    - start the whole desk locally (embedded NATS + PostgreSQL unless KDESK_NATS_URL/KDESK_DATABASE_URL are set)"
	@echo "make test   - install everything and run the full test suite"
	@echo "make bench  - run the benchmarks, print one JSON report (also benchmarks/results/latest.json)"
	@echo "make lint   - ruff"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/kdesk up

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check libs services tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m benchmarks

migrate: $(STAMP)
	$(BIN)/kdesk migrate

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
