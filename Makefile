# personalizer: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PERSONALIZER_HOME ?= $(CURDIR)/data
DEMO_CUSTOMERS ?= 2000

.PHONY: help install browser wrk demo serve test test-fast lint format bench bench-batch soak clean clean-data

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | sort | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "personalizer needs Python >= 3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) -c requirements.lock -e '.[dev]' \
		|| $(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the package (editable, with dev tools); no-op when current

demo: install ## Synthetic shop → warehouse → models → segments → journeys → report, then serve
	$(VENV)/bin/personalizer data generate --customers $(DEMO_CUSTOMERS) --seed 42
	$(VENV)/bin/personalizer data import $(PERSONALIZER_HOME)/synthetic
	$(VENV)/bin/personalizer data stats
	$(VENV)/bin/personalizer train recommender
	$(PY) -c "import pandas as pd; ids = pd.read_parquet('$(PERSONALIZER_HOME)/synthetic/customers.parquet')['customer_id']; open('$(PERSONALIZER_HOME)/demo_customers.txt', 'w').write('\n'.join(ids.head(200)))"
	$(VENV)/bin/personalizer score recommendations --customers $(PERSONALIZER_HOME)/demo_customers.txt --n 5 --out $(PERSONALIZER_HOME)/demo_recommendations.parquet
	$(VENV)/bin/personalizer train churn
	$(VENV)/bin/personalizer score churn --out $(PERSONALIZER_HOME)/demo_churn.parquet
	$(VENV)/bin/personalizer train send-time
	$(VENV)/bin/personalizer score send-time --out $(PERSONALIZER_HOME)/demo_send_time.parquet
	$(VENV)/bin/personalizer train engagement
	$(VENV)/bin/personalizer train categories
	$(VENV)/bin/personalizer score categories --out $(PERSONALIZER_HOME)/demo_categories.parquet
	$(VENV)/bin/personalizer segments evaluate --predictions $(PERSONALIZER_HOME)/demo_churn.parquet --predictions $(PERSONALIZER_HOME)/demo_categories.parquet
	$(VENV)/bin/personalizer journeys replay --out $(PERSONALIZER_HOME)/demo_replay.csv
	$(VENV)/bin/personalizer journeys run --now "$$(date -u +%Y-%m-%dT%H:%M:%S)" --out $(PERSONALIZER_HOME)/demo_queue.csv
	$(VENV)/bin/personalizer report
	$(MAKE) serve

serve: install ## Serve the decision service on :3000 (preview page at /preview); Ctrl+C stops it
	PERSONALIZER_API_TOKEN=$${PERSONALIZER_API_TOKEN:-demo-token} $(VENV)/bin/personalizer serve --port 3000

lint: install ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy src

format: install ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix src tests
	$(VENV)/bin/ruff format src tests

# Debian packages: chromium for the browser tests, wrk for the service benchmark. Installed once with
# apt-get (sudo when not root); a machine without apt-get must provide them.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
define apt_install
	@command -v $(1) >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 \
		&& { $(SUDO) apt-get install -y -q $(2) >/dev/null 2>&1 \
		|| { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q $(2) >/dev/null; }; }; } \
		|| { echo "$(1) is needed: install the Debian package $(2)"; exit 1; }
endef

browser: ## Debian's chromium, for the browser tests (Playwright drives it)
	$(call apt_install,chromium,chromium)

wrk: ## wrk, the HTTP load generator of the service benchmark
	$(call apt_install,wrk,wrk)

test: lint browser ## Lint, then the whole test suite (slow tests included)
	$(PY) -m pytest -n 2 --dist loadfile -q

test-fast: install browser ## The test suite without tests marked slow
	$(PY) -m pytest -n 2 --dist loadfile -q -m "not slow"

bench: install wrk ## Benchmarks: throughput figures and ratios against in-run baselines
	$(PY) tests/benchmarks/bench_ingest.py
	$(PY) tests/benchmarks/bench_event_store.py
	$(PY) tests/benchmarks/bench_recommender.py
	$(PY) tests/benchmarks/bench_segments.py
	$(PY) tests/benchmarks/bench_service.py

# The long ones, run on their own: batch scoring builds and trains a shop of CUSTOMERS first (about
# an hour at a million), the soak holds the service under mixed load for SECONDS.
CUSTOMERS ?= 1000000
SECONDS ?= 300
bench-batch: install ## Batch scoring of CUSTOMERS synthetic customers (default 1M), local and Spark
	PERSONALIZER_THREADS=1 $(PY) tests/benchmarks/bench_batch.py --customers $(CUSTOMERS)

soak: install wrk ## The decision service under mixed load for SECONDS (default 300), memory watched
	$(PY) tests/benchmarks/soak_service.py --seconds $(SECONDS)

clean: ## Remove the virtualenv and caches (keeps data/)
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build dist src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

clean-data: ## Remove everything under the data home except its README
	find $(PERSONALIZER_HOME) -mindepth 1 -not -name README.md -delete
