"""bertpre's pairs against google-research/bert's reference algorithm, on the same sentences and vocabulary.

The reference's figures are in tests/assets/reference_pair_stats.json, written by
`python jobs/reference_pair_stats.py --bert-dir PATH/TO/google-research/bert` (how and why: see
tests/pair_reference.py). bertpre must match its instances, mean length and full-length fraction
within 1%, and keep IsNext at 50% where the reference falls to 45-47%.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bertpre.core.configs import PrepareConfig
from bertpre.data.dataset import PretrainingData
from bertpre.data.prepare import prepare_pretraining_data

from .conftest import REPO, SHARED_DATA, shared_path
from .pair_reference import DUPE_FACTOR, MAX_SEQ_LENGTH, SEED, build_corpora, mixture, pair_statistics

REFERENCE = json.loads((REPO / "tests" / "assets" / "reference_pair_stats.json").read_text())


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    shared_path("pretrain/wikipedia_samples/enwiki_gensim_106docs.txt")
    shared_path("pretrain/inaugural")
    return build_corpora(SHARED_DATA, tmp_path_factory.mktemp("reference-corpora"))


def bertpre_statistics(corpus: Path, short_seq_prob: float, output: Path) -> dict[str, float]:
    prepare_pretraining_data(PrepareConfig(
        inputs=[str(corpus)], output=str(output), tokenizer=str(REPO / "tokenizer"), max_seq_length=MAX_SEQ_LENGTH,
        short_seq_prob=short_seq_prob, dupe_factor=DUPE_FACTOR, seed=SEED, eval_fraction=0, num_workers=1),
        show_progress=False)
    data = PretrainingData(output, "train")
    is_next = data.table.column("next_sentence_label").to_numpy() == 0
    return pair_statistics(data.lengths().tolist(), is_next.tolist())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wikipedia", "inaugural"])
def test_pairs_match_the_reference_statistics_within_one_percent_with_balanced_is_next(
        name: str, corpora: dict[str, Path], tmp_path: Path) -> None:
    ours = mixture(*(bertpre_statistics(corpora[name], p, tmp_path / str(p)) for p in (0.0, 1.0)))
    reference = REFERENCE["corpora"][name]["short_seq_prob_0.1"]
    for key in ("instances", "mean_length", "full_length_fraction"):
        assert ours[key] == pytest.approx(reference[key], rel=0.01), f"{key}: {ours[key]} vs reference {reference[key]}"
    assert abs(ours["is_next_fraction"] - 0.5) <= 0.01
    assert reference["is_next_fraction"] < 0.48  # the bias the deliberate deviation removes
    assert np.isclose(REFERENCE["dupe_factor"], DUPE_FACTOR) and REFERENCE["seed"] == SEED
