"""`--report-to`: metrics reach every tracker named (TensorBoard and trackio, read back from their own
files), `none` writes only metrics.jsonl, and a wrong or missing tracker is one line before training."""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bertpre.training.accelerator import TRACKER_PACKAGES, resolve_trackers
from bertpre.cli import main
from bertpre.core.config import load_config
from bertpre.core.configs import TRACKERS, FinetuneConfig, LoggingOptions, PretrainConfig
from bertpre.core.errors import ConfigError
from bertpre.training.pretrain import pretrain

from .conftest import REPO, prepare_wiki64

TINY = ["--model", str(REPO / "configs" / "model" / "tiny.yaml"), "--global-batch-size", "16",
        "--per-device-batch-size", "8", "--learning-rate", "2e-3", "--warmup-steps", "2", "--log-every", "2",
        "--eval-every", "4", "--eval-batches", "2", "--max-steps", "6", "--num-workers", "0"]
needs_trackio = pytest.mark.skipif(importlib.util.find_spec("trackio") is None,
                                   reason="trackio not installed (pip install -e '.[test]')")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_wiki64(tmp_path_factory.mktemp("trackers") / "wiki64", eval_fraction=0.2)


def bertpre(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "bertpre", *args], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **env})
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def trackio_logs(store: Path, project: str, run: str) -> tuple[list[tuple[int, dict]], dict]:
    """The (step, metrics) rows and the config trackio stored for a run, read from its SQLite file."""
    with sqlite3.connect(store / f"{project}.db") as db:
        rows = [(step, json.loads(metrics)) for step, metrics in
                db.execute("SELECT step, metrics FROM metrics WHERE run_name = ? ORDER BY id", (run,))]
        (config,) = db.execute("SELECT config FROM configs WHERE run_name = ?", (run,)).fetchone()
    return rows, json.loads(config)


def event_files(directory: Path) -> list[Path]:
    return list(directory.rglob("events.out.tfevents*"))


# ---- options ----------------------------------------------------------------------------------------


def test_every_tracker_name_we_accept_is_one_accelerate_knows() -> None:
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    assert set(TRACKERS) <= set(LOGGER_TYPE_TO_CLASS)
    assert set(TRACKERS) <= set(TRACKER_PACKAGES)


def test_report_to_accepts_lists_commas_all_and_none_and_names_typos() -> None:
    assert load_config(PretrainConfig, None, {"report_to": ["tensorboard", "trackio"], "max_steps": 1}
                       ).logging.report_to == ["tensorboard", "trackio"]
    assert FinetuneConfig(report_to=["tensorboard,WandB"]).report_to == ["tensorboard", "wandb"]
    assert LoggingOptions().report_to == ["tensorboard"] == FinetuneConfig().report_to
    with pytest.raises(ConfigError, match=r"report_to: unknown tracker 'wandbb'; did you mean wandb\?"):
        load_config(PretrainConfig, None, {"report_to": ["wandbb"], "max_steps": 1})
    with pytest.raises(ConfigError, match="`none` cannot be combined"):
        FinetuneConfig(report_to=["none", "tensorboard"])
    assert resolve_trackers(["none"]) == []
    assert "tensorboard" in resolve_trackers(["all"])


def test_a_tracker_that_is_not_installed_is_one_line_naming_the_package(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("bertpre.training.accelerator.installed_trackers", lambda: ["tensorboard"])
    with pytest.raises(ConfigError, match=r"report_to: comet_ml is not installed; `pip install comet-ml`"):
        resolve_trackers(["tensorboard", "comet_ml"])
    status = main(["pretrain", "--data", str(data), "--output", str(tmp_path / "run"), *TINY, "--cpu",
                   "--report-to", "tensorboard", "wandb"])
    error = capsys.readouterr().err
    assert status == 2 and error.count("\n") == 1
    assert "report_to: wandb is not installed; `pip install wandb`" in error
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # refused before training


# ---- runs ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_to_none_writes_metrics_jsonl_and_no_event_files(data: Path, tmp_path: Path) -> None:
    output = tmp_path / "run"
    config = load_config(PretrainConfig, None, {"data": str(data), "output": str(output), "report_to": "none",
                                                **{TINY[i][2:].replace("-", "_"): TINY[i + 1]
                                                   for i in range(0, len(TINY), 2)}})
    pretrain(config, show_progress=False)
    steps = [record["step"] for record in jsonl(output / "metrics.jsonl") if "mlm_loss" in record]
    assert steps == [2, 4, 6]
    assert not event_files(output) and not (output / "tensorboard").exists()


@pytest.mark.slow
@needs_trackio
def test_pretrain_and_finetune_report_to_tensorboard_and_trackio(data: Path, tmp_path: Path) -> None:
    store = tmp_path / "trackio"
    env = {"TRACKIO_DIR": str(store)}
    run = tmp_path / "run"
    bertpre("pretrain", "--data", str(data), "--output", str(run), *TINY, "--cpu",
            "--report-to", "tensorboard", "trackio", "--project", "bertpre-test", env=env)

    logged, config = trackio_logs(store, "bertpre-test", "run")  # the run is named after its output directory
    jsonl_losses = {r["step"]: r["mlm_loss"] for r in jsonl(run / "metrics.jsonl") if "mlm_loss" in r}
    trackio_losses = {step: m["train/mlm_loss"] for step, m in logged if "train/mlm_loss" in m}
    assert trackio_losses == pytest.approx(jsonl_losses) and sorted(trackio_losses) == [2, 4, 6]
    assert {step for step, m in logged if "eval/mlm_accuracy" in m} == {4, 6}
    assert config["optimization.learning_rate"] == 2e-3 and config["runtime.mixed_precision"] == "no"
    assert event_files(run / "tensorboard")

    model = tmp_path / "model"
    bertpre("export", "--checkpoint", str(run), "--output", str(model), env=env)
    rows = tmp_path / "rows.csv"
    rows.write_text("text,label\n" + "".join(f"{'a good film' if i % 2 else 'a dull film'},{i % 2}\n"
                                             for i in range(32)))
    classifier = tmp_path / "classifier"
    bertpre("finetune", "--model", str(model), "--train-file", str(rows), "--eval-file", str(rows), "--epochs", "2",
            "--per-device-batch-size", "16", "--output", str(classifier), "--cpu",
            "--report-to", "tensorboard", "trackio", "--project", "bertpre-test", "--run-name", "ft", env=env)
    logged, config = trackio_logs(store, "bertpre-test", "ft")
    per_epoch = [m["selection/accuracy"] for _, m in logged if "selection/accuracy" in m]  # what chose the epoch
    assert per_epoch == pytest.approx([r["selection_accuracy"] for r in jsonl(classifier / "metrics.jsonl")])
    assert len(per_epoch) == 2 and config["learning_rate"] == 5e-5
    scored = [m["eval/accuracy"] for _, m in logged if "eval/accuracy" in m]  # the kept epoch, scored once
    assert scored == pytest.approx([json.loads((classifier / "eval_results.json").read_text())["accuracy"]])
    assert event_files(classifier / "tensorboard")
