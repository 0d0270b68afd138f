# openrl-agent: setup, tests, demo. Every install step lives here so a clean clone (and CI) works.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch must come first: an unpinned torch pulled by a dependency would be a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup test test-fast demo lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -m 'not slow and not k8s and not gpu' $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/openrl-agent data build
	$(VENV)/bin/openrl-agent data show builtin --split dev --limit 5

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
