"""`bertpre glue`: fine-tune one model on several GLUE tasks and report them as a leaderboard.

A runner over the finetune stage (like the quickstart over every stage), not a stage of its own.
Every task gets the same recipe; with ``--seeds`` each task is fine-tuned once per seed and reported
as mean ± sd, and with ``--compare-random-init true`` also from random initialisation (five seeds by
default), with the gain of pretraining per task and metric, its 95% interval over seeds and evaluation
rows and the verdict (through ``bertpre/tasks/comparison.py``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

from bertpre.training.accelerator import locked_output, process_state
from bertpre.tasks.comparison import ComparisonSummary, add_run, compare_finetunes, wants_several_runs
from bertpre.core.config import save_config
from bertpre.core.configs import FinetuneConfig, GlueConfig
from bertpre.core.errors import BertpreError
from bertpre.tasks.finetune import check_task, epoch_choice, finetune
from bertpre.core.glue_tasks import GLUE_TASKS
from bertpre.core.io import check_apart_from_inputs, check_writable_output, remove_output, write_text_atomically

RESULTS_FILE = "glue_results.json"


def run_glue(config: GlueConfig, show_progress: bool = True) -> list[dict[str, Any]]:
    """Fine-tune and evaluate ``config.model`` on each of ``config.tasks``; save and return the leaderboard rows.

    A non-empty output without ``overwrite`` and missing or unreadable task files are refused before any training;
    with ``overwrite`` the earlier leaderboard goes at once and each task's earlier results before it runs.
    Under a multi-process launch every process checks, and the main process alone writes and removes.
    """
    with locked_output(config.output, config.cpu):
        return _run_glue(config, show_progress)


def _run_glue(config: GlueConfig, show_progress: bool) -> list[dict[str, Any]]:
    output = Path(config.output)
    processes = process_state(config.cpu)
    check_apart_from_inputs(output, {"--model": [config.model], "--data-dir": [config.data_dir]})
    check_writable_output(output, config.overwrite, kind="GLUE run")
    for name in config.tasks:  # every task's files are read and checked before the first one trains
        _check_task_files(config.data_dir, name)
        check_task(glue_task_config(config, name))
    processes.wait_for_everyone()  # every process has seen the folder as it was before the main one changes it
    if processes.is_main_process:
        _start_output(config, output)
    rows: list[dict[str, Any]] = []
    for name in config.tasks:
        task_config = glue_task_config(config, name)
        if processes.is_main_process:
            _remove_earlier_results(Path(task_config.output))
        processes.wait_for_everyone()  # no process starts the task while its earlier results are being removed
        rows += task_rows(_run_task(task_config, show_progress))
    if processes.is_main_process:
        write_text_atomically(output / RESULTS_FILE, json.dumps(rows, indent=2) + "\n")
    return rows


def _start_output(config: GlueConfig, output: Path) -> None:
    """Create the output with the run's config; an earlier leaderboard goes first, so that a run that fails
    never leaves it beside the new config."""
    output.mkdir(parents=True, exist_ok=True)
    (output / RESULTS_FILE).unlink(missing_ok=True)
    save_config(config, output / "glue.yaml")


def glue_task_config(config: GlueConfig, name: str) -> FinetuneConfig:
    """The fine-tuning recipe of one task: every option of ``config``, the task, its own output, and
    its own run name in the trackers (``RUN_NAME-TASK``; default: the output directory's name)."""
    values = {f.name: copy.deepcopy(getattr(config, f.name)) for f in dataclasses.fields(FinetuneConfig)}
    run_name = f"{config.run_name or Path(config.output).resolve().name}-{name}"
    values.update(task=name, output=str(Path(config.output) / name), run_name=run_name)
    return FinetuneConfig(**values)


def task_rows(summary: ComparisonSummary) -> list[dict[str, Any]]:
    """One leaderboard row per metric of a task: the mean, sd and per-seed scores of each initialisation,
    ``score`` (the mean of the first: pretrained, or ``--init``) and, with both, the ``gain``."""
    inits = list(summary.runs)
    metrics = list(next(iter(summary.runs[inits[0]].values())))
    rows = []
    for metric in metrics:
        runs = {init: {"mean": summary.mean(init, metric), "sd": summary.spread(init, metric),
                       "scores": {str(seed): m[metric] for seed, m in summary.runs[init].items()}}
                for init in inits}
        row: dict[str, Any] = {"task": summary.task, "metric": metric, "score": runs[inits[0]]["mean"], "runs": runs,
                               "train_rows": summary.train_rows, "eval_rows": summary.eval_rows,
                               "seconds": summary.seconds, "epoch_chosen_on": summary.chosen_on}
        if {"pretrained", "random"} <= set(runs):
            row["gain"] = runs["pretrained"]["mean"] - runs["random"]["mean"]
            comparison = summary.interval(metric)
            if comparison is not None:
                row.update(interval=[comparison.low, comparison.high], verdict=comparison.verdict(),
                           differences={str(s): d for s, d in zip(comparison.seeds, comparison.differences)})
        rows.append(row)
    return rows


def glue_table(rows: list[dict[str, Any]]) -> str:
    """The GLUE results as a leaderboard-style table: mean ± sd over seeds when there are several,
    pretrained against random initialisation and the gain when both were run."""
    inits = list(rows[0]["runs"])
    seeds = list(rows[0]["runs"][inits[0]]["scores"])
    several = len(seeds) > 1
    width = 15 if several else 7
    titles = {"pretrained": "score" if inits == ["pretrained"] else "pretrained", "random": "random init"}
    header = f"{'task':<8} {'metric':<22}" + "".join(f" {titles[i]:>{width}}" for i in inits)
    header += f" {'gain':>7} {'95% interval':>17}  verdict" if "gain" in rows[0] else ""
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = "".join(f" {_cell(row['runs'][i], several):>{width}}" for i in inits)
        gain = f" {100 * row['gain']:>+7.2f} {_interval_cell(row):>17}  {_verdict_word(row)}" if "gain" in row else ""
        lines.append(f"{row['task']:<8} {row['metric']:<22}{cells}{gain}")
    if several:
        lines.append(f"mean ± sd over seeds {' '.join(seeds)}")
    if rows[0].get("epoch_chosen_on"):
        lines.append(f"epoch of each run chosen on {rows[0]['epoch_chosen_on']}")
    if "gain" in rows[0]:
        lines.append("gain: pretrained − random init, paired by seed; 95% bootstrap interval over seeds and evaluation "
                     "rows")
    return "\n".join(lines)


def _interval_cell(row: dict[str, Any]) -> str:
    return f"[{100 * row['interval'][0]:+.2f}, {100 * row['interval'][1]:+.2f}]" if "interval" in row else "—"


def _verdict_word(row: dict[str, Any]) -> str:
    return row["verdict"].split(":")[0] if "verdict" in row else "no per-row predictions"


def _cell(run: dict[str, Any], several: bool) -> str:
    return f"{100 * run['mean']:.2f}" + (f" ± {100 * run['sd']:.2f}" if several else "")


def _run_task(config: FinetuneConfig, show_progress: bool) -> ComparisonSummary:
    """One task: a single fine-tune, or one per seed (and initialisation) through the comparison runner."""
    if wants_several_runs(config):
        return compare_finetunes(config, show_progress=show_progress)
    result = finetune(config, show_progress=show_progress)
    summary = ComparisonSummary(config.output, result.task, config.metric or next(iter(result.best_metrics)),
                                train_rows=result.train_rows, eval_rows=result.eval_rows, labels=result.eval_labels,
                                chosen_on=epoch_choice(config))
    add_run(summary, config.init, config.seed, result)
    return summary


def _check_task_files(data_dir: str, name: str) -> None:
    preset = GLUE_TASKS[name]
    for file in ("train.tsv", preset.dev_file):
        path = Path(data_dir) / preset.directory / file
        if not path.is_file():
            raise BertpreError(f"data_dir: {path} not found (task {name}); put the GLUE task folders "
                               "(CoLA/, SST-2/, MRPC/, …) as distributed under --data-dir")


def _remove_earlier_results(task_output: Path) -> None:
    """An earlier run's results of a task (only there with ``overwrite``): stale epochs and seeds must not mix in."""
    remove_output(task_output)
