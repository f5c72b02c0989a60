"""What a small-budget recipe needs: time budgets, MLM-only, continued pretraining, phases, time to
accuracy, and the one-command answer to "did pretraining pay?"."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from bertpre.training.checkpoint import list_checkpoints
from bertpre.core.configs import ExportConfig, FinetuneConfig, PrepareConfig
from bertpre.core.errors import BertpreError
from bertpre.export.export import export_checkpoint
from bertpre.data.prepare import prepare_pretraining_data
from bertpre.training.pretrain import ACCURACY_MILESTONES, _new_milestones
from bertpre.runners.report import run_status

from .conftest import english_articles, pretrain_tiny


@pytest.fixture
def data(wiki64_with_eval: Path) -> Path:
    return wiki64_with_eval


def run(data: Path, output: Path, **options: str) -> Path:
    return pretrain_tiny(data, output, **{"global_batch_size": "16", "per_device_batch_size": "16", "warmup_steps": "2",
                                          "learning_rate": "1e-3", "eval_batches": "2", **options})


def metrics(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


def test_a_time_budget_alone_sets_the_schedule_length(data: Path, tmp_path: Path) -> None:
    output = run(data, tmp_path / "timed", max_minutes="0.12", lr_schedule="linear")
    lines = [m for m in metrics(output) if "learning_rate" in m]
    rates = [m["learning_rate"] for m in lines]
    assert len(rates) >= 5 and max(rates) == pytest.approx(1e-3)
    # after warm-up the rate falls with the share of the budget spent, and is near zero at the end
    assert rates[-1] < 0.25e-3 and all(a >= b for a, b in zip(rates[2:], rates[3:]))
    assert lines[-1]["elapsed_seconds"] >= 0.12 * 60


def test_mlm_only_pretraining_exports_a_masked_lm_without_nsp_or_pooler(data: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForMaskedLM, pipeline

    output = run(data, tmp_path / "mlm", objective="mlm", max_steps="4", eval_every="4")
    lines = metrics(output)
    assert all(m.get("nsp_loss", 0) == 0 for m in lines) and "eval_nsp_accuracy" not in lines[-1]
    exported = export_checkpoint(ExportConfig(checkpoint=str(output), output=str(tmp_path / "hf")))
    config = json.loads((exported / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"]
    model, info = AutoModelForMaskedLM.from_pretrained(exported, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert len(pipeline("fill-mask", model=str(exported))("the [MASK] of the river.")) == 5
    assert "masked-LM" in (exported / "README.md").read_text() and "only" in (exported / "README.md").read_text()


def test_held_out_accuracy_is_measured_at_one_masking_rate_whatever_the_training_rate(data: Path,
                                                                                      tmp_path: Path) -> None:
    # a learning rate too small to move the weights: the runs differ only in how they mask
    def evaluation(name: str, **masking: str) -> dict:
        output = run(data, tmp_path / name, max_steps="1", warmup_steps="0", learning_rate="1e-12", **masking)
        return [m for m in metrics(output) if "eval_mlm_loss" in m][-1]

    fifteen, forty = evaluation("train15"), evaluation("train40", mlm_probability="0.4")
    assert forty["eval_mlm_loss"] == pytest.approx(fifteen["eval_mlm_loss"], abs=1e-5)
    assert forty["eval_mlm_accuracy"] == pytest.approx(fifteen["eval_mlm_accuracy"], abs=1e-6)
    # the evaluation rate is its own option, and it is the one evaluations use
    other = evaluation("eval40", mlm_probability="0.4", eval_mlm_probability="0.4")
    assert other["eval_mlm_loss"] != pytest.approx(forty["eval_mlm_loss"], abs=1e-3)


def test_a_new_phase_starts_its_own_schedule_from_the_weights_and_says_so(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    phase1 = run(data, tmp_path / "phase1", max_steps="6", learning_rate="1e-3")
    checkpoint = list_checkpoints(phase1)[-1]
    with pytest.raises(BertpreError, match="--init-from"):  # resuming would keep phase 1's schedule
        run(data, tmp_path / "phase2-resume", max_steps="10", learning_rate="4e-3", resume=str(checkpoint))
    phase2 = run(data, tmp_path / "phase2", max_steps="4", learning_rate="4e-3", warmup_steps="2",
                 init_from=str(checkpoint))
    assert "a new phase" in capsys.readouterr().out
    lines = [m for m in metrics(phase2) if "learning_rate" in m]
    assert [m["step"] for m in lines] == [1, 2, 3, 4]
    assert lines[0]["learning_rate"] == pytest.approx(4e-3)  # the second warm-up step of phase 2: 2/2 · 4e-3
    fresh = run(data, tmp_path / "fresh", max_steps="1")
    assert lines[0]["mlm_loss"] < metrics(fresh)[0]["mlm_loss"] - 0.3  # it began from phase 1's weights


@pytest.mark.slow
def test_continued_pretraining_of_a_hugging_face_bert(tmp_path: Path, minilm_dir: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    vocabulary = tmp_path / "minilm-tokenizer"
    vocabulary.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, vocabulary / name)
    prepare_pretraining_data(PrepareConfig(inputs=[str(english_articles())], output=str(tmp_path / "data"),
                                           tokenizer=str(vocabulary), max_seq_length=64, num_workers=1,
                                           eval_fraction=0.2), show_progress=False)
    output = run(tmp_path / "data", tmp_path / "continued", init_from=str(minilm_dir), max_steps="2",
                 learning_rate="1e-5", eval_every="2")
    said = capsys.readouterr().out
    assert "continued pretraining" in said and "newly initialised: masked-LM head" in said
    from safetensors.torch import load_file
    from transformers import AutoModel

    start = AutoModel.from_pretrained(minilm_dir).embeddings.word_embeddings.weight
    trained = load_file(str(list_checkpoints(output)[-1] / "model.safetensors"))["bert.embeddings.word.weight"]
    assert trained.shape == start.shape and (trained - start).abs().max() < 1e-3  # two tiny steps from MiniLM


def test_time_to_accuracy_is_recorded_once_per_threshold_and_shown_by_status(tmp_path: Path) -> None:
    from bertpre.training.checkpoint import TrainerState

    state = TrainerState(step=50, tokens_seen=1000, elapsed_seconds=12.5)
    assert _new_milestones(state, 0.23) == [0.1, 0.2]
    state.step, state.elapsed_seconds = 60, 15.0
    assert _new_milestones(state, 0.25) == [] and _new_milestones(state, 0.31) == [0.3]
    assert state.milestones["0.2"] == {"step": 50, "tokens_seen": 1000, "elapsed_seconds": 12.5}
    assert ACCURACY_MILESTONES[:3] == (0.1, 0.2, 0.3)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lines = [{"step": 50, "mlm_accuracy_milestone": 0.2, "tokens_seen": 1000, "elapsed_seconds": 12.5},
             {"step": 50, "eval_mlm_accuracy": 0.23, "elapsed_seconds": 12.5, "eval_mlm_loss": 6.0}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    assert "MLM acc ≥ 20%" in run_status(run_dir).table() and "12 s, 1,000 tokens, step 50" in run_status(run_dir).table()


def test_finetune_compares_with_random_init_over_seeds(data: Path, tmp_path: Path) -> None:
    from bertpre.tasks.comparison import compare_finetunes

    from .conftest import shared_path

    rows = shared_path("ci/sst2_dev_first200.tsv")
    pretrained = run(data, tmp_path / "pre", max_steps="4")
    exported = export_checkpoint(ExportConfig(checkpoint=str(pretrained), output=str(tmp_path / "hf")))
    summary = compare_finetunes(FinetuneConfig(
        model=str(exported), train_file=str(rows), eval_file=str(rows), text_column="sentence", epochs=1,
        per_device_batch_size=32, learning_rate=1e-3, compare_random_init=True, seeds=[0, 1], cpu=True,
        output=str(tmp_path / "cmp")), show_progress=False)
    assert set(summary.runs) == {"pretrained", "random"} and set(summary.runs["random"]) == {0, 1}
    assert summary.gain() == pytest.approx(summary.mean("pretrained") - summary.mean("random"))
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert saved["gain"] == pytest.approx(summary.gain()) and "gain" in summary.table()
    paired = summary.interval()  # from the runs' saved per-row predictions, paired by seed
    assert paired.seeds == [0, 1] and paired.mean == pytest.approx(summary.gain())
    assert saved["comparison"]["verdict"] == paired.verdict() and paired.verdict() in summary.table()
    assert "only 2 seeds" in summary.table() and "held out" in summary.table()
    # the random-init runs really are random: their weights differ from the exported encoder's
    from safetensors.torch import load_file

    start = load_file(str(exported / "model.safetensors"))["bert.embeddings.word_embeddings.weight"]
    random_run = load_file(str(tmp_path / "cmp" / "random" / "seed-0" / "model" / "model.safetensors"))
    assert not torch.allclose(random_run["bert.embeddings.word_embeddings.weight"], start, atol=1e-2)
