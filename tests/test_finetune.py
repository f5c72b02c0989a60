"""Export of pretraining runs, fine-tuning, prediction and GLUE: end to end on real GLUE slices."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from bertpre.core.config import load_config
from bertpre.core.configs import ExportConfig, FinetuneConfig, GlueConfig, PredictConfig, PretrainConfig
from bertpre.core.errors import BertpreError
from bertpre.export.export import export_checkpoint
from bertpre.tasks.finetune import finetune
from bertpre.tasks.glue import glue_table, run_glue
from bertpre.tasks.metrics import compute_metrics
from bertpre.tasks.predict import predict
from bertpre.readers.tables import read_table
from bertpre.model.attention import TokenLayout
from bertpre.training.pretrain import pretrain

from .conftest import REPO, prepare_wiki64, shared_path


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ft")
    prepare_wiki64(root / "data", eval_fraction=0.2)
    config = load_config(PretrainConfig, None, {
        "data": str(root / "data"), "output": str(root / "run"), "model": str(REPO / "configs/model/tiny.yaml"),
        "global_batch_size": "16", "per_device_batch_size": "16", "max_steps": "30", "learning_rate": "2e-3",
        "warmup_steps": "3", "checkpoint_every": "10", "eval_every": "0", "num_workers": "0"})
    pretrain(config, show_progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def exported(pretrained_run: Path) -> Path:
    output = pretrained_run.parent / "export"
    export_checkpoint(ExportConfig(checkpoint=str(pretrained_run), output=str(output)))
    return output


def finetune_config(model: Path, output: Path, **overrides: object) -> FinetuneConfig:
    options = {"model": str(model), "output": str(output), "epochs": 2, "per_device_batch_size": 16,
               "learning_rate": 1e-3, **overrides}
    return FinetuneConfig(**options)


# ---- export ------------------------------------------------------------------------------------


def test_export_of_latest_and_of_a_given_step(pretrained_run: Path, exported: Path, tmp_path: Path) -> None:
    card = (exported / "README.md").read_text()
    assert "2 layers, hidden 128" in card and "steps: 30" in card and "tokens seen:" in card
    assert "| mlm_loss |" in card and "bertpre" in card
    export_checkpoint(ExportConfig(checkpoint=str(pretrained_run), step="20", output=str(tmp_path / "step20")))
    assert "steps: 20" in (tmp_path / "step20" / "README.md").read_text()
    with pytest.raises(BertpreError, match=r"no checkpoint at step 25 \(available: 10, 20, 30\)"):
        export_checkpoint(ExportConfig(checkpoint=str(pretrained_run), step="25", output=str(tmp_path / "x")))


def test_export_card_has_the_hub_metadata_header(pretrained_run: Path, exported: Path, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    from bertpre.training.checkpoint import read_trainer_state, resolve_checkpoint

    card = ModelCard.load(exported / "README.md")
    final = read_trainer_state(resolve_checkpoint(pretrained_run)).last_eval
    assert (card.data.library_name, card.data.pipeline_tag) == ("transformers", "fill-mask")
    assert card.data.license is None and card.data.language is None  # not given: left out
    accuracy = next(r for r in card.data.eval_results if r.metric_type == "accuracy")
    assert (accuracy.task_type, accuracy.metric_value) == ("fill-mask", final["eval_mlm_accuracy"])
    export_checkpoint(ExportConfig(checkpoint=str(pretrained_run), output=str(tmp_path / "licensed"),
                                   license="apache-2.0", language=["en"]))
    card = ModelCard.load(tmp_path / "licensed" / "README.md")
    assert (card.data.license, card.data.language) == ("apache-2.0", ["en"])
    assert "--license apache-2.0 --language en" in card.text


def test_export_refuses_other_vocabularies_and_non_empty_directories(pretrained_run: Path, exported: Path,
                                                                     tmp_path: Path) -> None:
    with pytest.raises(BertpreError, match="directory is not empty"):
        export_checkpoint(ExportConfig(checkpoint=str(pretrained_run), output=str(exported)))
    small = tmp_path / "small-tokenizer"
    small.mkdir()
    (small / "vocab.txt").write_text("\n".join(f"t{i}" for i in range(100)) + "\n")
    with pytest.raises(BertpreError, match="tokenizer has 100 tokens but the model's vocab_size is 30522"):
        export_checkpoint(ExportConfig(checkpoint=str(pretrained_run), output=str(tmp_path / "out"),
                                       tokenizer=str(small)))
    assert not (tmp_path / "out").exists()


def test_export_command_line(pretrained_run: Path, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "bertpre", "export", "--checkpoint", str(pretrained_run),
                             "--output", str(tmp_path / "cli")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    fill = pipeline("fill-mask", model=str(tmp_path / "cli"))
    assert len(fill("the history of [MASK].")) == 5


# ---- fine-tuning ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sst2_classifier(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("sst2") / "run"
    rows = shared_path("ci/sst2_dev_first200.tsv")
    summary = finetune(finetune_config(exported, output, task="sst2", train_file=str(rows), eval_file=str(rows)),
                       show_progress=False)
    assert summary.train_rows == 180 and summary.selection_rows == 20 and summary.eval_rows == 200
    return output


def test_sst2_fine_tunes_and_vanilla_transformers_predicts_the_same(sst2_classifier: Path, tmp_path: Path) -> None:
    model_dir = sst2_classifier / "model"
    results = json.loads((sst2_classifier / "eval_results.json").read_text())
    assert results["task"] == "sst2" and 0.0 <= results["accuracy"] <= 1.0
    assert [json.loads(line)["epoch"] for line in (sst2_classifier / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    hf = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    assert hf.config.id2label == {0: "negative", 1: "positive"}
    assert hf.config.label2id == {"negative": 0, "positive": 1}
    rows = read_table(str(shared_path("ci/sst2_dev_first200.tsv")))[:40]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        logits = hf(**tokenizer([r["sentence"] for r in rows], padding=True, return_tensors="pt")).logits
    metrics = predict(PredictConfig(model=str(model_dir), input=str(shared_path("ci/sst2_dev_first200.tsv")),
                                    output=str(tmp_path / "predictions.jsonl"), text_column="sentence",
                                    label_column="label"))
    ours = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert metrics["rows"] == 200 and "accuracy" in metrics and "f1" in metrics
    assert [o["label_id"] for o in ours[:40]] == logits.argmax(-1).tolist()
    np.testing.assert_allclose([o["score"] for o in ours[:40]], logits.softmax(-1).max(-1).values.numpy(), atol=1e-5)
    predict(PredictConfig(model=str(model_dir), input=str(shared_path("ci/sst2_dev_first200.tsv")), packing=False,
                          output=str(tmp_path / "padded.jsonl"), text_column="sentence"))
    padded = [json.loads(line) for line in (tmp_path / "padded.jsonl").read_text().splitlines()]
    assert [o["label_id"] for o in padded] == [o["label_id"] for o in ours]  # packed rows predict as padded ones
    np.testing.assert_allclose([o["score"] for o in padded], [o["score"] for o in ours], atol=1e-5)
    classify = pipeline("text-classification", model=str(model_dir))
    assert [p["label"] for p in classify([r["sentence"] for r in rows[:5]])] == [o["label"] for o in ours[:5]]


def test_mrpc_sentence_pairs_fine_tune_unpadded(exported: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    unpadded_batches = []
    unpad = TokenLayout.unpad
    monkeypatch.setattr(TokenLayout, "unpad", lambda self, x: unpadded_batches.append(1) or unpad(self, x))
    rows = shared_path("ci/mrpc_dev_first100.tsv")
    summary = finetune(finetune_config(exported, tmp_path / "mrpc", task="mrpc", train_file=str(rows),
                                       eval_file=str(rows), epochs=1, unpad_inputs=True), show_progress=False)
    assert unpadded_batches  # the switch reached the model
    assert set(summary.best_metrics) == {"accuracy", "f1"}
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "mrpc" / "model")
    assert hf.config.id2label == {0: "not_equivalent", 1: "equivalent"}


def test_regression_head_and_early_stopping(exported: Path, tmp_path: Path) -> None:
    rows = [{"a": f"sentence number {i}", "b": f"another one {i % 7}", "score": str(i % 5)} for i in range(64)]
    data = tmp_path / "scores.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = finetune(finetune_config(exported, tmp_path / "reg", train_file=str(data), eval_file=str(data),
                                       text_column="a", text_pair_column="b", label_column="score",
                                       problem="regression", epochs=6, early_stopping_patience=1, learning_rate=1e-30),
                       show_progress=False)
    assert set(summary.best_metrics) == {"pearson", "spearman"}
    assert len(summary.history) == 2  # updates below float precision: no improvement after epoch 1, patience 1
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "reg" / "model").config.num_labels == 1


def test_glue_runs_tasks_and_prints_a_table(exported: Path, tmp_path: Path) -> None:
    glue = tmp_path / "glue"
    for task, source in (("SST-2", "ci/sst2_dev_first200.tsv"), ("CoLA", "ci/cola_dev_first200.tsv")):
        (glue / task).mkdir(parents=True)
        for split in ("train.tsv", "dev.tsv"):
            shutil.copy(shared_path(source), glue / task / split)
    config = GlueConfig(model=str(exported), tasks=["sst2", "cola"], data_dir=str(glue), output=str(tmp_path / "results"),
                        epochs=1, per_device_batch_size=16, learning_rate=1e-3)
    rows = run_glue(config, show_progress=False)
    assert [(r["task"], r["metric"]) for r in rows] == [("sst2", "accuracy"), ("cola", "matthews_correlation"),
                                                       ("cola", "accuracy")]
    assert json.loads((tmp_path / "results" / "glue_results.json").read_text()) == rows
    table = glue_table(rows)
    assert "matthews_correlation" in table and table.count("\n") == 5
    assert table.splitlines()[-1] == "epoch of each run chosen on 10% of the training rows held out"


# ---- reading GLUE files and bad input -------------------------------------------------------------


def test_reads_official_glue_tsvs_with_quotes_and_bom() -> None:
    mrpc = read_table(str(shared_path("glue/MRPC/dev.tsv")))
    assert len(mrpc) == 408 and list(mrpc[0])[0] == "Quality"
    assert any('"' in row["#2 String"] for row in mrpc)  # unescaped quotes stay text
    cola = read_table(str(shared_path("ci/cola_dev_first200.tsv")), ["source", "label", "original_label", "sentence"])
    assert len(cola) == 200 and cola[0]["sentence"].startswith("The sailors")


def test_bad_inputs_are_one_line_errors(exported: Path, tmp_path: Path) -> None:
    sst2 = shared_path("ci/sst2_dev_first200.tsv")
    with pytest.raises(BertpreError, match=r"no text column 'review' \(columns: sentence, label\)"):
        finetune(finetune_config(exported, tmp_path / "a", train_file=str(sst2), eval_file=str(sst2),
                                 text_column="review"), show_progress=False)
    unseen = tmp_path / "unseen.tsv"
    unseen.write_text("sentence\tlabel\ngood film\t2\n")
    with pytest.raises(BertpreError, match=r"labels \['2'\] never occur in the training data"):
        finetune(finetune_config(exported, tmp_path / "b", task="sst2", train_file=str(sst2), eval_file=str(unseen)),
                 show_progress=False)
    empty = tmp_path / "empty.tsv"
    empty.write_text("sentence\tlabel\n")
    with pytest.raises(BertpreError, match="empty.tsv: the split is empty"):
        finetune(finetune_config(exported, tmp_path / "c", task="sst2", train_file=str(empty), eval_file=str(sst2)),
                 show_progress=False)
    words = tmp_path / "words.tsv"
    words.write_text("sentence\tlabel\nfine\thigh\n")
    with pytest.raises(BertpreError, match=r"words.tsv: line 2 column 'label' is 'high', not a number"):
        finetune(finetune_config(exported, tmp_path / "d", train_file=str(words), eval_file=str(words),
                                 text_column="sentence", problem="regression"), show_progress=False)
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(BertpreError, match="model_type is 'gpt2'; bertpre loads bert and modernbert models only"):
        finetune(finetune_config(tmp_path / "gpt2", tmp_path / "e", task="sst2", train_file=str(sst2),
                                 eval_file=str(sst2)), show_progress=False)
    for directory in "abcde":
        assert not (tmp_path / directory / "model").exists()


def test_metrics_match_their_definitions() -> None:
    labels = np.array([1, 1, 0, 0, 1, 0])
    predictions = np.array([1, 0, 0, 1, 1, 0])
    metrics = compute_metrics(("accuracy", "f1", "matthews_correlation"), predictions, labels)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["f1"] == pytest.approx(2 / 3)
    assert metrics["matthews_correlation"] == pytest.approx(1 / 3)
    scores = compute_metrics(("pearson", "spearman"), np.array([1.0, 2.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0, 8.0]))
    assert scores["spearman"] == pytest.approx(0.9486833, abs=1e-6)
    assert scores["pearson"] == pytest.approx(np.corrcoef([1, 2, 2, 4], [1, 3, 2, 8])[0, 1])
