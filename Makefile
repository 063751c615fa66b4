# Two entry points for a fresh machine: `make demo` (the main job) and `make test` (what CI runs).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup browser demo lint frontend-check test bench frontend

$(STAMP): setup.py
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[tf,demo,test]'
	touch $(STAMP)

setup: $(STAMP)

# Debian's Chromium for the end-to-end test of the tab (Playwright drives it; it cannot download its own).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

demo: setup
	$(BIN)/tb-unfreeze demo --logdir out

# Lint and format check (pyproject.toml [tool.ruff]) before the tests: a finding fails `make test`.
# `$(BIN)/ruff format .` formats the code.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The tab's typecheck, its Node tests and the committed bundle against a fresh build (installs Node when missing).
frontend-check:
	.ci/frontend-check

test: setup browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	.ci/frontend-check
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q tests

bench: setup
	$(BIN)/python -m bench.run

# Rebuild the tab's JavaScript (the built files are committed, so installing needs no Node).
frontend:
	npm --prefix frontend ci && npm --prefix frontend run build
