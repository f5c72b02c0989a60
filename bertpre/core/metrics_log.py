"""``metrics.jsonl``: the append-only log of a run's metrics, one JSON object per line.

A kill can land while a line is being appended: a cut-off last line is dropped with a note when the
log is read, and removed when a run resumes. A broken line anywhere else is corruption, named.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from bertpre.core.errors import BertpreError
from bertpre.core.io import write_text_atomically

METRICS_FILE = "metrics.jsonl"


def append_metrics(run: str | Path, record: dict[str, Any]) -> None:
    """Append one record to the run's metrics log; a cut-off line left by a kill is removed first."""
    path = Path(run) / METRICS_FILE
    if path.exists() and path.stat().st_size and not _ends_with_newline(path):
        _cut_after_last_newline(path)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file; a cut-off last line is dropped with a warning."""
    path = Path(path)
    if not path.is_file():
        raise BertpreError(f"{path}: no metrics file (is it a bertpre run directory?)")
    records, dropped = _parse(path)
    if dropped:
        warnings.warn(f"{path}: dropped a cut-off last line (a run was stopped while writing it): {dropped[:60]!r}",
                      stacklevel=2)
    return records


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from (they will be written again),
    and a cut-off last line; the file is replaced in one rename."""
    if path.exists():
        records, dropped = _parse(path)
        if dropped:
            print(f"{path}: dropped a cut-off last line left by an interrupted run")
        kept = [record for record in records if record.get("step", 0) <= step]
        write_text_atomically(path, "".join(json.dumps(record) + "\n" for record in kept))


def _parse(path: Path) -> tuple[list[dict[str, Any]], str]:
    """The records, and the text of a cut-off last line ('' when there is none)."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as error:
        raise BertpreError(f"{path}: not UTF-8 text at byte {error.start}; the file is damaged") from None
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    records, dropped = [], ""
    for index, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError:
            if index == len(numbered) - 1:
                dropped = line
                break
            raise BertpreError(f"{path}: line {number} is not a JSON object; the file is damaged (remove that "
                               "line to keep the rest)") from None
        records.append(record)
    return records, dropped


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1) == b"\n"


def _cut_after_last_newline(path: Path) -> None:
    data = path.read_bytes()
    with open(path, "r+b") as handle:
        handle.truncate(data.rfind(b"\n") + 1)
