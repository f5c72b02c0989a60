"""Several fine-tunes of one recipe: over seeds, against the same architecture from random init, and any
two recipes' saved runs against each other.

The one-command answer to "did pretraining pay?": ``bertpre finetune --compare-random-init true`` fine-tunes
the model and a randomly initialised copy of its architecture with identical settings and seeds (five by
default), and reports both, the per-seed differences and the gain with its 95% interval over seeds and
evaluation rows (``bertpre/tasks/statistics.py``), worded as a verdict. ``bertpre compare A B`` does the
same for any two fine-tuning outputs scored on the same evaluation rows (a domain model against a general
one). A runner over the finetune stage.
"""

from __future__ import annotations

import copy
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from bertpre.core.configs import CompareConfig, FinetuneConfig
from bertpre.core.errors import BertpreError
from bertpre.core.io import write_text_atomically
from bertpre.tasks.finetune import PREDICTIONS_FILE, FinetuneSummary, epoch_choice, finetune
from bertpre.tasks.metrics import compute_metrics
from bertpre.tasks.statistics import ENOUGH_SEEDS, PairedComparison, paired_bootstrap
from bertpre.training.accelerator import locked_output, process_state

COMPARISON_FILE = "comparison.json"


def wants_several_runs(config: FinetuneConfig) -> bool:
    """Whether the config asks for a comparison or several seeds rather than one fine-tune."""
    return config.compare_random_init or len(config.seeds) > 0


def comparison_seeds(config: FinetuneConfig) -> list[int]:
    """``seeds``, or without them ``seed`` alone, or for a comparison the five seeds from ``seed`` on."""
    if config.seeds:
        return list(config.seeds)
    return list(range(config.seed, config.seed + ENOUGH_SEEDS)) if config.compare_random_init else [config.seed]


@dataclass
class ComparisonSummary:
    """Every run's metrics and evaluation predictions, by recipe (``pretrained``, ``random``, or the names of
    ``bertpre compare``) and seed; the first two recipes compared, paired by seed."""

    output: str
    task: str
    metric: str
    runs: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)  # recipe → seed → metrics
    train_rows: int = 0
    eval_rows: int = 0
    seconds: float = 0.0  # all runs together
    predictions: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)  # recipe → seed → per-row
    labels: Optional[np.ndarray] = None  # the evaluation rows' labels, the same for every run
    chosen_on: str = ""  # which rows chose each run's epoch

    def mean(self, init: str, metric: str | None = None) -> float:
        """The mean over seeds of a metric (the primary one by default) for one recipe."""
        return statistics.fmean(m[metric or self.metric] for m in self.runs[init].values())

    def spread(self, init: str, metric: str | None = None) -> float:
        """Standard deviation over seeds of a metric (the primary one by default); 0 for one seed."""
        values = [m[metric or self.metric] for m in self.runs[init].values()]
        return statistics.stdev(values) if len(values) > 1 else 0.0

    def compared(self) -> tuple[str, str] | None:
        """The two recipes compared, A then B (None with one)."""
        names = list(self.runs)
        return (names[0], names[1]) if len(names) >= 2 else None

    def gain(self) -> float | None:
        """Mean primary metric of A minus that of B (None without both)."""
        pair = self.compared()
        return self.mean(pair[0]) - self.mean(pair[1]) if pair else None

    def interval(self, metric: str | None = None) -> PairedComparison | None:
        """A against B paired by seed, with its bootstrap interval (None without both, or without the runs'
        per-row predictions)."""
        pair = self.compared()
        if pair is None or self.labels is None:
            return None
        seeds = sorted(set(self.runs[pair[0]]) & set(self.runs[pair[1]]))
        if not seeds or not all(seed in self.predictions.get(name, {}) for name in pair for seed in seeds):
            return None
        return paired_bootstrap([self.predictions[pair[0]][s] for s in seeds],
                                [self.predictions[pair[1]][s] for s in seeds], self.labels, metric or self.metric, seeds)

    def table(self) -> str:
        """The runs, their means, the per-seed differences and the verdict with its interval."""
        seeds = sorted({seed for runs in self.runs.values() for seed in runs})
        width = max(12, *(len(name) + 2 for name in self.runs))  # long --names keep the columns aligned
        header = f"{'':<{width}}" + "".join(f"{'seed ' + str(s):>10}" for s in seeds) + f"{'mean':>10}{'± sd':>8}"
        chosen = f"; epoch of each run chosen on {self.chosen_on}" if self.chosen_on else ""
        lines = [f"task             {self.task} ({self.metric} on {self.eval_rows:,} evaluation rows{chosen})", header]
        for init, runs in self.runs.items():
            cells = "".join(f"{100 * runs[s][self.metric]:>10.2f}" if s in runs else f"{'—':>10}" for s in seeds)
            lines.append(f"{init:<{width}}{cells}{100 * self.mean(init):>10.2f}{100 * self.spread(init):>8.2f}")
        pair, comparison = self.compared(), self.interval()
        if pair is not None:
            label = "gain" if pair == ("pretrained", "random") else f"{pair[0]} − {pair[1]}"
            if comparison is None:
                lines.append(f"{label:<16} {100 * self.gain():+.2f} points (no per-row predictions: no interval)")
            else:
                differences = dict(zip(comparison.seeds, comparison.differences))
                lines.append(f"{'difference':<{width}}" + "".join(f"{100 * differences[s]:>+10.2f}" if s in differences
                                                           else f"{'—':>10}" for s in seeds))
                lines.append(f"{label:<16} {comparison.describe()}")
                if comparison.caveat():
                    lines.append(f"{'note':<16} {comparison.caveat()}")
        if self.output:
            lines.append(f"saved            {self.output}")
        return "\n".join(lines)


def compare_finetunes(config: FinetuneConfig, show_progress: bool = True) -> ComparisonSummary:
    """Fine-tune once per seed (and init, with ``compare_random_init``); save and return the comparison."""
    with locked_output(config.output, config.cpu):
        return _compare(config, show_progress)


def _compare(config: FinetuneConfig, show_progress: bool) -> ComparisonSummary:
    inits = ["pretrained", "random"] if config.compare_random_init else [config.init]
    summary: ComparisonSummary | None = None
    for init in inits:
        for seed in comparison_seeds(config):
            run = copy.deepcopy(config)
            run.init, run.seed, run.seeds, run.compare_random_init = init, seed, [], False
            run.output = str(Path(config.output) / init / f"seed-{seed}")
            if config.run_name:  # each run keeps its own name in the trackers
                run.run_name = f"{config.run_name}-{init}-seed-{seed}"
            result: FinetuneSummary = finetune(run, show_progress=show_progress)
            if summary is None:
                summary = ComparisonSummary(str(Path(config.output) / COMPARISON_FILE), result.task,
                                            config.metric or next(iter(result.best_metrics)),
                                            train_rows=result.train_rows, eval_rows=result.eval_rows,
                                            labels=result.eval_labels, chosen_on=epoch_choice(config))
            add_run(summary, init, seed, result)
    assert summary is not None
    if process_state(config.cpu).is_main_process:  # one writer under a multi-process launch
        _save(summary)
    return summary


def add_run(summary: ComparisonSummary, init: str, seed: int, result: FinetuneSummary) -> None:
    """Record one fine-tune's metrics and evaluation predictions in ``summary``."""
    summary.runs.setdefault(init, {})[seed] = result.best_metrics
    if result.eval_predictions is not None:
        summary.predictions.setdefault(init, {})[seed] = result.eval_predictions
    summary.seconds += result.seconds


def compare_saved_runs(config: CompareConfig) -> ComparisonSummary:
    """`bertpre compare`: two recipes' saved fine-tunes, paired by seed, scored from their per-row predictions."""
    names = config.names or [Path(run).name for run in config.runs]
    if len(set(names)) < 2:
        names = [f"{name} ({i})" for i, name in zip("AB", names)]
    loaded = [_saved_runs(Path(run)) for run in config.runs]
    labels = _common_labels(config.runs, loaded)
    shared = sorted(set(loaded[0]) & set(loaded[1]))
    if not shared:
        raise BertpreError(f"{config.runs[0]} and {config.runs[1]} share no seed (seeds {sorted(loaded[0])} and "
                           f"{sorted(loaded[1])}); fine-tune both with the same --seeds")
    metric = config.metric or _first_metric(loaded[0][shared[0]][2])
    summary = ComparisonSummary(config.output or "", _task_of(loaded[0]), metric,
                                eval_rows=len(labels), labels=labels)
    for name, runs in zip(names, loaded):
        for seed in shared:
            predictions = runs[seed][0]
            summary.runs.setdefault(name, {})[seed] = compute_metrics([metric], predictions, labels)
            summary.predictions.setdefault(name, {})[seed] = predictions
    if config.output:
        _save(summary)
    return summary


def _saved_runs(directory: Path) -> dict[int, tuple[np.ndarray, np.ndarray, Path]]:
    """seed → (predictions, labels, run directory) of a fine-tuning output, or of a directory of seed-N/ ones."""
    if (directory / PREDICTIONS_FILE).is_file():
        return {_seed_of(directory): (*_read_predictions(directory), directory)}
    runs = {int(child.name[5:]): child for child in sorted(directory.glob("seed-*"))
            if child.name[5:].isdigit() and (child / PREDICTIONS_FILE).is_file()}
    if not runs:
        raise BertpreError(f"{directory}: neither {PREDICTIONS_FILE} nor seed-N/ runs holding one; name a `bertpre "
                           "finetune` output (OUTPUT, OUTPUT/pretrained or OUTPUT/random of a comparison)")
    return {seed: (*_read_predictions(run), run) for seed, run in runs.items()}


def _read_predictions(run: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = [json.loads(line) for line in (run / PREDICTIONS_FILE).read_text(encoding="utf-8").splitlines() if line]
    return np.array([r["prediction"] for r in rows]), np.array([r["label"] for r in rows])


def _seed_of(run: Path) -> int:
    config = run / "finetune.yaml"
    return int(yaml.safe_load(config.read_text(encoding="utf-8"))["seed"]) if config.is_file() else 0


def _common_labels(paths: list[str], loaded: list[dict[int, tuple[np.ndarray, np.ndarray, Path]]]) -> np.ndarray:
    """The evaluation labels every run was scored on; runs on other rows cannot be paired."""
    first = next(iter(loaded[0].values()))
    for path, runs in zip(paths, loaded):
        for seed, (_, labels, run) in runs.items():
            if len(labels) != len(first[1]) or not np.array_equal(labels, first[1]):
                raise BertpreError(f"{run}: scored on other evaluation rows than {first[2]} ({len(labels):,} and "
                                   f"{len(first[1]):,} rows, or other labels); compare runs of the same --eval-file")
    return first[1]


def _first_metric(run: Path) -> str:
    results = json.loads((run / "eval_results.json").read_text(encoding="utf-8"))
    return next(k for k in results if k not in ("task", "best_epoch", "epoch_chosen_on"))


def _task_of(runs: dict[int, tuple[np.ndarray, np.ndarray, Path]]) -> str:
    run = next(iter(runs.values()))[2]
    return json.loads((run / "eval_results.json").read_text(encoding="utf-8")).get("task", "?")


def _save(summary: ComparisonSummary) -> None:
    comparison = summary.interval()
    record: dict[str, Any] = {"task": summary.task, "metric": summary.metric, "epoch_chosen_on": summary.chosen_on,
                              "runs": {init: {str(seed): m for seed, m in runs.items()}
                                       for init, runs in summary.runs.items()},
                              "means": {init: summary.mean(init) for init in summary.runs},
                              "gain": summary.gain(),
                              "comparison": comparison.as_dict() if comparison else None}
    Path(summary.output).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(Path(summary.output), json.dumps(record, indent=2) + "\n")
