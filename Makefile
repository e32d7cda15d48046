# Quick start: `make demo` (set up and serve the demo), `make test` (set up and run the tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-fast lint bench

$(BIN)/.installed: requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# The node client tests' packages (tests/node/package.json pins them; no lock file is kept).
NODE_DEPS := tests/node/node_modules/.installed
$(NODE_DEPS): tests/node/package.json
	npm install --prefix tests/node --no-audit --no-fund --no-package-lock --silent
	touch $@

install: $(BIN)/.installed

# The demo is a development server: DEBUG on unless the environment says otherwise.
demo: install
	DEBUG=$${DEBUG:-true} $(BIN)/python manage.py demo

# The suite in parallel (pytest-xdist): a test module stays on one worker (its live servers are
# shared), each worker has its own test database and Redis database (tests/workers.py).
# TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

test: install $(NODE_DEPS)
	$(PYTEST)

# Without the browser tests (they need Chromium: apt-get install chromium).
test-fast: install $(NODE_DEPS)
	$(PYTEST) -m "not browser"

# Throughput against the SDK alone: the floor, then the server, then their ratio (~2 min; the full
# benchmark and its options: docs/performance.md). BENCH_ARGS="--postgres --redis" for that stack.
bench: install
	$(BIN)/python bench/stream_bench.py --idle-streams 0 --disconnect-reps 0 --ttfd-low-concurrency 0 \
		--no-ttfd --ratio-rounds 3 $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DEBUG=true $(BIN)/python manage.py makemigrations --check --dry-run
