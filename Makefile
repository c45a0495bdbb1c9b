# Streamscope: `make run` starts the dashboard, `make test` runs every test. Both install first.
# For developers: `make test-fast` runs the in-process tests only (see FAST_TESTS).
PYTHON ?= python3.11
PORT ?= 8000
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# No browser, no server processes (Daphne, simulator, workers), no PostgreSQL/Redis, no long
# sweeps: the markers are registered in pyproject.toml (tests/conftest.py applies `server` from the
# fixtures a test uses). Under a minute on 2 cores; keep it so by marking what makes it slower.
FAST_TESTS := -m "not e2e and not server and not services and not slow"

.PHONY: install run test test-fast e2e-deps bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet ".[test,redis,postgres]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py bootstrap --url http://127.0.0.1:$(PORT)/
	@echo "Streamscope is starting on http://127.0.0.1:$(PORT)/ (simulator upstream built in; Ctrl+C stops)"
	PORT=$(PORT) $(BIN)/daphne -b 127.0.0.1 -p $(PORT) --websocket-max-message-size 16777216 dashboard.asgi:application

e2e-deps:
	bash scripts/ensure-chromium.sh
	bash scripts/ensure-node-sdk.sh

test: install e2e-deps
	bash scripts/run-tests.sh

test-fast: install
	bash scripts/run-tests.sh $(FAST_TESTS)

bench: install
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/fanout.py
	$(BIN)/python bench/concurrency.py
	$(BIN)/python bench/history.py
	$(BIN)/python bench/timeline.py
	$(BIN)/python bench/moderation.py
	$(BIN)/python bench/reader.py

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache
