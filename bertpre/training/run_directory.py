"""A pretraining run directory's layout, readable without torch: its file names, the checkpoints it holds
(``checkpoints/step-NNNNNNNN/``, complete once ``trainer_state.json`` is written, last) and their counters.

`bertpre status` reads a run with this alone; saving and loading checkpoints (``bertpre/training/checkpoint.py``)
builds on it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from bertpre.core.errors import BertpreError

CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_PATTERN = re.compile(r"^step-(\d{8})$")
RUN_CONFIG_FILE = "pretrain.yaml"
STATE_FILE = "trainer_state.json"
WEIGHTS_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "config.json"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
SCALER_FILE = "scaler.pt"
MANIFEST_FILE = "manifest.json"  # size and hash of every other file; written just before the state file


def checkpoint_name(step: int) -> str:
    """The directory name of the checkpoint at ``step``."""
    return f"step-{step:08d}"


@dataclass
class TrainerState:
    """Counters that make a resumed run continue exactly where the saved one stopped."""

    step: int = 0
    tokens_seen: int = 0
    sequences_seen: int = 0
    skipped_steps: int = 0
    consecutive_nonfinite: int = 0
    elapsed_seconds: float = 0.0
    last_eval: dict[str, float] = field(default_factory=dict)
    # held-out MLM accuracy threshold → when it was first reached: step, tokens_seen, elapsed_seconds
    milestones: dict[str, dict[str, float]] = field(default_factory=dict)
    rank_checksums: list[float] = field(default_factory=list)
    # fingerprint of the vocabulary the training data was prepared with ("" in checkpoints before it was kept)
    vocab_sha256: str = ""
    # fingerprint of the prepared data itself (bertpre/data/metadata.py; "" in checkpoints before it was kept)
    data_fingerprint: str = ""


def read_trainer_state(checkpoint: Path) -> TrainerState:
    """The counters saved in a checkpoint (keys of another bertpre version's state are left out)."""
    saved = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
    known = {f.name for f in dataclasses.fields(TrainerState)}
    return TrainerState(**{key: value for key, value in saved.items() if key in known})


def is_complete(checkpoint: Path) -> bool:
    """Whether a directory is a complete checkpoint (its state file is written last)."""
    return (checkpoint / STATE_FILE).exists()


def list_checkpoints(output: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    directory = Path(output) / CHECKPOINTS_DIR
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.match(p.name) and is_complete(p)]
    return sorted(found, key=lambda p: p.name)


def resolve_checkpoint(path: str | Path, step: str = "latest") -> Path:
    """A checkpoint directory from a run directory (``latest`` or a step) or a checkpoint itself."""
    path = Path(path)
    if is_complete(path):
        return path
    checkpoints = list_checkpoints(path)
    if not checkpoints:
        raise BertpreError(f"{path}: no complete checkpoint (expected {path}/{CHECKPOINTS_DIR}/step-NNNNNNNN)")
    if step == "latest":
        return checkpoints[-1]
    wanted = [c for c in checkpoints if int(c.name[5:]) == int(step)]
    if not wanted:
        steps = ", ".join(str(int(c.name[5:])) for c in checkpoints)
        raise BertpreError(f"{path}: no checkpoint at step {step} (available: {steps})")
    return wanted[0]
