"""ModernBERT through every stage: pretraining (packed, resume bit-identical after SIGKILL, two processes under
DDP and FSDP), export, status, fine-tuning, prediction and GLUE, loaded by vanilla transformers at the end."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bertpre.core.config import load_config
from bertpre.core.configs import ExportConfig, FinetuneConfig, PredictConfig
from bertpre.export.export import export_checkpoint
from bertpre.tasks.finetune import finetune
from bertpre.tasks.predict import predict

from .conftest import prepare_wiki64, shared_path
from .test_fsdp import losses, pretrain_command
from .test_fsdp import run as run_cpu_only
from .test_pretrain import final_weights, run, wait_for

RECIPE = ["--model", "modernbert-tiny", "--objective", "mlm", "--mlm-probability", "0.3", "--packing", "true",
          "--global-batch-size", "16", "--per-device-batch-size", "8", "--learning-rate", "2e-3", "--warmup-steps", "4",
          "--log-every", "4", "--eval-every", "12", "--checkpoint-every", "8", "--num-workers", "1", "--report-to", "none"]
MODERNBERT = [*RECIPE, "--cpu", "true"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_wiki64(tmp_path_factory.mktemp("modernbert") / "wiki64", eval_fraction=0.2, random_next_prob=0.0)


@pytest.fixture(scope="module")
def uninterrupted(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("modernbert-run") / "run"
    run([sys.executable, "-m", "bertpre", "pretrain", "--data", str(data), "--output", str(output), "--max-steps", "24",
         *MODERNBERT])
    return output


def test_a_killed_modernbert_run_resumes_bit_identical(data: Path, uninterrupted: Path, tmp_path: Path) -> None:
    output = tmp_path / "killed"
    args = [sys.executable, "-m", "bertpre", "pretrain", "--data", str(data), "--output", str(output),
            "--max-steps", "24", *MODERNBERT]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(output / "checkpoints" / "step-00000008", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert "resumed from" in (lambda r: r.stdout + r.stderr)(run(args))
    expected, got = final_weights(uninterrupted), final_weights(output)
    assert expected.keys() == got.keys() and "model.layers.0.attn.Wqkv.weight" in expected
    assert "decoder.weight" not in expected  # the tied decoder is stored once, under the embeddings
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_status_and_export_of_a_modernbert_run(uninterrupted: Path, tmp_path: Path) -> None:
    status = subprocess.run([sys.executable, "-m", "bertpre", "status", str(uninterrupted)], capture_output=True,
                            text=True, timeout=120)
    assert status.returncode == 0 and "step-00000024" in status.stdout, status.stderr
    exported = export_checkpoint(ExportConfig(checkpoint=str(uninterrupted), output=str(tmp_path / "hf")))
    import transformers

    model, info = transformers.AutoModelForMaskedLM.from_pretrained(exported, output_loading_info=True)
    assert type(model).__name__ == "ModernBertForMaskedLM"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    card = (exported / "README.md").read_text()
    assert "# ModernBERT pretrained with bertpre" in card and "- modernbert" in card
    fill = transformers.pipeline("fill-mask", model=str(exported))
    assert len(fill("the history of [MASK].")) == 5


@pytest.mark.slow
def test_modernbert_under_ddp_and_fsdp_trains_as_one_process_does(data: Path, uninterrupted: Path,
                                                                 tmp_path: Path) -> None:
    one = losses(uninterrupted)
    for mode in ("ddp", "fsdp"):  # test_fsdp's launch, with ModernBERT's recipe after its options (the last wins)
        run_cpu_only(pretrain_command(mode, data, tmp_path / mode, "--max-steps", "24", *RECIPE))
        two = losses(tmp_path / mode)
        assert two.keys() == one.keys()
        for step in one:  # the gradient reductions sum in another order
            assert two[step] == pytest.approx(one[step], abs=2e-4), (mode, step)


def test_modernbert_fine_tunes_and_predicts_as_vanilla_transformers_does(uninterrupted: Path, tmp_path: Path) -> None:
    import numpy as np
    import transformers

    exported = export_checkpoint(ExportConfig(checkpoint=str(uninterrupted), output=str(tmp_path / "hf")))
    rows = shared_path("ci/sst2_dev_first200.tsv")
    settings = {"model": str(exported), "task": "sst2", "train_file": str(rows), "eval_file": str(rows),
                "epochs": "1", "learning_rate": "1e-3", "report_to": "none", "cpu": "true",
                "output": str(tmp_path / "sst2")}
    summary = finetune(load_config(FinetuneConfig, None, settings), show_progress=False)
    assert summary.train_rows + summary.selection_rows == 200 and summary.selection_rows == 20
    assert 0 <= summary.best_metrics["accuracy"] <= 1
    classifier = tmp_path / "sst2" / "model"
    config = json.loads((classifier / "config.json").read_text())
    assert config["architectures"] == ["ModernBertForSequenceClassification"]
    metrics = predict(PredictConfig(model=str(classifier), input=str(rows), output=str(tmp_path / "p.jsonl"),
                                    text_column="sentence", label_column="label", cpu=True))
    assert metrics["rows"] == 200
    ours = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(classifier).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(classifier)
    from bertpre.readers.tables import read_table

    sentences = [r["sentence"] for r in read_table(str(rows))[:32]]
    with torch.no_grad():
        logits = hf(**tokenizer(sentences, padding=True, return_tensors="pt")).logits
    assert [o["label_id"] for o in ours[:32]] == logits.argmax(-1).tolist()
    np.testing.assert_allclose([o["score"] for o in ours[:32]], logits.softmax(-1).max(-1).values.numpy(), atol=1e-4)
