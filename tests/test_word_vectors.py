"""Token embeddings from co-occurrence counts (`--embedding-init cooccurrence`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bertpre.checkpoint import list_checkpoints, read_checkpoint_weights
from bertpre.config import load_config
from bertpre.configs import PretrainConfig
from bertpre.dataset import PretrainingData
from bertpre.errors import ConfigError
from bertpre.pretrain import pretrain
from bertpre.word_vectors import cooccurrence_vectors, token_stream

from .conftest import REPO, prepare_wiki64

TINY = str(REPO / "configs" / "model" / "tiny.yaml")


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


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_wiki64(tmp_path_factory.mktemp("word-vectors") / "wiki64", eval_fraction=0.2)


def run(data: Path, output: Path, **options: str) -> Path:
    settings = {"data": str(data), "output": str(output), "model": TINY, "global_batch_size": "8",
                "per_device_batch_size": "8", "warmup_steps": "1", "eval_every": "0", "eval_batches": "1",
                "log_every": "1", "num_workers": "0", "cpu": "true", "checkpoint_every": "2", **options}
    pretrain(load_config(PretrainConfig, None, settings), show_progress=False)
    return output


def test_pretraining_starts_from_the_data_s_word_vectors_and_counts_their_time(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = run(data, tmp_path / "vectors", embedding_init="cooccurrence", max_steps="1", learning_rate="1e-9")
    assert "token embeddings from co-occurrence" in capsys.readouterr().out
    train = PretrainingData(data, "train")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(data / "tokenizer")
    embeddings = read_checkpoint_weights(list_checkpoints(output)[-1])["bert.embeddings.word.weight"]
    expected = cooccurrence_vectors(*token_stream(*train.token_buffers(), seed=42), embeddings.shape[0],
                                    embeddings.shape[1], set(tokenizer.all_special_ids), seed=42)
    assert torch.allclose(embeddings[expected.seen], expected.vectors[expected.seen], atol=1e-6)
    random_start = read_checkpoint_weights(list_checkpoints(run(data, tmp_path / "random", max_steps="1",
                                                                learning_rate="1e-9"))[-1])
    assert not torch.allclose(random_start["bert.embeddings.word.weight"], embeddings, atol=1e-3)
    first_line = json.loads((output / "metrics.jsonl").read_text().splitlines()[0])
    assert first_line["elapsed_seconds"] > 0


def test_a_resumed_run_keeps_its_trained_embeddings(data: Path, tmp_path: Path) -> None:
    whole = run(data, tmp_path / "whole", embedding_init="cooccurrence", max_steps="4")
    part = tmp_path / "part"  # the same run, killed after its step-2 checkpoint
    shutil.copytree(whole, part)
    shutil.rmtree(list_checkpoints(part)[-1])
    run(data, part, embedding_init="cooccurrence", max_steps="4", resume="auto")
    assert [c.name for c in list_checkpoints(part)] == [c.name for c in list_checkpoints(whole)]
    a, b = (read_checkpoint_weights(list_checkpoints(out)[-1]) for out in (whole, part))
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_word_vectors_and_init_from_are_refused_together() -> None:
    with pytest.raises(ConfigError, match="embedding_init.*init_from"):
        load_config(PretrainConfig, None, {"init_from": "some/model", "embedding_init": "cooccurrence",
                                           "max_steps": "10"})
