"""Model cards open with the Hugging Face metadata header, read back by huggingface_hub's own parser;
the classifier's model-index carries the metrics of its eval_results.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from transformers import BertConfig

from bertpre.core.configs import FinetuneConfig
from bertpre.tasks.finetune import finetune
from bertpre.export.model_card import card_header, hub_dataset_id, hub_model_id, pretraining_model_card

from .tiny_glue import write_tiny_glue, write_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny-card")
    card = card_header("fill-mask", ["bert"], [], license="apache-2.0", language=["en"])
    return write_tiny_model(root / "model", card=card), write_tiny_glue(root / "glue")


def fine_tune(model: Path, output: Path, **options: object) -> Path:
    finetune(FinetuneConfig(model=str(model), output=str(output), epochs=1, cpu=True, learning_rate=1e-3,
                            **options), show_progress=False)
    return output


def load_card(model_dir: Path) -> ModelCard:
    card = ModelCard.load(model_dir / "README.md")  # a local file: parsed offline, metadata errors raise
    assert card.data.library_name == "transformers"
    return card


def metric_values(card: ModelCard) -> dict[str, float]:
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])  # raises on malformed entries
    return {r.metric_type: r.metric_value for r in results}


@pytest.mark.parametrize("task, hub_metrics", [("sst2", {"accuracy": "accuracy"}),
                                               ("stsb", {"pearsonr": "pearson", "spearmanr": "spearman"})])
def test_glue_classifier_card_carries_the_metrics_of_its_run(task: str, hub_metrics: dict[str, str],
                                                              tiny: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = tiny
    run = fine_tune(model, tmp_path / task, task=task, data_dir=str(data))
    card = load_card(run / "model")
    measured = json.loads((run / "eval_results.json").read_text())
    assert card.data.pipeline_tag == "text-classification"
    assert metric_values(card) == {hub: measured[ours] for hub, ours in hub_metrics.items()}
    result = card.data.eval_results[0]
    assert (result.task_type, result.dataset_type, result.dataset_config, result.dataset_split) == (
        "text-classification", "nyu-mll/glue", task, "validation")
    assert card.data.datasets == ["nyu-mll/glue"] and "glue" in card.data.tags
    assert (card.data.license, card.data.language) == ("apache-2.0", ["en"])  # the base model card's
    assert card.data.base_model is None  # a local directory: no hub id to name


def test_license_and_language_options_win_and_own_files_name_no_hub_dataset(tiny: tuple[Path, Path],
                                                                            tmp_path: Path) -> None:
    model, data = tiny
    run = fine_tune(model, tmp_path / "own", train_file=str(data / "SST-2" / "train.tsv"),
                    eval_file=str(data / "SST-2" / "dev.tsv"), text_column="sentence", license="mit", language=["de"])
    card = load_card(run / "model")
    assert (card.data.license, card.data.language) == ("mit", ["de"])
    assert card.data.datasets is None
    assert card.data.eval_results[0].dataset_type == "SST-2"  # the task as named after its folder
    assert metric_values(card) == {"accuracy": json.loads((run / "eval_results.json").read_text())["accuracy"]}


def test_a_base_model_from_the_hub_cache_is_named_by_its_hub_id(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = tiny
    snapshot = tmp_path / "hub" / "models--bertpre-tests--tiny-bert" / "snapshots" / "0123abcd"
    shutil.copytree(model, snapshot)
    assert hub_model_id(str(snapshot)) == "bertpre-tests/tiny-bert" and hub_model_id(str(model)) is None
    run = fine_tune(snapshot, tmp_path / "from-hub", task="sst2", data_dir=str(data))
    card = load_card(run / "model")
    assert card.data.base_model == "bertpre-tests/tiny-bert"
    assert card.data.model_name == "tiny-bert-sst2"


def test_pretraining_card_names_hub_datasets_and_the_held_out_accuracy() -> None:
    bert = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    run = SimpleNamespace(data="runs/data", init_from=None, objective="mlm", batches=SimpleNamespace(global_batch_size=8),
                          masking=SimpleNamespace(mlm_probability=0.15, whole_word_mask=False),
                          optimization=SimpleNamespace(optimizer="adamw", learning_rate=1e-4))
    state = {"step": 10, "tokens_seen": 1000, "last_eval": {"eval_mlm_accuracy": 0.4321, "eval_perplexity": 55.5,
                                                            "step": 10}}
    export = SimpleNamespace(output="runs/export", license=None, language=[])
    text = pretraining_model_card(bert, run, state, Path("ckpt"), "bertpre export", export,
                                  [hub_dataset_id("hf:wikimedia/wikipedia:20231101.en@train")])
    card = ModelCard(text)
    assert card.data.pipeline_tag == "fill-mask" and card.data.datasets == ["wikimedia/wikipedia"]
    assert card.data.license is None and card.data.language is None  # unknown: left out, not invented
    assert metric_values(card) == {"accuracy": 0.4321, "perplexity": 55.5}
    assert card.data.eval_results[0].dataset_type == "wikimedia/wikipedia"
    assert hub_dataset_id("corpus.txt") is None and hub_dataset_id("builtin:python-docs") is None


def test_a_checkpoint_between_evaluations_names_the_step_of_its_evaluation() -> None:
    bert = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    run = SimpleNamespace(data="runs/data", init_from=None, objective="mlm", batches=SimpleNamespace(global_batch_size=8),
                          masking=SimpleNamespace(mlm_probability=0.15, whole_word_mask=False),
                          optimization=SimpleNamespace(optimizer="adamw", learning_rate=1e-4))
    state = {"step": 1500, "tokens_seen": 1000, "last_eval": {"eval_mlm_accuracy": 0.4321, "step": 1000}}
    export = SimpleNamespace(output="runs/export", license=None, language=[])
    text = pretraining_model_card(bert, run, state, Path("ckpt"), "bertpre export", export)
    assert "## Last evaluation, at step 1,000 of 1,500" in text and "Final evaluation" not in text
    assert not ModelCard(text).data.eval_results  # not this checkpoint's figure: no model-index claim
