"""`bertpre glue`: fine-tune one model on several GLUE tasks and report them as a leaderboard.

A runner over the finetune stage (like the quickstart over every stage), not a stage of its own.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Sequence

from bertpre.configs import FinetuneConfig
from bertpre.finetune import finetune


def run_glue(model: str, tasks: Sequence[str], data_dir: str, output: str, base: FinetuneConfig,
             show_progress: bool = True) -> list[dict[str, Any]]:
    """Fine-tune and evaluate ``model`` on each GLUE task; save and return the leaderboard rows."""
    rows = []
    for name in tasks:
        config = copy.deepcopy(base)
        config.model, config.task, config.data_dir = model, name, data_dir
        config.output, config.overwrite = str(Path(output) / name), True
        config.metrics = []
        summary = finetune(config, show_progress=show_progress)
        for metric, value in summary.best_metrics.items():
            rows.append({"task": name, "metric": metric, "score": value, "train_rows": summary.train_rows,
                         "eval_rows": summary.eval_rows, "seconds": summary.seconds})
    Path(output).mkdir(parents=True, exist_ok=True)
    (Path(output) / "glue_results.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def glue_table(rows: list[dict[str, Any]]) -> str:
    """The GLUE results as a leaderboard-style table."""
    lines = [f"{'task':<8} {'metric':<22} {'score':>7}", "-" * 39]
    lines += [f"{r['task']:<8} {r['metric']:<22} {100 * r['score']:>7.2f}" for r in rows]
    return "\n".join(lines)
