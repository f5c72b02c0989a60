"""The quickstart: the whole pipeline end to end, offline, at a small size; status and report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import AutoModelForSequenceClassification, pipeline

from bertpre.runners import quickstart as quickstart_module
from bertpre.cli import main
from bertpre.training.preemption import EXIT_PREEMPTED
from bertpre.training.pretrain import PretrainSummary
from bertpre.runners.report import run_status


@pytest.fixture
def quickstart(tiny_quickstart: dict[str, str]) -> dict[str, str]:
    """The session's tiny quickstart run (conftest), read here and by the documentation's examples."""
    return tiny_quickstart


def test_quickstart_leaves_every_artefact(quickstart: dict[str, str]) -> None:
    for key in ("tokenizer", "data", "pretraining run", "model", "classifier", "predictions", "plots", "report"):
        assert Path(quickstart[key]).exists(), key
    assert Path(quickstart["plots"]).stat().st_size > 10_000  # a real PNG, not an empty file
    assert "<img" in Path(quickstart["report"]).read_text()
    fill = pipeline("fill-mask", model=quickstart["model"])
    assert len(fill("the [MASK] module.")) == 5
    classifier = AutoModelForSequenceClassification.from_pretrained(quickstart["classifier"])
    labels = set(classifier.config.id2label.values())
    assert len(labels) == 6 and {"email", "asyncio"} & labels
    predictions = [json.loads(line) for line in Path(quickstart["predictions"]).read_text().splitlines()]
    assert predictions and all(p["label"] in labels for p in predictions)


def test_status_lists_checkpoints_and_resumability(quickstart: dict[str, str]) -> None:
    status = run_status(quickstart["pretraining run"])
    assert [c.name for c in status.checkpoints] == ["step-00000010", "step-00000020"]
    assert status.summary()["resumable"].startswith("yes") and status.last_train["step"] == 20
    result = subprocess.run([sys.executable, "-m", "bertpre", "status", quickstart["pretraining run"]],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "step-00000020" in result.stdout and "eval_mlm_loss" in result.stdout


@pytest.mark.parametrize("stop_signal, requeued, status", [("SIGTERM", False, EXIT_PREEMPTED), ("SIGUSR1", True, 0)])
def test_a_signal_during_pretraining_ends_the_quickstart_with_pretrains_exit_status(
        stop_signal: str, requeued: bool, status: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "run"

    def stopped_pretraining(config, show_progress=True, stop_requests=None) -> PretrainSummary:
        return PretrainSummary(config.output, 3, 1000, 0, f"stop signal ({stop_signal}): checkpoint saved", {}, {},
                               f"{config.output}/checkpoints/step-00000003", 1.0, stop_signal, requeued)

    monkeypatch.setattr(quickstart_module, "train_tokenizer", lambda config, show_progress=True: SimpleNamespace(
        table=lambda: "tokenizer", output=config.output, vocab_size=1000))
    monkeypatch.setattr(quickstart_module, "prepare_pretraining_data", lambda config, show_progress=True:
                        SimpleNamespace(table=lambda: "data", output=config.output))
    monkeypatch.setattr(quickstart_module, "pretrain", stopped_pretraining)
    for stage in ("export_checkpoint", "finetune", "predict", "write_report"):  # not for a half-trained model
        monkeypatch.setattr(quickstart_module, stage, lambda *args, stage=stage, **kwargs: pytest.fail(f"{stage} ran"))
    assert main(["quickstart", "--output", str(output)]) == status
    err = capsys.readouterr().err
    assert f"bertpre: quickstart: pretraining was stopped by {stop_signal}" in err and err.count("\n") == 1


def test_the_quickstart_runs_with_modernbert(tmp_path: Path) -> None:
    from bertpre.core.configs import QuickstartConfig

    results = quickstart_module.run_quickstart(QuickstartConfig(
        output=str(tmp_path / "qs"), architecture="modernbert", vocab_size=3000, pretrain_steps=12, batch_size=16,
        finetune_epochs=1, max_seq_length=64), show_progress=False)
    config = json.loads((Path(results["model"]) / "config.json").read_text())
    assert config["model_type"] == "modernbert" and config["architectures"] == ["ModernBertForMaskedLM"]
    fill = pipeline("fill-mask", model=results["model"])
    assert len(fill("the [MASK] module.")) == 5
    classifier = AutoModelForSequenceClassification.from_pretrained(results["classifier"])
    assert type(classifier).__name__ == "ModernBertForSequenceClassification"
