# The first two targets are the README's two commands; each creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run-local test bench container run-dataflow run-flink clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

run-local: $(VENV)/.installed
	$(PY) -m pipeline run --config configs/quick.yaml

test: $(VENV)/.installed
	$(PY) -m pytest -q

# NST speed, ours against the seed's loop (see README "Performance"); e.g. make bench BENCH_ARGS=--quick
BENCH_ARGS ?=
bench: $(VENV)/.installed
	$(PY) bench/nst_bench.py $(BENCH_ARGS)

# Scale-out (see README "Runners"): IMAGE is the worker container; CONTENT, STYLE and OUTPUT are URIs.
IMAGE ?= toonbeam-worker:latest
METHOD ?= nst
RUN_ARGS = --content "$(CONTENT)" --style "$(STYLE)" --output "$(OUTPUT)" --method $(METHOD)

container:
	docker build -t $(IMAGE) .

run-dataflow: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[gcp]"
	IMAGE=$(IMAGE) $(PY) -m pipeline run --config configs/dataflow-gpu.yaml $(RUN_ARGS)

run-flink: $(VENV)/.installed
	IMAGE=$(IMAGE) $(PY) -m pipeline run --config configs/flink.yaml $(RUN_ARGS)

clean:
	rm -rf out .pytest_cache
