"""`bertpre compare`: two recipes' saved fine-tunes, paired by seed, with the interval and the verdict, and the
refusals of runs that cannot be paired."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from bertpre.cli import main
from bertpre.core.configs import CompareConfig
from bertpre.core.errors import BertpreError, ConfigError
from bertpre.tasks.comparison import compare_saved_runs
from bertpre.tasks.statistics import paired_bootstrap

LABELS = np.arange(300) % 2


def save_runs(directory: Path, right: float, seeds: range = range(5), labels: np.ndarray = LABELS) -> list[np.ndarray]:
    """Fine-tuning outputs as `finetune --seeds` leaves them: seed-N/eval_predictions.jsonl and eval_results.json."""
    saved = []
    for seed in seeds:
        run = directory / f"seed-{seed}"
        run.mkdir(parents=True)
        correct = np.random.default_rng([seed, int(100 * right)]).random(len(labels)) < right
        predictions = np.where(correct, labels, 1 - labels)
        (run / "eval_predictions.jsonl").write_text("".join(
            json.dumps({"row": i, "label": int(y), "prediction": int(p)}) + "\n"
            for i, (p, y) in enumerate(zip(predictions, labels))))
        (run / "eval_results.json").write_text(json.dumps({"task": "reviews", "best_epoch": 2, "accuracy": 0.0,
                                                           "f1": 0.0}))
        saved.append(predictions)
    return saved


def compare(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["compare", *args])
    return status, out.getvalue(), err.getvalue()


def test_two_recipes_are_compared_seed_by_seed_with_the_interval_and_verdict(tmp_path: Path) -> None:
    domain, general = save_runs(tmp_path / "domain", 0.85), save_runs(tmp_path / "general", 0.70)
    status, shown, _ = compare("--runs", str(tmp_path / "domain"), str(tmp_path / "general"),
                               "--output", str(tmp_path / "cmp.json"))
    assert status == 0
    expected = paired_bootstrap(domain, general, LABELS, "accuracy", seeds=[0, 1, 2, 3, 4])
    assert f"domain − general {expected.describe()}" in shown and expected.verdict().startswith("paid")
    assert "accuracy on 300 evaluation rows" in shown
    saved = json.loads((tmp_path / "cmp.json").read_text())
    assert saved["comparison"]["low"] == pytest.approx(expected.low) and saved["comparison"]["verdict"] == expected.verdict()
    assert saved["runs"]["domain"]["0"]["accuracy"] == pytest.approx((domain[0] == LABELS).mean())
    named = compare_saved_runs(CompareConfig(runs=[str(tmp_path / "general"), str(tmp_path / "domain")],
                                             names=["wiki", "reviews"], metric="f1"))
    assert named.interval().verdict().startswith("hurt") and "wiki − reviews" in named.table()


def test_runs_that_cannot_be_paired_are_refused_in_one_line(tmp_path: Path) -> None:
    save_runs(tmp_path / "a", 0.8)
    save_runs(tmp_path / "late", 0.8, seeds=range(5, 8))
    save_runs(tmp_path / "other-rows", 0.8, labels=LABELS[:200])
    (tmp_path / "empty").mkdir()
    for other, message in (("late", r"share no seed \(seeds \[0, 1, 2, 3, 4\] and \[5, 6, 7\]\)"),
                           ("other-rows", r"scored on other evaluation rows .* compare runs of the same --eval-file"),
                           ("empty", r"empty: neither eval_predictions.jsonl nor seed-N/ runs")):
        with pytest.raises(BertpreError, match=message):
            compare_saved_runs(CompareConfig(runs=[str(tmp_path / "a"), str(tmp_path / other)]))
    status, _, err = compare("--runs", str(tmp_path / "a"), str(tmp_path / "late"))
    assert status == 2 and err.count("\n") == 1
    with pytest.raises(ConfigError, match="runs: give two"):
        CompareConfig(runs=[str(tmp_path / "a")])


def test_long_names_keep_the_table_aligned(tmp_path: Path) -> None:
    save_runs(tmp_path / "a", 0.8), save_runs(tmp_path / "b", 0.7)
    table = compare_saved_runs(CompareConfig(runs=[str(tmp_path / "a"), str(tmp_path / "b")],
                                             names=["random-modernbert", "random-bert"])).table()
    lines = table.splitlines()
    header = next(line for line in lines if "seed 0" in line)
    rows = [line for line in lines if line.split()[0] in ("random-modernbert", "random-bert", "difference")
            and "−" not in line]  # the runs and their differences, not the verdict line
    first_cell_ends = {line.index(line.split()[1]) + len(line.split()[1]) for line in rows}
    assert len(rows) == 3 and first_cell_ends == {header.index("seed 0") + len("seed 0")}  # under its title
