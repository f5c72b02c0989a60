"""Several fine-tunes of one recipe: over seeds, and against the same architecture from random init.

The one-command answer to "did pretraining pay?": ``bertpre finetune --compare-random-init true
--seeds 0 1 2`` fine-tunes the model and a randomly initialised copy of its architecture with
identical settings and seeds, and reports both and the gain. A runner over the finetune stage.
"""

from __future__ import annotations

import copy
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertpre.training.accelerator import locked_output, process_state
from bertpre.core.configs import FinetuneConfig
from bertpre.tasks.finetune import FinetuneSummary, finetune
from bertpre.core.io import write_text_atomically


def wants_several_runs(config: FinetuneConfig) -> bool:
    """Whether the config asks for a comparison or several seeds rather than one fine-tune."""
    return config.compare_random_init or len(config.seeds) > 0


@dataclass
class ComparisonSummary:
    """Best metrics of every run, by initialisation and seed, with means and the gain of pretraining."""

    output: str
    task: str
    metric: str
    runs: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)  # init → seed → metrics
    train_rows: int = 0
    eval_rows: int = 0
    seconds: float = 0.0  # all runs together

    def mean(self, init: str, metric: str | None = None) -> float:
        """The mean over seeds of a metric (the primary one by default) for one initialisation."""
        return statistics.fmean(m[metric or self.metric] for m in self.runs[init].values())

    def spread(self, init: str, metric: str | None = None) -> float:
        """Standard deviation over seeds of a metric (the primary one by default); 0 for one seed."""
        values = [m[metric or self.metric] for m in self.runs[init].values()]
        return statistics.stdev(values) if len(values) > 1 else 0.0

    def gain(self) -> float | None:
        """Mean primary metric of the pretrained model minus that of random init (None without both)."""
        if {"pretrained", "random"} <= set(self.runs):
            return self.mean("pretrained") - self.mean("random")
        return None

    def table(self) -> str:
        """The runs, their means and the gain."""
        seeds = sorted({seed for runs in self.runs.values() for seed in runs})
        header = f"{'init':<12}" + "".join(f"{'seed ' + str(s):>10}" for s in seeds) + f"{'mean':>10}{'± sd':>8}"
        lines = [f"task             {self.task} ({self.metric}, best epoch of each run)", header]
        for init, runs in self.runs.items():
            cells = "".join(f"{100 * runs[s][self.metric]:>10.2f}" for s in seeds)
            lines.append(f"{init:<12}{cells}{100 * self.mean(init):>10.2f}{100 * self.spread(init):>8.2f}")
        if self.gain() is not None:
            verdict = "pretraining paid" if self.gain() > 0 else "pretraining did not pay"
            lines.append(f"gain             {100 * self.gain():+.2f} points ({verdict})")
        lines.append(f"saved            {self.output}/comparison.json")
        return "\n".join(lines)


def compare_finetunes(config: FinetuneConfig, show_progress: bool = True) -> ComparisonSummary:
    """Fine-tune once per seed (and init, with ``compare_random_init``); save and return the comparison."""
    with locked_output(config.output, config.cpu):
        return _compare(config, show_progress)


def _compare(config: FinetuneConfig, show_progress: bool) -> ComparisonSummary:
    inits = ["pretrained", "random"] if config.compare_random_init else [config.init]
    seeds = list(config.seeds) or [config.seed]
    summary: ComparisonSummary | None = None
    for init in inits:
        for seed in seeds:
            run = copy.deepcopy(config)
            run.init, run.seed, run.seeds, run.compare_random_init = init, seed, [], False
            run.output = str(Path(config.output) / init / f"seed-{seed}")
            if config.run_name:  # each run keeps its own name in the trackers
                run.run_name = f"{config.run_name}-{init}-seed-{seed}"
            result: FinetuneSummary = finetune(run, show_progress=show_progress)
            if summary is None:
                metric = config.metric or next(iter(result.best_metrics))
                summary = ComparisonSummary(config.output, result.task, metric, train_rows=result.train_rows,
                                            eval_rows=result.eval_rows)
            summary.runs.setdefault(init, {})[seed] = result.best_metrics
            summary.seconds += result.seconds
    assert summary is not None
    if process_state(config.cpu).is_main_process:  # one writer under a multi-process launch
        _save(summary)
    return summary


def _save(summary: ComparisonSummary) -> None:
    record: dict[str, Any] = {"task": summary.task, "metric": summary.metric,
                              "runs": {init: {str(seed): m for seed, m in runs.items()}
                                       for init, runs in summary.runs.items()},
                              "means": {init: summary.mean(init) for init in summary.runs},
                              "gain": summary.gain()}
    Path(summary.output).mkdir(parents=True, exist_ok=True)
    write_text_atomically(Path(summary.output) / "comparison.json", json.dumps(record, indent=2) + "\n")
