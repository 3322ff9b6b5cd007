# kdesk — the operator's entry points. Every target sets up its own virtualenv first,
# so a fresh clone needs nothing but python3 (>= 3.11).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The dashboard's browser test (tests/e2e/test_dashboard_browser.py) drives Debian's Chromium through its
# matching driver; `make test` installs both when missing (no browser download from anywhere else).
CHROMIUM     := /usr/bin/chromium
CHROMEDRIVER := /usr/bin/chromedriver
SUDO         := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help venv run test test-fast lint bench migrate clean

help:
	@echo "make run    - start the whole desk locally (embedded NATS + PostgreSQL unless KDESK_NATS_URL/KDESK_DATABASE_URL are set)"
	@echo "make test   - install everything and run the full test suite"
	@echo "make bench  - run the benchmarks, print one JSON report (also benchmarks/results/latest.json)"
	@echo "make chaos  - the fault campaign (KDESK_CHAOS_S seconds, default 300): benchmarks/results/reliability.json"
	@echo "make lint   - ruff"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/kdesk up

test: $(STAMP) $(CHROMIUM) $(CHROMEDRIVER)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check libs services tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m benchmarks

$(CHROMIUM) $(CHROMEDRIVER) &:
	@command -v apt-get >/dev/null || { echo "make: install Chromium and its driver (Debian: chromium, chromium-driver)"; exit 1; }
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver

migrate: $(STAMP)
	$(BIN)/kdesk migrate

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache

# The fault campaign (issue 18): the desk as processes against the simulator, seeded faults for KDESK_CHAOS_S
# seconds (default 300), invariants checked from the exchange's records; writes benchmarks/results/reliability.json.
.PHONY: chaos
chaos: $(STAMP)
	KDESK_CHAOS_S=$${KDESK_CHAOS_S:-300} $(BIN)/python -m benchmarks.chaos
