"""Start-up: help, status and argument errors import none of torch, transformers, datasets or pandas (seconds of
imports), and neither does `bertpre prepare` itself, which tokenizes with `tokenizers` directly.

What a command imports is checked, not how long it takes: wall time is a benchmark's business.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, english_articles

HEAVY = ("torch", "transformers", "datasets", "accelerate", "pandas")
_DRIVER = """
import json, sys
from bertpre.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as stop:
    status = stop.code
print(json.dumps({"status": status, "heavy": sorted(m for m in %r if m in sys.modules)}))
""" % (HEAVY,)


def imports_of(*argv: str) -> dict:
    """Run ``bertpre ARGV`` in a fresh interpreter: its exit status and the heavy modules it imported."""
    result = subprocess.run([sys.executable, "-c", _DRIVER, *argv], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=REPO)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def run_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pretraining run as `bertpre status` finds it: metrics and one complete checkpoint (no weights needed)."""
    run = tmp_path_factory.mktemp("run")
    (run / "metrics.jsonl").write_text(json.dumps({"step": 10, "mlm_loss": 7.5, "learning_rate": 1e-4}) + "\n")
    checkpoint = run / "checkpoints" / "step-00000010"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"step": 10}))
    return run


@pytest.mark.parametrize("argv", [
    ["--help"], ["prepare", "--help"], ["pretrain", "--help"],
    ["prepare", "--max-seq-length", "4"],  # a value the config refuses
    ["pretrain", "--data", "x", "--learning-rate", "-1"],
    ["finetune", "--model", "x", "--learnin-rate", "1"],  # a misspelt option
    ["export", "--checkpoint", "x", "--step", "soon"],
    ["predict", "--model", "x", "--batch-size", "0"],
    ["glue", "--tasks", "nonesuch"],
    ["bench", "--model-size", "huge"],
    ["quickstart", "--pretrain-steps", "-3"],
    ["tokenizer", "train", "--vocab-size", "0"],
], ids=lambda argv: " ".join(argv))
def test_help_and_argument_errors_import_no_heavy_library(argv: list[str]) -> None:
    seen = imports_of(*argv)
    assert seen["status"] in (0, 2)
    assert seen["heavy"] == [], f"`bertpre {' '.join(argv)}` imported {seen['heavy']}"


def test_status_of_a_run_imports_no_heavy_library(run_directory: Path) -> None:
    seen = imports_of("status", str(run_directory))
    assert seen == {"status": 0, "heavy": []}


def test_prepare_imports_neither_transformers_nor_torch_nor_datasets(tmp_path: Path) -> None:
    seen = imports_of("prepare", "--inputs", str(english_articles()), "--output", str(tmp_path / "data"),
                      "--tokenizer", str(REPO / "tokenizer"), "--num-workers", "1", "--max-seq-length", "64")
    assert seen == {"status": 0, "heavy": []}
    assert (tmp_path / "data" / "train" / "data-00000-of-00001.arrow").is_file()
    assert imports_of("prepare", "--inputs", str(tmp_path / "missing.txt"), "--output", str(tmp_path / "x")) == \
        {"status": 2, "heavy": []}
