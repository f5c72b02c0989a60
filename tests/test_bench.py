"""`bertpre bench` runs (CPU smoke test: no timing claims) and reports what it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bertpre.runners.bench import bench_table, compare_curves, curve_table, run_bench, run_loss_curves
from bertpre.core.configs import BenchConfig, ModelConfig
from bertpre.core.errors import ConfigError
from bertpre.model.flops import gpu_peak_flops, training_flops_per_token
from bertpre.model.bert import bert_config

from .conftest import prepare_wiki64


@pytest.fixture(scope="module")
def wiki64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real variable-length pairs: short targets half the time, so batches carry padding."""
    return prepare_wiki64(tmp_path_factory.mktemp("bench") / "wiki", short_seq_prob=0.5)


def test_bench_compares_both_models_on_the_same_work() -> None:
    report = run_bench(BenchConfig(model_size="tiny", seq_length=32, batch_size=4, steps=2, warmup_steps=1, cpu=True))
    names = [r["name"] for r in report["results"]]
    assert names == ["hf sdpa", "bertpre", "bertpre + unpad"]
    for result in report["results"]:
        assert result["sequences_per_second"] > 0 and result["nonpad_tokens_per_second"] > 0
    # same weights, same batches: the losses agree (up to dropout), so all did the same training work
    for result in report["results"][1:]:
        assert result["final_loss"] == pytest.approx(report["results"][0]["final_loss"], rel=0.05)
    table = bench_table(report)
    assert "× ref seq/s" in table and "bertpre + unpad" in table and "hf sdpa" in table


def test_bench_on_real_variable_length_batches_measures_their_padding(wiki64: Path) -> None:
    report = run_bench(BenchConfig(model_size="tiny", batch_size=8, steps=8, warmup_steps=1, cpu=True,
                                   data=str(wiki64)))
    assert report["seq_length"] <= 64 and "real data" in report["mode"]
    assert 0.05 < report["padding_fraction"] < 0.9
    by_name = {r["name"]: r for r in report["results"]}
    assert list(by_name) == ["hf sdpa", "bertpre", "bertpre + unpad", "bertpre + packed", "bertpre + packed + last"]
    for result in report["results"]:  # 8 steps cycle once through the 8 batches the padding was measured on
        assert result["nonpad_tokens_per_second"] == pytest.approx(
            result["tokens_per_second"] * (1 - result["padding_fraction"]), rel=1e-6)
    for name in ("hf sdpa", "bertpre", "bertpre + unpad"):
        assert by_name[name]["padding_fraction"] == pytest.approx(report["padding_fraction"], rel=1e-6)
    for name in ("bertpre + packed", "bertpre + packed + last"):  # the same sequences in fewer slots
        assert by_name[name]["padding_fraction"] < report["padding_fraction"]
        assert by_name[name]["final_loss"] == pytest.approx(by_name["bertpre"]["final_loss"], rel=0.1)
    assert by_name["bertpre + unpad"]["final_loss"] == pytest.approx(by_name["bertpre"]["final_loss"], rel=0.05)


def test_loss_curves_of_our_variants_match_the_reference_on_real_batches(wiki64: Path) -> None:
    report = run_loss_curves(BenchConfig(model_size="tiny", batch_size=8, cpu=True, data=str(wiki64),
                                         curve_steps=36, learning_rate=1e-3))
    assert list(report["curves"]) == ["hf sdpa", "bertpre", "bertpre + unpad"]
    reference = report["curves"]["hf sdpa"]
    assert len(reference) == 36 and np.mean(reference[-6:]) < np.mean(reference[:6]) - 1.0  # it learned
    for name in ("bertpre", "bertpre + unpad"):
        assert report["comparisons"][name]["within_noise"], curve_table(report)
    assert "within noise" in curve_table(report)


def test_curve_comparison_flags_a_shifted_curve() -> None:
    rng = np.random.default_rng(0)
    reference = list(8 - np.linspace(0, 2, 120) + rng.normal(0, 0.1, 120))
    same_but_noisy = list(np.asarray(reference) + rng.normal(0, 0.05, 120))
    assert compare_curves(reference, same_but_noisy, window=20)["within_noise"]
    assert not compare_curves(reference, [x + 0.3 for x in reference], window=20)["within_noise"]
    with pytest.raises(ConfigError, match="curve_steps: the loss-curve comparison trains on real text"):
        BenchConfig(curve_steps=10)


def test_bench_json_from_the_command_line() -> None:
    result = subprocess.run([sys.executable, "-m", "bertpre", "bench", "--model-size", "tiny", "--seq-length", "16",
                             "--batch-size", "2", "--steps", "1", "--warmup-steps", "0", "--cpu", "true",
                             "--json", "true"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"device", "torch", "transformers", "results", "mflop_per_token"} <= set(report)


def test_flops_per_token_and_gpu_peaks() -> None:
    base = bert_config(ModelConfig.of_size("base"))
    assert training_flops_per_token(base, 128, 0.15) / 1e6 == pytest.approx(545, rel=0.02)
    assert gpu_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu_peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu_peak_flops("Some Future GPU") is None
    with pytest.raises(ConfigError, match="seq_length"):
        BenchConfig(seq_length=1024)


def test_fine_tuning_bench_runs_both_sides_on_the_same_rows(tmp_path: Path) -> None:
    """A whole fine-tuning run against a plain transformers loop (CPU smoke test: no timing claims)."""
    from transformers import BertConfig

    from bertpre.model.bert import BertForPreTraining
    from bertpre.model.hf_directory import export_model
    from bertpre.runners.finetune_bench import finetune_bench_table, run_finetune_bench

    from .conftest import REPO

    vocab = (REPO / "tokenizer" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64)
    export_model(BertForPreTraining(config), tmp_path / "model", tokenizer_dir=REPO / "tokenizer")
    rows = [{"sentence": ("a good film " * (1 + i % 9)) if i % 2 else "bad " * (1 + i % 4), "label": str(i % 2)}
            for i in range(80)]
    table = tmp_path / "rows.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    report = run_finetune_bench(BenchConfig(workload="finetune", model=str(tmp_path / "model"), train_file=str(table),
                                            eval_file=str(table), text_column="sentence", max_train_samples=64,
                                            finetune_batch_size=16, cpu=True))
    names = [r["name"] for r in report["results"]]
    assert names == ["transformers loop", "bertpre padded", "bertpre packed"]
    by_name = {r["name"]: r for r in report["results"]}
    assert by_name["bertpre packed"]["padding_fraction"] < by_name["bertpre padded"]["padding_fraction"] / 2
    assert by_name["transformers loop"]["padding_fraction"] > 0.2  # padded to each batch's longest row
    for result in report["results"]:
        assert 0 <= result["accuracy"] <= 1 and result["examples_per_second"] > 0
    assert "× loop" in finetune_bench_table(report)


def test_bench_times_modernbert_against_transformers_modernbert(wiki64: Path) -> None:
    report = run_bench(BenchConfig(model_size="modernbert-tiny", batch_size=8, steps=2, warmup_steps=1, cpu=True,
                                   data=str(wiki64), unpad=False, masked_last_layer=False))
    names = [r["name"] for r in report["results"]]
    assert names == ["hf sdpa", "bertpre", "bertpre + packed"]
    losses = [r["final_loss"] for r in report["results"]]
    assert losses[1] == pytest.approx(losses[0], rel=0.05)  # the same weights and masks: the same masked-LM loss
    assert "ModernBERT-tiny" in bench_table(report)
