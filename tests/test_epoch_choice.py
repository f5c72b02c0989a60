"""The epoch a fine-tune keeps is chosen on rows held out from its training rows, never on the evaluation set;
the evaluation set scores that epoch once, and every row's prediction is kept for comparisons."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from bertpre.core.configs import FinetuneConfig
from bertpre.core.errors import BertpreError
from bertpre.readers.tables import LabelledData
from bertpre.tasks.comparison import comparison_seeds
from bertpre.tasks.finetune import _hold_out_selection, finetune
from bertpre.tasks.metrics import compute_metrics

from .conftest import shared_path
from .tiny_glue import write_tiny_model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("epoch-choice") / "model")


@pytest.fixture(scope="module")
def sst2_rows(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """200 SST-2 dev rows to train on; as evaluation set the same rows, and a copy with every label flipped."""
    rows = shared_path("ci/sst2_dev_first200.tsv")
    flipped = tmp_path_factory.mktemp("flipped") / "flipped.tsv"
    header, *lines = rows.read_text().splitlines()
    flipped.write_text("\n".join([header] + [f"{line.rsplit(chr(9), 1)[0]}\t{1 - int(line.rsplit(chr(9), 1)[1])}"
                                             for line in lines]) + "\n")
    return rows, flipped


def config(model: Path, train: Path, evaluation: Path, output: Path, **options: object) -> FinetuneConfig:
    return FinetuneConfig(**{"model": str(model), "train_file": str(train), "eval_file": str(evaluation),
                             "text_column": "sentence", "output": str(output), "epochs": 3, "learning_rate": 3e-3,
                             "per_device_batch_size": 16, "cpu": True, "report_to": ["none"], **options})


def test_the_evaluation_set_never_chooses_the_epoch(model: Path, sst2_rows: tuple[Path, Path], tmp_path: Path) -> None:
    rows, flipped = sst2_rows
    honest = finetune(config(model, rows, rows, tmp_path / "a"), show_progress=False)
    inverted = finetune(config(model, rows, flipped, tmp_path / "b"), show_progress=False)
    # an evaluation set with every label flipped scores the same epoch, chosen on the same held-out rows
    assert honest.best_epoch == inverted.best_epoch and honest.history == inverted.history
    assert honest.best_metrics["accuracy"] == pytest.approx(1 - inverted.best_metrics["accuracy"])
    weights = [load_file(str(tmp_path / run / "model" / "model.safetensors")) for run in ("a", "b")]
    assert all((weights[0][k] == weights[1][k]).all() for k in weights[0])
    assert honest.train_rows == 180 and honest.selection_rows == 20 and honest.eval_rows == 200
    assert all(set(line) == {"epoch", "step", "selection_accuracy", "padding_fraction"} for line in honest.history)
    # the old way, explicitly asked for: the flipped set picks another epoch than the honest one
    on_eval = [finetune(config(model, rows, evaluation, tmp_path / f"e{i}", choose_epoch_on="eval"),
                        show_progress=False) for i, evaluation in enumerate((rows, flipped))]
    assert on_eval[0].best_epoch != on_eval[1].best_epoch
    assert "the evaluation set itself (optimistic" in on_eval[0].table()


def test_the_kept_epochs_predictions_and_what_chose_it_are_saved(model: Path, sst2_rows: tuple[Path, Path],
                                                                 tmp_path: Path) -> None:
    rows, _ = sst2_rows
    summary = finetune(config(model, rows, rows, tmp_path / "run", epochs=2), show_progress=False)
    saved = [json.loads(line) for line in (tmp_path / "run" / "eval_predictions.jsonl").read_text().splitlines()]
    assert [r["row"] for r in saved] == list(range(200))
    predictions, labels = np.array([r["prediction"] for r in saved]), np.array([r["label"] for r in saved])
    results = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    assert results["accuracy"] == pytest.approx(compute_metrics(["accuracy"], predictions, labels)["accuracy"])
    assert results["epoch_chosen_on"] == "20 rows held out from the training rows (seed 0)"
    assert np.array_equal(summary.eval_predictions, predictions) and np.array_equal(summary.eval_labels, labels)
    assert "epoch kept       " in summary.table() and "20 held out to choose the epoch" in summary.table()
    assert "chosen on 20 rows held out" in (tmp_path / "run" / "model" / "README.md").read_text()
    last = finetune(config(model, rows, rows, tmp_path / "last", epochs=2, choose_epoch_on="last"), show_progress=False)
    assert last.best_epoch == 2 and last.train_rows == 200 and last.selection_rows == 0


def labelled(labels: list[str]) -> LabelledData:
    return LabelledData([f"row {i}" for i in range(len(labels))], None, labels)


def test_the_selection_slice_is_seeded_and_stratified_by_label() -> None:
    data = labelled(["a"] * 90 + ["b"] * 10 + ["c"])
    train, selection = _hold_out_selection(data, FinetuneConfig(seed=3), False, "train.tsv")
    assert sorted(selection.labels) == ["a"] * 9 + ["b"]  # 10% of each label; a label of one row stays in training
    assert sorted(train.texts + selection.texts) == sorted(data.texts) and not set(train.texts) & set(selection.texts)
    again = _hold_out_selection(data, FinetuneConfig(seed=3), False, "train.tsv")[1]
    other = _hold_out_selection(data, FinetuneConfig(seed=4), False, "train.tsv")[1]
    assert again.texts == selection.texts and other.texts != selection.texts
    scores = LabelledData([f"row {i}" for i in range(50)], None, [i / 10 for i in range(50)])
    assert len(_hold_out_selection(scores, FinetuneConfig(selection_fraction=0.2), True, "s.jsonl")[1].texts) == 10
    tiny = _hold_out_selection(labelled(["a", "b"] * 4), FinetuneConfig(selection_fraction=0.05), False, "t.tsv")[1]
    assert sorted(tiny.labels) == ["a", "b"]  # a row of each label, however small the share
    with pytest.raises(BertpreError, match=r"selection_fraction: 0.1 of the 3 training rows of tiny.tsv holds out no "
                                           r"row.*--choose-epoch-on last"):
        _hold_out_selection(labelled(["a", "b", "c"]), FinetuneConfig(), False, "tiny.tsv")


def test_a_comparison_runs_five_seeds_unless_told_otherwise() -> None:
    assert comparison_seeds(FinetuneConfig(compare_random_init=True)) == [0, 1, 2, 3, 4]
    assert comparison_seeds(FinetuneConfig(compare_random_init=True, seed=10)) == [10, 11, 12, 13, 14]
    assert comparison_seeds(FinetuneConfig(compare_random_init=True, seeds=[7, 8])) == [7, 8]
    assert comparison_seeds(FinetuneConfig(seed=3)) == [3]
