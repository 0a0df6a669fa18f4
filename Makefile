# jupyterhub-dataaccess developer tasks. `make` alone prints help.
# Stamp files under .venv/ make a second `make setup` fast: each step re-runs only when
# what it depends on changed.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
CHP_VERSION := 5.3.0
CHP := $(VENV)/chp/node_modules/.bin/configurable-http-proxy

# Never let Playwright fetch a browser: the tests drive the system's /usr/bin/chromium.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
# Extra pytest arguments, e.g. make test PYTEST_ARGS="-k demo -x"
PYTEST_ARGS ?=
# Everything run from here finds the venv's tools (jupyterhub, the proxy, jupyterhub-singleuser).
export PATH := $(BIN):$(PATH)

# The package is reinstalled when any of these change. The built labextension, caches and
# node_modules are outputs, not inputs.
INSTALL_INPUTS := $(wildcard setup.py pyproject.toml MANIFEST.in install.json labextension/package.json \
	labextension/package-lock.json labextension/tsconfig.json) \
	$(shell find jupyterhub_dataaccess jupyter-config labextension/src labextension/style labextension/schema \
		\( -path jupyterhub_dataaccess/labextension -o -name __pycache__ -o -name node_modules \) -prune \
		-o -type f -print 2>/dev/null)

.PHONY: help setup system demo test lint frontend-test clean

help: ## Show this help
	@echo "jupyterhub-dataaccess — make targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup: system $(VENV)/.stamp-install $(VENV)/.stamp-chp-$(CHP_VERSION) ## Install everything (system packages, .venv, package, proxy); idempotent

system: ## Install Chromium and PostgreSQL with apt-get when missing
	@bash scripts/setup-system.sh

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip

$(VENV)/.stamp-install: $(INSTALL_INPUTS) | $(VENV)/bin/python
	$(VENV)/bin/pip install '.[test]'
	touch $@

$(VENV)/.stamp-chp-$(CHP_VERSION): | $(VENV)/bin/python
	npm install --prefix $(VENV)/chp --no-audit --no-fund configurable-http-proxy@$(CHP_VERSION)
	ln -sf $(CURDIR)/$(CHP) $(VENV)/bin/configurable-http-proxy
	$(VENV)/bin/configurable-http-proxy --version
	touch $@

demo: setup ## Run the demo hub on http://127.0.0.1:8000 (foreground; Ctrl-C stops it)
	$(VENV)/bin/jupyterhub-dataaccess demo

lint: setup ## ruff over the Python sources; tsc, eslint and prettier over the TypeScript
	$(VENV)/bin/ruff check .
	cd labextension && { [ -d node_modules ] || npm ci --no-audit --no-fund; } && npm run lint

frontend-test: setup ## Front-end unit tests, when labextension/package.json has a "test" script
	@if [ -f labextension/package.json ] && node -e 'process.exit(require("./labextension/package.json").scripts?.test ? 0 : 1)'; then \
		cd labextension && { [ -d node_modules ] || npm ci --no-audit --no-fund; } && npm test; \
	else \
		echo "frontend-test: no \"test\" script in labextension/package.json; skipped"; \
	fi

test: setup ## Lint, front-end unit tests, the whole suite on SQLite, the integration suite again on PostgreSQL
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory frontend-test
	$(VENV)/bin/python -m pytest -ra $(PYTEST_ARGS) tests
	DATAACCESS_TEST_DB=postgresql $(VENV)/bin/python -m pytest -ra -m integration $(PYTEST_ARGS) tests

clean: ## Remove the venv, build outputs, caches and demo/test state
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache \
		jupyterhub_dataaccess/labextension labextension/lib labextension/tsconfig.tsbuildinfo \
		.dataaccess-demo .test-state
	find . -name __pycache__ -type d -prune -not -path './labextension/node_modules/*' -exec rm -rf {} +
