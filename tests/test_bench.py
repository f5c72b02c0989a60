"""`bertpre bench` runs (CPU smoke test: no timing claims) and reports what it promises."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bertpre.bench import bench_table, run_bench
from bertpre.config import BenchConfig, ConfigError
from bertpre.pretrain import gpu_peak_flops, training_flops_per_token
from bertpre.model import bert_config
from bertpre.config import ModelConfig


def test_bench_compares_both_models_on_the_same_work() -> None:
    report = run_bench(BenchConfig(model_size="tiny", seq_length=32, batch_size=4, steps=2, warmup_steps=1, cpu=True))
    names = [r["name"] for r in report["results"]]
    assert names == ["hf sdpa", "bertpre"]
    for result in report["results"]:
        assert result["sequences_per_second"] > 0 and result["nonpad_tokens_per_second"] > 0
    # same weights, same batches: the first-step losses agree, so both did the same training work
    assert report["results"][0]["final_loss"] == pytest.approx(report["results"][1]["final_loss"], rel=0.05)
    table = bench_table(report)
    assert "× ref seq/s" in table and "bertpre" in table and "hf sdpa" in table


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
