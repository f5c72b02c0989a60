"""`bertpre glue` uses or refuses every option it offers: a table over GlueConfig's fields, so an option
added later without a decision fails here; then the runs themselves on a tiny model and tiny GLUE data."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import socket
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import accelerate
import numpy as np
import pytest

from bertpre.tasks import comparison, glue
from bertpre.cli import build_parser, main
from bertpre.core.configs import FinetuneConfig, GlueConfig
from bertpre.core.errors import BertpreError, ConfigError
from bertpre.tasks.finetune import FinetuneSummary
from bertpre.tasks.glue import glue_table, run_glue
from bertpre.core.glue_tasks import GLUE_TASKS
from bertpre.export.model_card import card_header
from bertpre.tasks.metrics import compute_metrics

from .tiny_glue import write_tiny_glue, write_tiny_model

# Options that describe one task's data: refused, with this value as the example a user might pass.
REFUSED = {"task": "sst2", "train_file": "train.tsv", "eval_file": "dev.tsv", "text_column": "sentence",
           "text_pair_column": "sentence2", "label_column": "label", "column_names": ["a", "b"],
           "problem": "regression"}
# Options glue hands unchanged to every task's fine-tune (whose own tests show what each does there).
PASSED_THROUGH = {"model": "MODEL", "data_dir": "DATA", "metrics": ["accuracy"], "metric": "accuracy",
                  "max_seq_length": 48, "per_device_batch_size": 8, "gradient_accumulation_steps": 2,
                  "learning_rate": 1e-3, "weight_decay": 0.0, "warmup_fraction": 0.0, "epochs": 1,
                  "max_train_samples": 10, "early_stopping_patience": 1, "seed": 7, "init": "random",
                  "mixed_precision": "no", "unpad_inputs": True, "cpu": True, "license": "mit", "language": ["en"],
                  "report_to": ["none"], "project": "glue-tests", "choose_epoch_on": "last", "selection_fraction": 0.2,
                  "packing": False, "attention": "sdpa", "compile": True}
# Options whose effect on the glue run itself has its own test below.
OWN_TESTS = {"tasks": "test_tasks_choose_and_order_the_tasks",
             "seeds": "test_seeds_run_each_task_per_seed_and_report_mean_and_sd",
             "compare_random_init": "test_compare_random_init_reports_both_and_the_gain_per_task",
             "output": "test_output_holds_one_folder_per_task_and_the_results",
             "overwrite": "test_overwrite_is_honoured_before_any_training",
             "run_name": "test_run_name_names_each_task_and_seed_in_the_trackers"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny-glue")
    card = card_header("fill-mask", ["bert"], [], license="apache-2.0", language=["en"])
    return write_tiny_model(root / "model", card=card), write_tiny_glue(root / "glue")


@pytest.fixture
def fake_finetune(monkeypatch: pytest.MonkeyPatch) -> list[FinetuneConfig]:
    """Replace the fine-tune by a recorder whose scores follow from its seed and init; returns the calls."""
    calls: list[FinetuneConfig] = []

    def record(config: FinetuneConfig, show_progress: bool = True) -> FinetuneSummary:
        calls.append(config)
        Path(config.output).mkdir(parents=True, exist_ok=True)
        names = list(config.metrics) or list(GLUE_TASKS[config.task].metrics)
        bonus = 0.3 if config.init == "pretrained" else 0.0
        metrics = {name: bonus + config.seed / 10 + i / 100 for i, name in enumerate(names)}
        return FinetuneSummary(config.output, config.task, 1, metrics, 24, 24, 1.0)

    monkeypatch.setattr(glue, "finetune", record)
    monkeypatch.setattr(comparison, "finetune", record)
    return calls


def glue_config(tiny: tuple[Path, Path], output: Path, **options: Any) -> GlueConfig:
    model, data = tiny
    return GlueConfig(**{"model": str(model), "data_dir": str(data), "tasks": ["sst2", "cola"], "output": str(output),
                         "epochs": 1, "cpu": True, "learning_rate": 1e-3, **options})


def glue_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["glue", *args])
    return status, out.getvalue(), err.getvalue()


# ---- every option has a decision ------------------------------------------------------------------


def test_every_glue_option_is_either_used_or_refused() -> None:
    options = [f.name for f in dataclasses.fields(GlueConfig)]
    decided = [*REFUSED, *PASSED_THROUGH, *OWN_TESTS]
    assert sorted(decided) == sorted(set(decided)), "an option is in two tables"
    undecided = sorted(set(options) - set(decided))
    assert not undecided, f"glue options with no decision (use them for every task, or refuse them): {undecided}"
    assert set(REFUSED) == set(GlueConfig.refused_options)
    assert all(name in globals() for name in OWN_TESTS.values())


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_single_task_options_are_refused_naming_the_option(name: str) -> None:
    value = REFUSED[name]
    assert value != getattr(FinetuneConfig(), name)
    with pytest.raises(ConfigError, match=f"^{name}: is for `bertpre finetune`"):
        GlueConfig(**{name: value})
    flag = "--" + name.replace("_", "-")
    status, _, err = glue_cli(flag, *(value if isinstance(value, list) else [value]))
    assert status == 2 and err.count("\n") == 1 and f"{name}: is for `bertpre finetune`" in err


def test_refused_options_are_not_offered_in_help() -> None:
    with pytest.raises(SystemExit), contextlib.redirect_stdout(io.StringIO()) as shown:
        build_parser().parse_args(["glue", "--help"])
    offered = shown.getvalue()
    for name in REFUSED:
        assert f"--{name.replace('_', '-')} " not in offered
    assert "--tasks" in offered and "--seeds" in offered and "--compare-random-init" in offered


@pytest.mark.parametrize("name", sorted(PASSED_THROUGH))
def test_recipe_options_reach_every_task(name: str, tiny: tuple[Path, Path], tmp_path: Path,
                                         fake_finetune: list[FinetuneConfig]) -> None:
    value = PASSED_THROUGH[name]
    value = {"MODEL": str(tiny[0]), "DATA": str(tiny[1])}.get(value, value) if isinstance(value, str) else value
    assert value != getattr(FinetuneConfig(), name)
    run_glue(glue_config(tiny, tmp_path / "out", **{name: value}), show_progress=False)
    assert [c.task for c in fake_finetune] == ["sst2", "cola"]
    assert all(getattr(c, name) == value for c in fake_finetune)


# ---- the options with an effect of their own ------------------------------------------------------------


def test_tasks_choose_and_order_the_tasks(tiny: tuple[Path, Path], tmp_path: Path,
                                          fake_finetune: list[FinetuneConfig]) -> None:
    rows = run_glue(glue_config(tiny, tmp_path / "out", tasks=["stsb", "sst2"]), show_progress=False)
    assert [c.task for c in fake_finetune] == ["stsb", "sst2"]
    assert [(r["task"], r["metric"]) for r in rows] == [("stsb", "pearson"), ("stsb", "spearman"), ("sst2", "accuracy")]
    for bad, message in ((["sst3"], r"tasks: unknown \['sst3'\]"), ([], "tasks: name at least one"),
                         (["sst2", "sst2"], r"tasks: \['sst2'\] given twice")):
        with pytest.raises(ConfigError, match=message):
            glue_config(tiny, tmp_path / "x", tasks=bad)


def test_metrics_must_suit_every_task(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="metrics: accuracy does not apply to stsb, a regression task"):
        glue_config(tiny, tmp_path / "x", tasks=["sst2", "stsb"], metrics=["accuracy"])
    with pytest.raises(ConfigError, match="metric: pearson does not apply to sst2, a classification task"):
        glue_config(tiny, tmp_path / "x", tasks=["sst2", "stsb"], metric="pearson")


def test_seeds_run_each_task_per_seed_and_report_mean_and_sd(tiny: tuple[Path, Path], tmp_path: Path,
                                                             fake_finetune: list[FinetuneConfig]) -> None:
    rows = run_glue(glue_config(tiny, tmp_path / "out", seeds=[0, 1, 2]), show_progress=False)
    assert [(c.task, c.seed) for c in fake_finetune] == [(t, s) for t in ("sst2", "cola") for s in (0, 1, 2)]
    assert {c.output for c in fake_finetune} == {str(tmp_path / "out" / t / "pretrained" / f"seed-{s}")
                                                 for t in ("sst2", "cola") for s in (0, 1, 2)}
    sst2 = rows[0]
    scores = [0.3 + s / 10 for s in (0, 1, 2)]  # the recorder's accuracy of each seed
    assert list(sst2["runs"]["pretrained"]["scores"].values()) == pytest.approx(scores)
    assert sst2["score"] == pytest.approx(statistics.fmean(scores))
    assert sst2["runs"]["pretrained"]["sd"] == pytest.approx(statistics.stdev(scores))
    table = glue_table(rows)
    assert f"{100 * statistics.fmean(scores):.2f} ± {100 * statistics.stdev(scores):.2f}" in table
    assert "over seeds 0 1 2" in table


def test_compare_random_init_reports_both_and_the_gain_per_task(tiny: tuple[Path, Path], tmp_path: Path,
                                                                fake_finetune: list[FinetuneConfig]) -> None:
    rows = run_glue(glue_config(tiny, tmp_path / "out", compare_random_init=True, seeds=[0, 1]), show_progress=False)
    assert sorted((c.task, c.init, c.seed) for c in fake_finetune) == sorted(
        (t, i, s) for t in ("sst2", "cola") for i in ("pretrained", "random") for s in (0, 1))
    for row in rows:
        pretrained, random_init = (statistics.fmean(row["runs"][i]["scores"].values()) for i in ("pretrained", "random"))
        assert row["gain"] == pytest.approx(pretrained - random_init)
    assert rows[0]["gain"] == pytest.approx(0.3)
    table = glue_table(rows)
    assert "random init" in table and "gain" in table and "+30.00" in table
    assert json.loads((tmp_path / "out" / "cola" / "comparison.json").read_text())["gain"] == pytest.approx(0.3)


def test_compare_random_init_gives_each_metric_its_interval_and_verdict(tiny: tuple[Path, Path], tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    labels = np.arange(200) % 2

    def scored(config: FinetuneConfig, show_progress: bool = True) -> FinetuneSummary:
        Path(config.output).mkdir(parents=True, exist_ok=True)
        right = np.random.default_rng(config.seed).random(200) < (0.95 if config.init == "pretrained" else 0.6)
        predictions = np.where(right, labels, 1 - labels)
        metrics = compute_metrics(GLUE_TASKS[config.task].metrics, predictions, labels)
        return FinetuneSummary(config.output, config.task, 1, metrics, 24, 200, 1.0, eval_predictions=predictions,
                               eval_labels=labels)

    monkeypatch.setattr(comparison, "finetune", scored)
    rows = run_glue(glue_config(tiny, tmp_path / "out", compare_random_init=True), show_progress=False)
    assert [(r["task"], r["metric"]) for r in rows] == [("sst2", "accuracy"), ("cola", "matthews_correlation"),
                                                       ("cola", "accuracy")]
    for row in rows:
        assert sorted(row["differences"]) == ["0", "1", "2", "3", "4"]  # five seeds by default
        assert 0 < row["interval"][0] < row["gain"] < row["interval"][1] and row["verdict"].startswith("paid: +")
    assert rows[1]["interval"] != rows[2]["interval"]  # each metric its own
    table = glue_table(rows)
    assert "paid" in table and f"[{100 * rows[0]['interval'][0]:+.2f}, {100 * rows[0]['interval'][1]:+.2f}]" in table
    assert "epoch of each run chosen on 10% of the training rows held out" in table


def test_output_holds_one_folder_per_task_and_the_results(tiny: tuple[Path, Path], tmp_path: Path,
                                                          fake_finetune: list[FinetuneConfig]) -> None:
    rows = run_glue(glue_config(tiny, tmp_path / "out"), show_progress=False)
    assert [c.output for c in fake_finetune] == [str(tmp_path / "out" / "sst2"), str(tmp_path / "out" / "cola")]
    assert json.loads((tmp_path / "out" / "glue_results.json").read_text()) == rows
    assert "tasks:\n- sst2\n- cola" in (tmp_path / "out" / "glue.yaml").read_text()


def test_run_name_names_each_task_and_seed_in_the_trackers(tiny: tuple[Path, Path], tmp_path: Path,
                                                          fake_finetune: list[FinetuneConfig]) -> None:
    run_glue(glue_config(tiny, tmp_path / "out"), show_progress=False)
    assert [c.run_name for c in fake_finetune] == ["out-sst2", "out-cola"]
    fake_finetune.clear()
    run_glue(glue_config(tiny, tmp_path / "out2", run_name="base", tasks=["sst2"], seeds=[0, 1]), show_progress=False)
    assert [c.run_name for c in fake_finetune] == ["base-sst2-pretrained-seed-0", "base-sst2-pretrained-seed-1"]


def test_overwrite_is_honoured_before_any_training(tiny: tuple[Path, Path], tmp_path: Path,
                                                   fake_finetune: list[FinetuneConfig]) -> None:
    run_glue(glue_config(tiny, tmp_path / "out"), show_progress=False)
    stale = tmp_path / "out" / "sst2" / "stale.txt"
    stale.write_text("from an earlier run")
    fake_finetune.clear()
    with pytest.raises(BertpreError, match="directory is not empty; .* --overwrite true"):
        run_glue(glue_config(tiny, tmp_path / "out"), show_progress=False)
    assert not fake_finetune and stale.exists()
    run_glue(glue_config(tiny, tmp_path / "out", overwrite=True), show_progress=False)
    assert len(fake_finetune) == 2 and not stale.exists()


def test_overwrite_removes_the_earlier_leaderboard_before_any_training(tiny: tuple[Path, Path], tmp_path: Path,
                                                                      fake_finetune: list[FinetuneConfig],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    output = tmp_path / "out"
    run_glue(glue_config(tiny, output), show_progress=False)
    assert (output / glue.RESULTS_FILE).exists()

    def fail(config: FinetuneConfig, show_progress: bool = True) -> FinetuneSummary:
        raise BertpreError("the fine-tune failed")

    monkeypatch.setattr(glue, "finetune", fail)
    with pytest.raises(BertpreError, match="the fine-tune failed"):
        run_glue(glue_config(tiny, output, overwrite=True, epochs=2), show_progress=False)
    assert "epochs: 2" in (output / "glue.yaml").read_text()
    assert not (output / glue.RESULTS_FILE).exists()  # never the old leaderboard beside the new config


def test_only_the_main_process_writes_or_removes_in_the_output(tiny: tuple[Path, Path], tmp_path: Path,
                                                               fake_finetune: list[FinetuneConfig],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    output = tmp_path / "out"
    run_glue(glue_config(tiny, output), show_progress=False)
    stale = output / "sst2" / "stale.txt"
    stale.write_text("from an earlier run")
    before = {name: (output / name).read_text() for name in ("glue.yaml", glue.RESULTS_FILE)}
    waits: list[str] = []
    other_rank = SimpleNamespace(is_main_process=False, num_processes=2, wait_for_everyone=lambda: waits.append("wait"))
    monkeypatch.setattr(accelerate, "PartialState", lambda cpu=False: other_rank)  # as rank 1 of a launch sees it
    run_glue(glue_config(tiny, output, overwrite=True, epochs=2), show_progress=False)
    assert stale.exists() and waits
    assert {name: (output / name).read_text() for name in before} == before


def test_missing_task_files_are_refused_before_any_training(tiny: tuple[Path, Path], tmp_path: Path,
                                                            fake_finetune: list[FinetuneConfig]) -> None:
    with pytest.raises(BertpreError, match=r"data_dir: .*MRPC/train.tsv not found \(task mrpc\)"):
        run_glue(glue_config(tiny, tmp_path / "out", tasks=["sst2", "mrpc"]), show_progress=False)
    assert not fake_finetune


# ---- real runs -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_glue_command_with_seeds_and_random_init_on_a_tiny_model(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = tiny
    output = tmp_path / "glue"
    status, shown, err = glue_cli("--model", str(model), "--data-dir", str(data), "--tasks", "sst2", "stsb",
                                  "--seeds", "0", "1", "--compare-random-init", "--epochs", "1", "--cpu",
                                  "--learning-rate", "1e-3", "--output", str(output))
    assert status == 0, err
    rows = json.loads((output / "glue_results.json").read_text())
    assert [(r["task"], r["metric"]) for r in rows] == [("sst2", "accuracy"), ("stsb", "pearson"), ("stsb", "spearman")]
    for row in rows:
        for init in ("pretrained", "random"):
            for seed in ("0", "1"):
                measured = json.loads((output / row["task"] / init / f"seed-{seed}" / "eval_results.json").read_text())
                assert row["runs"][init]["scores"][seed] == measured[row["metric"]]
    table = shown[shown.index("\ntask ") + 1:].splitlines()  # fine-tuning prints its progress before
    assert table[0].split() == ["task", "metric", "pretrained", "random", "init", "gain", "95%", "interval", "verdict"]
    assert all("interval" in row and row["verdict"].split(":")[0] in ("paid", "hurt", "no evidence either way")
               for row in rows)
    assert [line.split()[:2] for line in table[2:5]] == [["sst2", "accuracy"], ["stsb", "pearson"], ["stsb", "spearman"]]
    assert f"saved {output}/glue_results.json" in shown


CPU_ONLY = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}


def launch_two(*args: str) -> subprocess.CompletedProcess:
    """`bertpre ARGS` in two CPU processes joined by gloo, as `accelerate launch --multi_gpu` starts them."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(port), "-m", "bertpre", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=CPU_ONLY)


@pytest.mark.slow
def test_several_fine_tunes_in_one_two_process_command(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = tiny
    output = tmp_path / "seeds"
    result = launch_two("finetune", "--model", str(model), "--task", "sst2", "--data-dir", str(data), "--seeds", "0",
                        "1", "--epochs", "1", "--cpu", "--learning-rate", "1e-3", "--output", str(output))
    assert result.returncode == 0, result.stdout + result.stderr[-5000:]
    runs = json.loads((output / "comparison.json").read_text())["runs"]["pretrained"]
    for seed in ("0", "1"):
        measured = json.loads((output / "pretrained" / f"seed-{seed}" / "eval_results.json").read_text())
        assert runs[seed]["accuracy"] == measured["accuracy"]


@pytest.mark.slow
def test_glue_on_two_processes_replaces_an_earlier_run(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = tiny
    output = tmp_path / "glue"
    (output / "sst2").mkdir(parents=True)
    stale = output / "sst2" / "stale.txt"
    stale.write_text("from an earlier run")
    (output / glue.RESULTS_FILE).write_text("[]\n")
    result = launch_two("glue", "--model", str(model), "--data-dir", str(data), "--tasks", "sst2", "cola",
                        "--epochs", "1", "--cpu", "--learning-rate", "1e-3", "--overwrite", "true",
                        "--output", str(output))
    assert result.returncode == 0, result.stdout + result.stderr[-5000:]
    rows = json.loads((output / glue.RESULTS_FILE).read_text())
    assert list(dict.fromkeys(row["task"] for row in rows)) == ["sst2", "cola"] and not stale.exists()
