"""The modern recipe's training features, for both architectures: a warm-up-stable-decay schedule (1-sqrt,
a decay started from any checkpoint), a batch-size warm-up, and a masking-rate schedule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bertpre.core.config import load_config
from bertpre.core.configs import PretrainConfig
from bertpre.core.errors import BertpreError, ConfigError
from bertpre.data.data_order import BatchPlan, MaskingSchedule
from bertpre.training.checkpoint import list_checkpoints
from bertpre.training.optim import Decay, learning_rate_factor
from bertpre.training.pretrain import pretrain

from .conftest import prepare_wiki64


# ---- the schedule ----------------------------------------------------------------------------------


def test_wsd_holds_the_peak_then_decays_as_one_minus_the_square_root() -> None:
    decay = Decay("wsd", fraction=0.2, shape="1-sqrt")
    factors = [learning_rate_factor(step, 10, 110, "wsd", decay) for step in range(110)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert all(f == 1.0 for f in factors[10:90])  # stable: the last 20 of the 100 steps after warm-up decay
    assert factors[95] == pytest.approx(1 - math.sqrt(5 / 20))
    assert learning_rate_factor(110, 10, 110, "wsd", decay) == 0.0
    by_steps = Decay("wsd", steps=5, shape="linear")
    assert [learning_rate_factor(s, 0, 20, "wsd", by_steps) for s in (14, 15, 16, 20)] == pytest.approx([1, 1, 0.8, 0])
    assert Decay("cosine").factor(50, 100) == pytest.approx(0.5) and Decay("linear").factor(25, 100) == 0.75


def test_decay_steps_are_refused_where_they_cannot_count() -> None:
    with pytest.raises(ConfigError, match="decay_steps: applies to lr_schedule wsd"):
        load_config(PretrainConfig, None, {"max_steps": "10", "decay_steps": "2"})
    with pytest.raises(ConfigError, match="decay_steps: counts steps"):
        load_config(PretrainConfig, None, {"max_tokens": "1000", "lr_schedule": "wsd", "decay_steps": "2"})


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_wiki64(tmp_path_factory.mktemp("recipe") / "wiki64", eval_fraction=0.2)


def run(data: Path, output: Path, **options: str) -> None:
    settings = {"data": str(data), "output": str(output), "model": "tiny", "global_batch_size": "16",
                "per_device_batch_size": "4", "warmup_steps": "2", "learning_rate": "2e-3", "eval_every": "0",
                "log_every": "1", "report_to": "none", "cpu": "true", "num_workers": "0",
                "model.hidden_dropout_prob": "0", "model.attention_probs_dropout_prob": "0", **options}
    pretrain(load_config(PretrainConfig, None, settings), show_progress=False)


def metrics(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def weights(output: Path) -> dict[str, torch.Tensor]:
    return load_file(str(list_checkpoints(output)[-1] / "model.safetensors"))


def test_a_decay_started_from_a_stable_checkpoint_equals_a_run_planned_that_long(data: Path, tmp_path: Path) -> None:
    """WSD's promise: train stable as long as you like, then decay from any checkpoint."""
    run(data, tmp_path / "planned", lr_schedule="wsd", max_steps="10", decay_steps="4")
    run(data, tmp_path / "open", lr_schedule="wsd", max_steps="6", schedule_steps="1000", decay_steps="4")
    assert all(m["learning_rate"] == pytest.approx(2e-3) for m in metrics(tmp_path / "open")[1:])  # still stable
    run(data, tmp_path / "open", lr_schedule="wsd", max_steps="10", decay_steps="4")  # resumes at 6: decays now
    planned, decayed = metrics(tmp_path / "planned"), metrics(tmp_path / "open")
    assert [m["learning_rate"] for m in decayed] == pytest.approx([m["learning_rate"] for m in planned])
    assert planned[-1]["learning_rate"] == 0.0 and planned[-3]["learning_rate"] < 2e-3
    expected, got = weights(tmp_path / "planned"), weights(tmp_path / "open")
    assert all(torch.equal(expected[k], got[k]) for k in expected)


# ---- the batch-size warm-up ------------------------------------------------------------------------


def test_the_batch_grows_in_micro_steps_and_the_stream_skips_and_repeats_nothing() -> None:
    plan = BatchPlan(1000, global_batch_size=64, per_device_batch_size=8, world_size=2, seed=3, warmup_steps=6,
                     warmup_start=0.25)
    assert [plan.micro_steps(s) for s in range(8)] == [1, 2, 2, 3, 3, 4, 4, 4]
    numbers = [(s, m) for s in range(12) for m in range(plan.micro_steps(s))]
    assert [plan.locate(k) for k in range(len(numbers))] == numbers
    assert all(plan.first_micro_step(s) == sum(plan.micro_steps(t) for t in range(s)) for s in range(12))
    read = np.concatenate([plan.indices(s, m, r) for s in range(40) for m in range(plan.micro_steps(s))
                           for r in range(2)])
    epoch = plan.steps_per_epoch * 64  # a permutation per epoch, each read whole before the next
    assert len(np.unique(read[:epoch])) == epoch and len(np.unique(read[epoch:2 * epoch])) == epoch
    plain = BatchPlan(1000, 64, 8, world_size=2, seed=3)
    legacy = [np.random.default_rng([3, s // plain.steps_per_epoch]).permutation(1000)[
        (s % plain.steps_per_epoch) * 64 + (m * 2 + r) * 8:][:8] for s in (0, 5, 15, 16) for m in range(4)
        for r in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip([plain.indices(s, m, r) for s in (0, 5, 15, 16)
                                                     for m in range(4) for r in range(2)], legacy))


def test_a_run_with_a_batch_warm_up_reads_fewer_tokens_first_and_resumes_exactly(data: Path, tmp_path: Path) -> None:
    options = dict(batch_warmup_steps="4", batch_warmup_start="0.25", max_steps="8", schedule_steps="8",
                   checkpoint_every="3")
    run(data, tmp_path / "whole", **options)
    lines = metrics(tmp_path / "whole")
    assert [m["micro_steps"] for m in lines] == [1, 2, 3, 4, 4, 4, 4, 4]
    tokens = np.diff([0] + [m["tokens_seen"] for m in lines])
    assert tokens[0] < tokens[1] < tokens[2] < tokens[4]
    run(data, tmp_path / "parts", **{**options, "max_steps": "3"})  # stops inside the warm-up
    run(data, tmp_path / "parts", **options)
    expected, got = weights(tmp_path / "whole"), weights(tmp_path / "parts")
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_a_batch_warm_up_without_micro_steps_to_grow_by_is_refused(data: Path, tmp_path: Path) -> None:
    with pytest.raises(BertpreError, match="batch_warmup_steps: the batch grows by whole micro-steps"):
        run(data, tmp_path / "r", batch_warmup_steps="4", per_device_batch_size="16", max_steps="4")


# ---- the masking-rate schedule ------------------------------------------------------------------------


def test_the_masking_rate_moves_from_its_start_to_its_end() -> None:
    schedule = MaskingSchedule(0.3, 0.15, steps=10)
    assert [schedule.rate(s) for s in (0, 5, 10, 20)] == pytest.approx([0.3, 0.225, 0.15, 0.15])
    assert MaskingSchedule(0.3).rate(100) == 0.3


def test_a_run_masks_at_the_scheduled_rate_for_both_architectures(data: Path, tmp_path: Path) -> None:
    for model, objective in (("tiny", "mlm_nsp"), ("modernbert-tiny", "mlm")):
        output = tmp_path / model
        run(data, output, model=model, objective=objective, mlm_probability="0.4", mlm_probability_end="0.1",
            max_steps="12", per_device_batch_size="16")
        rates = [m["masked_fraction"] for m in metrics(output)]
        assert np.mean(rates[:3]) > 0.3 and np.mean(rates[-3:]) < 0.2, (model, rates)
    with pytest.raises(BertpreError, match="mlm_probability_steps: this run has no step count"):
        run(data, tmp_path / "budget", max_tokens="5000", mlm_probability_end="0.1")
