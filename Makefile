# selfheal: the one entry point for people and CI. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
# Stages call `python`; this makes it the project's interpreter whether or not the venv is activated.
export PATH := $(BIN):$(PATH)
export MPLBACKEND := Agg

PYTEST_ARGS ?= -n 2
VERSION ?=
BASE ?= main
EXP ?=

.PHONY: help venv data run repro test bench heal heal-plan rollback retrain fix-data status versions \
        serve recover report exp exp-apply clean

help: ## List every target with one line each
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.8
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $@

venv: $(STAMP) ## Create .venv from the lock file (pinned, hashed)

data: $(STAMP) ## Write the embedded default data (deterministic; skipped when present)
	$(BIN)/selfheal synth

run: data ## Set up, write the default data and run the whole DVC pipeline (dvc repro)
	$(BIN)/dvc repro

repro: $(STAMP) ## dvc repro only (no data generation)
	$(BIN)/dvc repro

test: $(STAMP) ## Run the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP) ## Run the benchmarks; results in metrics/bench.json
	$(BIN)/python -m benchmarks.run

clean: ## Remove pipeline outputs (not the venv, not the DVC cache)
	rm -rf data/clean data/split models/model.joblib models/model.json models/reference.parquet \
	       metrics/data_quality.json metrics/validation.json metrics/drift.json metrics/plots monitoring/drift_report.html
