"""``metrics.jsonl``: the append-only log of a run's metrics, one JSON object per line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bertpre.errors import BertpreError

METRICS_FILE = "metrics.jsonl"


def append_metrics(run: str | Path, record: dict[str, Any]) -> None:
    """Append one record to the run's metrics log."""
    with open(Path(run) / METRICS_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file."""
    path = Path(path)
    if not path.is_file():
        raise BertpreError(f"{path}: no metrics file (is it a bertpre run directory?)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from; they will be written again."""
    if path.exists():
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
