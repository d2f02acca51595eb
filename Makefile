# The first two targets are the README's two commands; each creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run-local test bench clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

run-local: $(VENV)/.installed
	$(PY) -m pipeline run --config configs/quick.yaml

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

clean:
	rm -rf out .pytest_cache
