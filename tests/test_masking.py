"""Dynamic MLM masking: rates, 80/10/10, special tokens, whole words, compact form, determinism."""

from __future__ import annotations


import pytest
import torch
from transformers import AutoTokenizer

from bertpre.core.configs import PrepareConfig
from bertpre.data.dataset import PretrainingData
from bertpre.data.masking import IGNORE_INDEX, MaskingCollator
from bertpre.data.prepare import prepare_pretraining_data

from .conftest import REPO, english_articles


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(REPO / "tokenizer")


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    output = tmp_path_factory.mktemp("mask") / "data"
    config = PrepareConfig(inputs=[str(english_articles())], output=str(output),
                           tokenizer=str(REPO / "tokenizer"), num_workers=1, eval_fraction=0)
    prepare_pretraining_data(config, show_progress=False)
    data = PretrainingData(output)
    return [data.example(i) for i in range(len(data))]


def masked_batch(collator: MaskingCollator, examples: list[dict], seed: int = 0) -> tuple[dict, torch.Tensor]:
    original = collator.pad(examples)["input_ids"]
    batch = collator(examples, generator=torch.Generator().manual_seed(seed))
    return batch, original


def test_rates_are_15_percent_and_80_10_10(tokenizer, examples) -> None:
    collator = MaskingCollator.from_tokenizer(tokenizer)
    batch, original = masked_batch(collator, examples)
    candidates = (original >= 5)
    chosen = batch["labels"] != IGNORE_INDEX
    assert candidates.sum() > 100_000
    rate = chosen.sum() / candidates.sum()
    assert abs(rate - 0.15) < 0.005, rate
    corrupted = batch["input_ids"][chosen]
    truth = original[chosen]
    as_mask = (corrupted == tokenizer.mask_token_id).float().mean()
    unchanged = (corrupted == truth).float().mean()
    random_other = 1 - as_mask - unchanged
    assert abs(as_mask - 0.8) < 0.01 and abs(unchanged - 0.1) < 0.01 and abs(random_other - 0.1) < 0.01
    assert torch.equal(batch["input_ids"][~chosen], original[~chosen])  # nothing else changes
    assert (batch["input_ids"][chosen] >= 4).all()  # random replacements are never special tokens


def test_configurable_rate(tokenizer, examples) -> None:
    batch, original = masked_batch(MaskingCollator.from_tokenizer(tokenizer, mlm_probability=0.3), examples)
    rate = (batch["labels"] != IGNORE_INDEX).sum() / (original >= 5).sum()
    assert abs(rate - 0.3) < 0.006


@pytest.mark.parametrize("whole_word", [False, True])
def test_special_tokens_and_padding_are_never_chosen(tokenizer, examples, whole_word: bool) -> None:
    batch, original = masked_batch(MaskingCollator.from_tokenizer(tokenizer, whole_word=whole_word), examples)
    chosen = batch["labels"] != IGNORE_INDEX
    assert not chosen[original < 5].any()
    assert not chosen[batch["attention_mask"] == 0].any()
    assert torch.equal(batch["input_ids"][original < 5], original[original < 5])


def test_whole_word_masking_never_splits_a_word(tokenizer, examples) -> None:
    collator = MaskingCollator.from_tokenizer(tokenizer, whole_word=True)
    batch, original = masked_batch(collator, examples)
    chosen = batch["labels"] != IGNORE_INDEX
    continuation = collator.continuation[original]
    words_checked = 0
    for row in range(original.shape[0]):
        start = None
        for position in range(original.shape[1] + 1):
            at_end = position == original.shape[1] or original[row, position] < 5
            if at_end or not continuation[row, position]:
                if start is not None:  # close the word [start, position)
                    states = chosen[row, start:position]
                    assert states.all() or not states.any()
                    words_checked += position - start > 1
                start = None if at_end else position
    assert words_checked > 1000
    rate = chosen.sum() / (original >= 5).sum()
    assert 0.12 < rate < 0.18  # words are longer than pieces, so the piece rate moves a little


def test_compact_form_matches_dense_labels(tokenizer, examples) -> None:
    batch, original = masked_batch(MaskingCollator.from_tokenizer(tokenizer), examples[:64])
    labels = batch["labels"].flatten()
    expected_positions = torch.nonzero(labels != IGNORE_INDEX).flatten()
    assert torch.equal(batch["masked_positions"], expected_positions)
    assert torch.equal(batch["masked_labels"], original.flatten()[expected_positions])


def test_padding_to_a_multiple_of_eight_with_attention_mask(tokenizer) -> None:
    collator = MaskingCollator.from_tokenizer(tokenizer)
    examples = [{"input_ids": [2, 10, 11, 3, 12, 3], "token_type_ids": [0, 0, 0, 0, 1, 1], "next_sentence_label": 1},
                {"input_ids": [2, 10, 3, 12, 3], "token_type_ids": [0, 0, 0, 1, 1], "next_sentence_label": 0}]
    batch = collator(examples, generator=torch.Generator().manual_seed(0))
    assert batch["input_ids"].shape == (2, 8)
    assert batch["attention_mask"].tolist() == [[1] * 6 + [0] * 2, [1] * 5 + [0] * 3]
    assert batch["token_type_ids"][0].tolist() == [0, 0, 0, 0, 1, 1, 0, 0]
    assert batch["next_sentence_label"].tolist() == [1, 0]


def test_same_seed_masks_the_same_way(tokenizer, examples) -> None:
    collator = MaskingCollator.from_tokenizer(tokenizer, whole_word=True)
    first, _ = masked_batch(collator, examples[:32], seed=5)
    again, _ = masked_batch(collator, examples[:32], seed=5)
    other, _ = masked_batch(collator, examples[:32], seed=6)
    assert torch.equal(first["input_ids"], again["input_ids"]) and torch.equal(first["labels"], again["labels"])
    assert not torch.equal(first["labels"], other["labels"])
