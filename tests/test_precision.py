"""Mixed precision: the option when set, else what `accelerate launch` was configured with, else bf16 on
a GPU; fp32 on the CPU; the precision used is what the run saves and reports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from bertpre.training.accelerator import LAUNCHER_PRECISION_ENV, PrecisionChoice, choose_precision
from bertpre.core.config import load_config
from bertpre.core.configs import FinetuneConfig, PretrainConfig, RuntimeOptions
from bertpre.core.errors import ConfigError
from bertpre.training.pretrain import pretrain

from .conftest import REPO, prepare_wiki64

TINY = {"model": str(REPO / "configs" / "model" / "tiny.yaml"), "global_batch_size": 8, "per_device_batch_size": 8,
        "warmup_steps": 1, "max_steps": 2, "log_every": 1, "eval_every": 0, "eval_batches": 1, "num_workers": 0}


@pytest.mark.parametrize("requested, use_cpu, launcher, expected", [
    (None, False, "fp16", PrecisionChoice(None)),  # Accelerate takes its launcher's choice itself
    (None, False, "NO", PrecisionChoice(None)),
    (None, False, None, PrecisionChoice("bf16")),  # plain `bertpre pretrain` on a GPU
    ("fp16", False, "fp16", PrecisionChoice("fp16")),
    ("no", False, None, PrecisionChoice("no")),
    (None, True, None, PrecisionChoice("no")),
    (None, True, "no", PrecisionChoice("no")),
])
def test_precision_follows_the_option_then_the_launcher_then_bf16(requested, use_cpu, launcher, expected) -> None:
    assert choose_precision(requested, use_cpu, launcher) == expected


def test_the_option_wins_over_the_launcher_and_says_so_in_one_line() -> None:
    choice = choose_precision("bf16", use_cpu=False, launcher="fp16")
    assert choice.mixed_precision == "bf16"
    assert choice.note == "mixed precision: bf16 (bertpre's mixed_precision option) applies, not fp16 from " \
                          "accelerate launch's config"


def test_cpu_runs_train_in_fp32_unless_the_option_itself_asks_for_bf16() -> None:
    assert choose_precision("bf16", use_cpu=True, launcher=None) == PrecisionChoice("bf16")
    assert choose_precision("fp16", use_cpu=True, launcher=None) == PrecisionChoice(
        "no", "mixed precision: mixed_precision asks for fp16, but CPU runs train in fp32 (or bf16 when "
        "--mixed-precision says so)")
    assert choose_precision(None, use_cpu=True, launcher="bf16") == PrecisionChoice(
        "no", f"mixed precision: accelerate launch's config ({LAUNCHER_PRECISION_ENV}) asks for bf16, but CPU runs "
        "train in fp32 (or bf16 when --mixed-precision says so)")


def test_bf16_on_the_cpu_trains_under_autocast(data: Path, tmp_path: Path) -> None:
    config = load_config(PretrainConfig, None, {"data": str(data), "output": str(tmp_path / "run"), "cpu": True,
                                                "report_to": "none", "mixed_precision": "bf16", **TINY})
    summary = pretrain(config, show_progress=False)
    assert "precision        bf16 mixed" in summary.table()
    saved = yaml.safe_load((tmp_path / "run" / "pretrain.yaml").read_text())
    assert saved["runtime"]["mixed_precision"] == "bf16"
    fp32 = pretrain(load_config(PretrainConfig, None, {"data": str(data), "output": str(tmp_path / "fp32"),
                                                       "cpu": True, "report_to": "none", **TINY}), show_progress=False)
    assert summary.last_metrics["loss"] != fp32.last_metrics["loss"]  # autocast really ran
    assert summary.last_metrics["loss"] == pytest.approx(fp32.last_metrics["loss"], rel=0.02)


def test_a_launcher_precision_bertpre_does_not_train_in_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"mixed_precision: accelerate launch's config asks for fp8 .*--mixed-precision"):
        choose_precision(None, use_cpu=False, launcher="fp8")
    assert choose_precision("bf16", use_cpu=False, launcher="fp8").mixed_precision == "bf16"


def test_unset_is_the_default_and_distinct_from_every_value(tmp_path: Path) -> None:
    assert RuntimeOptions().mixed_precision is None and FinetuneConfig().mixed_precision is None
    # `no` is a boolean to YAML 1.1, on the command line as in a file
    assert load_config(PretrainConfig, None, {"mixed_precision": "no", "max_steps": 1}).runtime.mixed_precision == "no"
    (tmp_path / "fp32.yaml").write_text("mixed_precision: no\n")
    assert load_config(FinetuneConfig, tmp_path / "fp32.yaml").mixed_precision == "no"
    assert load_config(FinetuneConfig, None, {"mixed_precision": "null"}).mixed_precision is None


def accelerate_precision(env_value: str, option: str | None) -> str:
    """The precision Accelerate trains in, in a fresh process launched as `accelerate launch` would with
    ``mixed_precision: env_value``, when bertpre's option is ``option`` (on a GPU; bf16/fp16 exist on the
    CPU too, so Accelerate's side can be checked here)."""
    script = ("import sys; from accelerate import Accelerator; from bertpre.training.accelerator import choose_precision; "
              f"choice = choose_precision({option!r}, use_cpu=False, launcher={env_value!r}); "
              "print(Accelerator(cpu=True, mixed_precision=choice.mixed_precision).mixed_precision)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, LAUNCHER_PRECISION_ENV: env_value})
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[-1]


def test_accelerate_trains_in_the_launchers_precision_unless_the_option_is_set() -> None:
    assert accelerate_precision("bf16", None) == "bf16"
    assert accelerate_precision("bf16", "fp16") == "fp16"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_wiki64(tmp_path_factory.mktemp("precision") / "wiki64", eval_fraction=0.2)


def test_a_cpu_run_saves_and_reports_the_precision_it_used(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(LAUNCHER_PRECISION_ENV, "bf16")  # as `accelerate launch --config_file 1gpu.yaml` sets it
    config = load_config(PretrainConfig, None, {"data": str(data), "output": str(tmp_path / "run"), "cpu": True,
                                                "report_to": "none", **TINY})
    summary = pretrain(config, show_progress=False)
    assert "asks for bf16, but CPU runs train in fp32" in capsys.readouterr().out
    saved = yaml.safe_load((tmp_path / "run" / "pretrain.yaml").read_text())
    assert saved["runtime"]["mixed_precision"] == "no" and config.runtime.mixed_precision is None
    assert "precision        fp32" in summary.table()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_gpu_run_takes_the_launchers_precision_unless_the_option_is_set(data: Path, tmp_path: Path) -> None:
    def run(output: Path, *options: str) -> tuple[str, str]:
        args = [f"--{key.replace('_', '-')}={value}" for key, value in TINY.items()]
        result = subprocess.run([sys.executable, "-m", "bertpre", "pretrain", "--data", str(data), "--output",
                                 str(output), "--report-to", "none", *args, *options], capture_output=True, text=True,
                                timeout=600, env={**os.environ, LAUNCHER_PRECISION_ENV: "fp16"})
        assert result.returncode == 0, result.stderr
        return result.stdout, yaml.safe_load((output / "pretrain.yaml").read_text())["runtime"]["mixed_precision"]

    launched, saved = run(tmp_path / "launched")
    assert saved == "fp16" and "precision        fp16 mixed" in launched and "mixed precision:" not in launched
    chosen, saved = run(tmp_path / "chosen", "--mixed-precision", "bf16")
    assert saved == "bf16" and "precision        bf16 mixed" in chosen
    assert "bf16 (bertpre's mixed_precision option) applies, not fp16" in chosen
