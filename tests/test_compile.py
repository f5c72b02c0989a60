"""The compiled path on the CPU (inductor): it trains like eager, saves usable checkpoints, has no graph break
inside the model and compiles a bounded number of times over batches of varying shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bertpre.core.config import load_config
from bertpre.core.configs import FinetuneConfig, PretrainConfig
from bertpre.training.checkpoint import list_checkpoints
from bertpre.training.pretrain import pretrain

from .conftest import prepare_wiki64

MAX_GRAPHS = 4
"""Compilations allowed in a run: the model compiles with dynamic shapes (one graph for training, one for
evaluation under no_grad), and a size that first equals another (duck sizing) may cost one recompile each."""


@pytest.fixture(scope="module")
def varied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64-token pairs of varied lengths (half of the documents cut to a random shorter target)."""
    return prepare_wiki64(tmp_path_factory.mktemp("compile") / "wiki64", short_seq_prob=0.5, eval_fraction=0.2)


def dynamo_counters() -> dict:
    from torch._dynamo.utils import counters

    return {"graphs": counters["stats"]["unique_graphs"], "breaks": dict(counters["graph_break"])}


def reset_dynamo() -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()


def losses(output: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (output / "metrics.jsonl").read_text().splitlines()
            if '"loss"' in line]


def run_pretraining(data: Path, output: Path, **options: str) -> None:
    settings = {"data": str(data), "output": str(output), "model": "tiny", "max_steps": "10", "warmup_steps": "2",
                "global_batch_size": "16", "per_device_batch_size": "16", "eval_every": "0", "log_every": "1",
                "checkpoint_every": "5", "report_to": "none", "cpu": "true", "num_workers": "0",
                "model.hidden_dropout_prob": "0", "model.attention_probs_dropout_prob": "0", **options}
    pretrain(load_config(PretrainConfig, None, settings), show_progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("model, packing", [("tiny", "false"), ("tiny", "true"), ("modernbert-tiny", "true")])
def test_compiled_pretraining_trains_like_eager_and_its_checkpoints_export(varied: Path, tmp_path: Path, model: str,
                                                                          packing: str) -> None:
    options = {"model": model, "packing": packing, "objective": "mlm" if "modernbert" in model else "mlm_nsp"}
    run_pretraining(varied, tmp_path / "eager", **options)
    reset_dynamo()
    run_pretraining(varied, tmp_path / "compiled", compile="true", **options)
    counts = dynamo_counters()
    assert counts["breaks"] == {}, f"graph breaks inside the model: {counts['breaks']}"
    assert 1 <= counts["graphs"] <= MAX_GRAPHS
    torch.testing.assert_close(losses(tmp_path / "compiled"), losses(tmp_path / "eager"), atol=2e-4, rtol=1e-4)
    checkpoints = list_checkpoints(tmp_path / "compiled")
    assert [c.name for c in checkpoints] == ["step-00000005", "step-00000010"]
    from safetensors.torch import load_file

    names = set(load_file(str(checkpoints[-1] / "model.safetensors")))
    embeddings = "model.embeddings.tok_embeddings.weight" if "modernbert" in model else "bert.embeddings.word.weight"
    assert not any("_orig_mod" in name for name in names) and embeddings in names
    from bertpre.cli import main

    assert main(["export", "--checkpoint", str(tmp_path / "compiled"), "--output", str(tmp_path / "hf")]) == 0
    from transformers import AutoModelForMaskedLM

    AutoModelForMaskedLM.from_pretrained(tmp_path / "hf")


@pytest.mark.slow
def test_compiled_fine_tuning_matches_eager(tmp_path: Path) -> None:
    from transformers import BertConfig

    from bertpre.model.bert import BertForPreTraining
    from bertpre.model.hf_directory import export_model
    from bertpre.tasks.finetune import finetune

    from .conftest import REPO

    vocab = (REPO / "tokenizer" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    export_model(BertForPreTraining(config), tmp_path / "model", tokenizer_dir=REPO / "tokenizer")
    rows = [{"text": f"{'good ' * (1 + i % 7)}film number {i}" if i % 2 else f"a {'bad ' * (1 + i % 5)}one, {i}",
             "label": str(i % 2)} for i in range(96)]
    table = tmp_path / "rows.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    results = {}
    for name, compiled in (("eager", "false"), ("compiled", "true")):
        reset_dynamo()
        settings = {"model": str(tmp_path / "model"), "train_file": str(table), "eval_file": str(table),
                    "epochs": "2", "learning_rate": "1e-3", "per_device_batch_size": "16", "report_to": "none",
                    "cpu": "true", "compile": compiled, "output": str(tmp_path / name)}
        results[name] = finetune(load_config(FinetuneConfig, None, settings), show_progress=False)
        if compiled == "true":
            counts = dynamo_counters()
            assert counts["breaks"] == {} and 1 <= counts["graphs"] <= MAX_GRAPHS
    eager, compiled = results["eager"], results["compiled"]
    assert [h["selection_accuracy"] for h in compiled.history] == pytest.approx(
        [h["selection_accuracy"] for h in eager.history], abs=0.02)
    assert compiled.best_metrics["accuracy"] == pytest.approx(eager.best_metrics["accuracy"], abs=0.02)
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(tmp_path / "compiled" / "model")
