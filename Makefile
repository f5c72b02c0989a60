# The two commands a new user runs (see README.md):
#   make quickstart   set up .venv and run the pipeline end to end on the built-in corpus
#   make test         set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
OUTPUT ?= runs/quickstart
# Users get whatever torch pip picks for their machine (a CUDA build on Linux); CI pins the
# CPU build that lies on the CI machine's disk, so a test run never downloads several GB.
ifeq ($(CI),true)
TORCH_SPEC ?= torch==2.13.0
else
TORCH_SPEC ?= torch
endif

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: quickstart test install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/bertpre quickstart --output $(OUTPUT)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
