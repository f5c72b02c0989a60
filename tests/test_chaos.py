"""No kill loses a run: SIGKILL at random moments (steps, checkpoint writes, metrics appends,
evaluations), resume each time, and the final weights are bit-identical to an uninterrupted run.
The full version: `python -m tests.chaos --kills 40` (see tests/chaos.py)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from .chaos import (final_weights, interrupt_and_rerun, kill_at_random_moments, run_to_the_end, stage_fixtures, stages,
                    time_to_finish)
from .conftest import prepare_wiki64


@pytest.mark.slow
def test_random_sigkills_and_resumes_end_bit_identical_to_an_uninterrupted_run(tmp_path: Path) -> None:
    data = prepare_wiki64(tmp_path / "data", eval_fraction=0.2)
    duration = run_to_the_end(data, tmp_path / "uninterrupted")
    moments = kill_at_random_moments(data, tmp_path / "killed", kills=6, duration=duration, rng=random.Random(7))
    assert len(moments) >= 4  # most attempts really killed a running job
    expected, got = final_weights(tmp_path / "uninterrupted"), final_weights(tmp_path / "killed")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    lines = [json.loads(line) for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    steps = [m["step"] for m in lines if "mlm_loss" in m]
    assert steps == list(range(1, 25))  # every step logged once, no cut-off or repeated line


@pytest.mark.slow
def test_interrupting_any_stage_leaves_its_output_complete_or_absent_and_a_rerun_works(tmp_path: Path) -> None:
    """Tokenizer training, prepare, export and fine-tuning, each stopped at a random moment of its work, by
    SIGINT, SIGKILL, SIGTERM and SIGKILL in turn (the full matrix, every stage by every signal at several
    moments: `python -m tests.chaos --stages`)."""
    rng = random.Random(11)
    outcomes = []
    for stage, sig in zip(stages(tmp_path, *stage_fixtures(tmp_path)), ["SIGINT", "SIGKILL", "SIGTERM", "SIGKILL"]):
        # a moment inside this stage's own work on this machine (prepare takes well under a second)
        outcomes.append(interrupt_and_rerun(stage, sig, rng.uniform(0.1, 0.8) * time_to_finish(stage)))
    assert sum("finished first" not in outcome for outcome in outcomes) >= 3, outcomes  # most really interrupted
