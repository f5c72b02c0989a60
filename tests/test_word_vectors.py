"""Starts from the data's statistics: token embeddings from co-occurrence counts (`--embedding-init
cooccurrence`) and the masked-LM bias from unigram frequencies (`--mlm-bias-init unigram`)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bertpre.training.checkpoint import list_checkpoints, read_checkpoint_weights
from bertpre.core.config import load_config
from bertpre.core.configs import PretrainConfig
from bertpre.data.dataset import PretrainingData
from bertpre.core.errors import ConfigError
from bertpre.training.word_vectors import WordVectors, cooccurrence_vectors, token_stream, unigram_log_probabilities

from .conftest import pretrain_tiny



def synthetic_stream(rng: np.random.Generator, examples: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Ids 10 and 11 share their contexts (20-29); id 12 lives among 30-39; 1 and 2 are specials everywhere."""
    offsets, values = [0], []
    for _ in range(examples):
        word = int(rng.choice([10, 11, 12]))
        context = rng.integers(20, 30, 6) if word != 12 else rng.integers(30, 40, 6)
        values += [1, *context[:3].tolist(), word, *context[3:].tolist(), 2]
        offsets.append(len(values))
    return np.array(offsets), np.array(values, dtype=np.int32)


def cosine(vectors: torch.Tensor, a: int, b: int) -> float:
    return float(torch.nn.functional.cosine_similarity(vectors[a], vectors[b], dim=0))


def test_tokens_that_share_contexts_get_similar_vectors() -> None:
    offsets, values = synthetic_stream(np.random.default_rng(0), examples=2000)
    ids, example = token_stream(offsets, values)
    result = cooccurrence_vectors(ids, example, vocab_size=64, dim=8, special_ids={1, 2}, scale=0.02)
    vectors = result.vectors
    assert cosine(vectors, 10, 11) > 0.95 and abs(cosine(vectors, 10, 12)) < 0.1
    # specials and ids never seen keep BERT's random start; the seen rows are scaled like it
    assert not result.seen[[1, 2, 50]].any() and result.seen[[10, 11, 12, 20, 39]].all()
    assert float(vectors[result.seen].std()) == pytest.approx(0.02, rel=0.05)
    assert float(vectors[~result.seen].std()) == pytest.approx(0.02, rel=0.2)


def test_pairs_never_cross_from_one_example_into_the_next() -> None:
    # 5 ends every example and 6 starts the next: adjacent in the stream, never in one example
    offsets = np.arange(0, 201, 4)
    values = np.tile(np.array([6, 7, 8, 5], dtype=np.int32), 50)
    ids, example = token_stream(offsets, values)
    crossing = cooccurrence_vectors(ids, example, 16, 4, special_ids=set())
    merged = cooccurrence_vectors(ids, np.zeros_like(example), 16, 4, special_ids=set())
    assert not torch.equal(crossing.vectors, merged.vectors)
    assert crossing.seen[[5, 6, 7, 8]].all()


def test_a_sample_of_whole_examples_when_the_data_is_large() -> None:
    offsets, values = synthetic_stream(np.random.default_rng(1), examples=1000)
    ids, example = token_stream(offsets, values, max_tokens=2000, seed=3)
    assert 2000 <= len(ids) <= 2000 + 9 and len(ids) % 9 == 0  # whole 9-token examples only
    assert np.array_equal(ids, token_stream(offsets, values, max_tokens=2000, seed=3)[0])
    assert not np.array_equal(ids, token_stream(offsets, values, max_tokens=2000, seed=4)[0])


@pytest.fixture
def data(wiki64_with_eval: Path) -> Path:
    return wiki64_with_eval


def run(data: Path, output: Path, **options: str) -> Path:
    return pretrain_tiny(data, output, **{"global_batch_size": "8", "per_device_batch_size": "8", "warmup_steps": "1",
                                          "eval_batches": "1", "checkpoint_every": "2", **options})


def test_pretraining_starts_from_the_data_s_word_vectors_and_counts_their_time(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = run(data, tmp_path / "vectors", embedding_init="cooccurrence", embedding_window="2", max_steps="1",
                 learning_rate="1e-9")
    assert "token embeddings from co-occurrence (PPMI + SVD, window 2" in capsys.readouterr().out
    train = PretrainingData(data, "train")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(data / "tokenizer")
    embeddings = read_checkpoint_weights(list_checkpoints(output)[-1])["bert.embeddings.word.weight"]

    def vectors(window: int) -> WordVectors:
        return cooccurrence_vectors(*token_stream(*train.token_buffers(), seed=42), embeddings.shape[0],
                                    embeddings.shape[1], set(tokenizer.all_special_ids), window=window, seed=42)

    expected, wider = vectors(2), vectors(5)
    assert torch.allclose(embeddings[expected.seen], expected.vectors[expected.seen], atol=1e-6)
    assert not torch.allclose(embeddings[wider.seen], wider.vectors[wider.seen], atol=1e-3)
    random_start = read_checkpoint_weights(list_checkpoints(run(data, tmp_path / "random", max_steps="1",
                                                                learning_rate="1e-9"))[-1])
    assert not torch.allclose(random_start["bert.embeddings.word.weight"], embeddings, atol=1e-3)
    first_line = json.loads((output / "metrics.jsonl").read_text().splitlines()[0])
    assert first_line["elapsed_seconds"] > 0


def test_a_resumed_run_keeps_its_trained_embeddings_and_bias(data: Path, tmp_path: Path) -> None:
    starts = {"embedding_init": "cooccurrence", "mlm_bias_init": "unigram"}
    whole = run(data, tmp_path / "whole", max_steps="4", **starts)
    part = tmp_path / "part"  # the same run, killed after its step-2 checkpoint
    shutil.copytree(whole, part)
    shutil.rmtree(list_checkpoints(part)[-1])
    run(data, part, max_steps="4", resume="auto", **starts)
    assert [c.name for c in list_checkpoints(part)] == [c.name for c in list_checkpoints(whole)]
    a, b = (read_checkpoint_weights(list_checkpoints(out)[-1]) for out in (whole, part))
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_word_vectors_or_unigram_bias_and_init_from_are_refused_together() -> None:
    with pytest.raises(ConfigError, match="embedding_init.*init_from"):
        load_config(PretrainConfig, None, {"init_from": "some/model", "embedding_init": "cooccurrence",
                                           "max_steps": "10"})
    with pytest.raises(ConfigError, match="mlm_bias_init.*init_from"):
        load_config(PretrainConfig, None, {"init_from": "some/model", "mlm_bias_init": "unigram", "max_steps": "10"})


def test_unigram_log_probabilities_follow_the_counts_and_leave_specials_out() -> None:
    ids = np.array([5] * 60 + [6] * 30 + [7] * 10 + [1] * 50)  # 1 is special
    log_probs = unigram_log_probabilities(ids, vocab_size=10, special_ids={1, 2}, smoothing=0.1)
    probs = log_probs.exp()
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(probs[5] / probs[6]) == pytest.approx(60.1 / 30.1, rel=1e-5)
    assert float(probs[6] / probs[7]) == pytest.approx(30.1 / 10.1, rel=1e-5)
    assert float(log_probs[1]) == float(log_probs[2]) == float(log_probs[9])  # specials as unseen ids
    assert float(probs[5]) == pytest.approx(60.1 / (100 + 0.1 * 10), rel=1e-5)


def test_the_masked_lm_starts_from_unigram_frequencies_instead_of_uniform(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = run(data, tmp_path / "unigram", mlm_bias_init="unigram", max_steps="1", learning_rate="1e-9")
    assert "masked-LM bias from the unigram frequencies" in capsys.readouterr().out
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(data / "tokenizer")
    train = PretrainingData(data, "train")
    bias = read_checkpoint_weights(list_checkpoints(output)[-1])["mlm.bias"]
    expected = unigram_log_probabilities(token_stream(*train.token_buffers(), seed=42)[0], bias.shape[0],
                                         set(tokenizer.all_special_ids))
    assert torch.allclose(bias, expected, atol=1e-6)
    zeros = run(data, tmp_path / "zeros", max_steps="1", learning_rate="1e-9")
    first_loss = {out.name: json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["mlm_loss"]
                  for out in (output, zeros)}
    uniform = math.log(bias.shape[0])
    # a random model with zero bias predicts about uniformly; the unigram start is nats better at once
    assert first_loss["zeros"] == pytest.approx(uniform, abs=0.5)
    assert first_loss["unigram"] < uniform - 1.5


def test_frozen_embeddings_keep_the_word_vectors_while_the_layers_train(data: Path, tmp_path: Path) -> None:
    start = read_checkpoint_weights(list_checkpoints(run(data, tmp_path / "start", embedding_init="cooccurrence",
                                                         max_steps="1", learning_rate="1e-9"))[-1])
    frozen = read_checkpoint_weights(list_checkpoints(run(data, tmp_path / "frozen", embedding_init="cooccurrence",
                                                          max_steps="3", learning_rate="1e-3",
                                                          embedding_lr_scale="0"))[-1])
    # the start run took one step at lr 1e-9 (an Adam step moves a weight by about the learning rate)
    assert torch.allclose(frozen["bert.embeddings.word.weight"], start["bert.embeddings.word.weight"], rtol=0,
                          atol=1e-7)
    layer = next(name for name in frozen if name.endswith("qkv.weight"))
    assert not torch.allclose(frozen[layer], start[layer], atol=1e-4)


def test_the_embeddings_learn_at_their_own_multiple_of_the_learning_rate() -> None:
    from bertpre.core.configs import ModelConfig
    from bertpre.model.bert import BertForPreTraining, bert_config
    from bertpre.training.optim import build_optimizer, build_scheduler

    model = BertForPreTraining(bert_config(ModelConfig.of_size("tiny", vocab_size=100)))
    embeddings = model.bert.embeddings.word.weight
    optimizer = build_optimizer(model, "adamw", 1e-3, 0.01, embedding_lr_scale=0.1)
    scheduler = build_scheduler(optimizer, warmup_steps=2, total_steps=10)
    own = [group for group in optimizer.param_groups if any(p is embeddings for p in group["params"])]
    assert len(own) == 1 and own[0]["params"] == [embeddings] and own[0]["weight_decay"] == 0.01
    others = [group for group in optimizer.param_groups if group is not own[0]]
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(list(model.parameters()))
    for _ in range(3):
        optimizer.step()
        scheduler.step()
        assert own[0]["lr"] == pytest.approx(0.1 * others[0]["lr"]) and others[0]["lr"] > 0
    with pytest.raises(ConfigError, match="embedding_lr_scale"):
        load_config(PretrainConfig, None, {"embedding_lr_scale": "-1", "max_steps": "10"})
