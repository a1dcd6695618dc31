# The README's two Quickstart commands are `make run` and `make test`; both set themselves up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test setup setup-test lint typecheck configs bench loadtest grow train train-cnn train-encoder train-cnn-student clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "zhserve needs Python >= 3.11 (asyncio.timeout, tomllib); set PYTHON=python3.11 or newer" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP)-serve: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(STAMP)-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test,train,export]"
	touch $@ $(STAMP)-serve

$(STAMP)-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test,train,export,bench]"
	touch $@ $(STAMP)-test $(STAMP)-serve

setup: $(STAMP)-serve

setup-test: $(STAMP)-test
	scripts/install-test-deps.sh

## Serve the embedded models at http://127.0.0.1:8000 (UI at /, API docs at /docs). Ctrl+C stops.
run: setup
	$(BIN)/python -m serve_app.launch run serve_config.yaml

## Everything CI runs: lint (ruff check, ruff format --check, mypy), unit, Serve (real local cluster), export, training and browser tests.
test: setup-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: setup-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

typecheck: setup-test
	$(BIN)/mypy

## Write serve_config.yaml, serve_config.cluster.yaml, serve_config.base.yaml and the RayService's serveConfigV2 from configs/ (edit configs/app.yaml and its overlays, never the copies).
configs: setup
	$(BIN)/python -m scripts.gen_configs

## Rebuild the embedded models from ../shared/data: the CNN models (53 min on this 2-core machine), the e5 models and the NER ensemble, then the CNN NER distilled from that ensemble and the ensemble again over it.
train: train-cnn train-encoder train-cnn-student

train-cnn: setup-test
	$(BIN)/zhserve-train all --data ../shared/data --out models

## The e5 models: sentiment (~80 min), NER in two stages (~75 + ~100 min), then the NER ensemble (~6 min); resumable: rerun it to continue.
train-encoder: setup-test
	$(BIN)/zhserve-train encoder --data ../shared/data --run-dir runs/e5 --out models --threads 2

## The fast NER tier (zhserve-ner 2.3.0): the CNN recipe taught by models/ner-ensemble on the training rows and the People's Daily 1998 text (~36 min), then the ensemble rebuilt over it (~7 min).
train-cnn-student: setup-test
	$(BIN)/zhserve-train ner --data ../shared/data --out models --version 2.3.0 --threads 1 --ner-distill 0 \
		--ner-teacher-models models/ner-ensemble --ner-distill-text people-daily
	$(BIN)/zhserve-train encoder --data ../shared/data --run-dir runs/e5 --out models --models ner-ensemble

## zhserve against the seed design and the in-process limit, side by side; writes BENCHMARKS.md (~45 min).
bench: $(STAMP)-bench
	scripts/install-test-deps.sh wrk
	$(BIN)/python load_tests/bench.py

## A bounded headless Locust run (load_tests/locustfile.py) against zhserve as `make run` starts it; report in artifacts/loadtest/.
loadtest: $(STAMP)-bench
	$(BIN)/python load_tests/loadtest.py

## Growing by nodes, shown: zhserve on an autoscaling Ray cluster on this machine, under load and after; prints the timeline (6–10 min, README "Growing by nodes").
grow: setup-test
	$(BIN)/python -m load_tests.grow_by_nodes

clean:
	rm -rf $(VENV) artifacts .pytest_cache .ruff_cache .mypy_cache
