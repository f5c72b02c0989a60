"""Packing and the attention layouts: the same sequences give the same numbers however they are laid out."""

from __future__ import annotations

import pytest
import torch

from bertpre.data.packing import last_layer_queries, pack_examples, pack_lengths, packed_batch, sequence_boundaries
from bertpre.model.attention import TokenLayout
from bertpre.model.bert import BertForPreTraining, BertForSequenceClassification

from .test_model import tiny_config

TOL = dict(atol=2e-5, rtol=1e-5)


def sequences(count: int, vocab: int = 1000, seed: int = 0, longest: int = 40) -> list[dict]:
    """``[CLS] A [SEP] B [SEP]`` examples of random lengths."""
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(count):
        a, b = (int(torch.randint(1, longest // 2, (), generator=generator)) for _ in range(2))
        ids = [2, *torch.randint(5, vocab, (a,), generator=generator).tolist(), 3,
               *torch.randint(5, vocab, (b,), generator=generator).tolist(), 3]
        examples.append({"input_ids": ids, "token_type_ids": [0] * (a + 2) + [1] * (b + 1),
                         "next_sentence_label": int(torch.randint(0, 2, (), generator=generator))})
    return examples


def segments(count: int, vocab: int = 1000, seed: int = 0, longest: int = 40) -> list[dict]:
    """``[CLS] segment [SEP]`` examples of random lengths, as `prepare --examples segments` makes them: token
    types 0 and no next-sentence label."""
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(count):
        length = int(torch.randint(1, longest - 1, (), generator=generator))
        ids = [2, *torch.randint(5, vocab, (length,), generator=generator).tolist(), 3]
        examples.append({"input_ids": ids, "token_type_ids": [0] * len(ids), "next_sentence_label": -100})
    return examples


def padded(examples: list[dict]) -> dict[str, torch.Tensor]:
    from bertpre.data.batching import pad_examples

    return pad_examples(examples, multiple_of=1)


def masks_for(examples: list[dict], seed: int = 1) -> list[list[int]]:
    """Per example, the positions to mask (never position 0, the [CLS])."""
    generator = torch.Generator().manual_seed(seed)
    return [[p for p in range(1, len(e["input_ids"])) if torch.rand((), generator=generator) < 0.3] for e in examples]


def flat_masked(batch: dict, starts: list[int], chosen: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat masked positions of each example's chosen positions, example by example, and their labels."""
    flat = batch["input_ids"].flatten()
    positions = torch.tensor([start + p for start, picks in zip(starts, chosen) for p in picks])
    return positions, flat[positions]


def test_best_fit_decreasing_fills_rows_and_keeps_every_sequence_once() -> None:
    lengths = [120, 5, 60, 64, 8, 3, 128, 70, 58, 1]
    rows = pack_lengths(lengths, 128)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 128 for row in rows)
    assert len(rows) == -(-sum(lengths) // 128)  # as few rows as the tokens allow, here
    assert pack_lengths(lengths, 128) == rows  # deterministic
    with pytest.raises(ValueError, match="does not fit"):
        pack_lengths([129], 128)


def test_a_packed_batch_numbers_sequences_restarts_positions_and_finds_each_cls() -> None:
    examples = sequences(9, seed=3)
    batch = pack_examples(examples, 64)
    assert batch["input_ids"].shape[0] < len(examples)  # several sequences share a row
    flat_ids = batch["input_ids"].flatten()
    for index, example in enumerate(examples):
        start = int(batch["cls_positions"][index])
        assert flat_ids[start:start + len(example["input_ids"])].tolist() == example["input_ids"]
        assert batch["position_ids"].flatten()[start:start + len(example["input_ids"])].tolist() == \
            list(range(len(example["input_ids"])))
    assert int(batch["attention_mask"].sum()) == sum(len(e["input_ids"]) for e in examples)
    boundaries = batch["cu_seqlens"].tolist()
    assert boundaries[0] == 0 and boundaries[-1] == int(batch["attention_mask"].sum()) and len(boundaries) == 10
    assert sorted(b - a for a, b in zip(boundaries, boundaries[1:])) == sorted(len(e["input_ids"]) for e in examples)


def test_sequence_boundaries_of_padded_rows() -> None:
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    assert sequence_boundaries(mask).tolist() == [0, 3, 5, 9]


def pretraining_pair(examples: list[dict], width: int, unpad: bool = False, dropout: float = 0.0):
    """The same sequences padded one per row and packed several per row, masked at the same tokens."""
    torch.manual_seed(0)
    config = tiny_config(vocab_size=1000, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    model = BertForPreTraining(config, unpad_inputs=unpad)
    chosen = masks_for(examples)
    flat = padded(examples)
    length = flat["input_ids"].shape[1]
    flat_positions, flat_labels = flat_masked(flat, [i * length for i in range(len(examples))], chosen)
    flat.update(masked_positions=flat_positions, masked_labels=flat_labels,
                next_sentence_label=torch.tensor([e["next_sentence_label"] for e in examples]))
    packed = pack_examples(examples, width)
    packed_positions, packed_labels = flat_masked(packed, packed["cls_positions"].tolist(), chosen)
    packed.update(masked_positions=packed_positions, masked_labels=packed_labels,
                  next_sentence_label=flat["next_sentence_label"])
    assert torch.equal(packed_labels, flat_labels)
    return model, flat, packed


@pytest.mark.parametrize("unpad", [False, True])
def test_packed_pretraining_gives_the_padded_losses_and_gradients(unpad: bool) -> None:
    examples = sequences(12, seed=5)
    model, flat, packed = pretraining_pair(examples, 96, unpad)
    assert packed["input_ids"].numel() < 0.7 * flat["input_ids"].numel()  # packing saved slots
    assert_same_losses_and_gradients(model, flat, packed)


@pytest.mark.parametrize("unpad", [False, True])
def test_packed_masked_lm_on_segments_gives_the_padded_loss_and_gradients(unpad: bool) -> None:
    model, flat, packed = pretraining_pair(segments(24, seed=5), 96, unpad)
    del flat["next_sentence_label"], packed["next_sentence_label"]  # as `pretrain --objective mlm` calls the model
    assert packed["input_ids"].numel() < flat["input_ids"].numel()  # packing saved slots
    assert_same_losses_and_gradients(model, flat, packed)


def assert_same_losses_and_gradients(model: BertForPreTraining, flat: dict, packed: dict) -> None:
    """The padded and the packed batch give the model the same logits, loss and gradients."""
    results = []
    for batch in (flat, packed):
        model.zero_grad()
        output = model(**batch)
        output.loss.backward()
        results.append((output, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (padded_out, padded_grads), (packed_out, packed_grads) = results
    torch.testing.assert_close(packed_out.mlm_logits, padded_out.mlm_logits, **TOL)
    torch.testing.assert_close(packed_out.nsp_logits, padded_out.nsp_logits, **TOL)
    torch.testing.assert_close(packed_out.loss, padded_out.loss, **TOL)
    assert packed_grads.keys() == padded_grads.keys()
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_without_position_and_sequence_ids_packed_rows_would_mix_sequences() -> None:
    """The packed inputs matter: the same rows read as one sequence each give other numbers."""
    model, flat, packed = pretraining_pair(sequences(12, seed=5), 96)
    model.eval()
    naive = {k: v for k, v in packed.items() if k not in ("position_ids", "sequence_ids", "cls_positions",
                                                          "token_indices", "cu_seqlens", "next_sentence_label")}
    with torch.no_grad():
        expected = model(**flat).mlm_logits
        assert not torch.allclose(model(**naive).mlm_logits, expected, atol=1e-3)
        torch.testing.assert_close(model(**packed).mlm_logits, expected, **TOL)


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_the_last_layer_at_masked_positions_and_cls_only_gives_the_same_loss(layout: str) -> None:
    model, flat, packed = pretraining_pair(sequences(10, seed=7), 96)
    batch = flat if layout == "padded" else packed
    subset = {**batch, **last_layer_queries(batch)}
    assert subset["last_layer_queries"].shape[1] < batch["input_ids"].shape[1]  # fewer queries than tokens
    outputs = []
    for inputs in (batch, subset):
        model.zero_grad()
        output = model(**inputs)
        output.loss.backward()
        outputs.append((output, [p.grad.clone() for p in model.parameters()]))
    (full, full_grads), (part, part_grads) = outputs
    torch.testing.assert_close(part.mlm_logits, full.mlm_logits, **TOL)
    torch.testing.assert_close(part.nsp_logits, full.nsp_logits, **TOL)
    torch.testing.assert_close(part.loss, full.loss, **TOL)
    for got, want in zip(part_grads, full_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("unpad", [False, True])
def test_packed_classification_gives_the_padded_logits_and_loss(unpad: bool) -> None:
    examples = sequences(16, seed=11)
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config(vocab_size=1000, num_labels=3), unpad_inputs=unpad).eval()
    labels = torch.tensor([i % 3 for i in range(len(examples))])
    flat, packed = padded(examples), pack_examples(examples, 128)
    with torch.no_grad():
        want = model(**flat, labels=labels)
        got = model(**packed, labels=labels)
    torch.testing.assert_close(got.logits, want.logits, **TOL)
    torch.testing.assert_close(got.loss, want.loss, **TOL)


def test_sliding_window_masks_keep_to_the_sequence_and_the_window() -> None:
    rows = packed_batch([[{"input_ids": [2] * 5, "token_type_ids": [0] * 5}, {"input_ids": [2] * 3,
                                                                             "token_type_ids": [0] * 3}]], 10)
    layout = TokenLayout.of(rows["attention_mask"], rows["input_ids"], rows["sequence_ids"])
    mask = layout.sdpa_mask(window=2)[0, 0]
    assert mask[0].tolist() == [True, True] + [False] * 8  # itself and one neighbour in its sequence
    assert mask[4].tolist() == [False] * 3 + [True, True] + [False] * 5  # not the next sequence's first token
    assert mask[5].tolist() == [False] * 5 + [True, True] + [False] * 3
    assert mask[9, 9] and mask[9].sum() == 1  # padding sees only itself


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_flex_attention_gives_the_sdpa_numbers(layout: str) -> None:
    """Flex attention's block masks (forward only on the CPU: inference) against SDPA's boolean masks."""
    examples = sequences(10, seed=13)
    batch = padded(examples) if layout == "padded" else pack_examples(examples, 96)
    torch.manual_seed(0)
    sdpa = BertForSequenceClassification(tiny_config(vocab_size=1000, num_labels=2)).eval()
    flex = BertForSequenceClassification(tiny_config(vocab_size=1000, num_labels=2), attention="flex").eval()
    flex.load_state_dict(sdpa.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(flex(**batch).logits, sdpa(**batch).logits, **TOL)


def test_a_kernel_the_device_cannot_run_is_refused_and_auto_picks_one_that_can() -> None:
    from bertpre.core.errors import BertpreError
    from bertpre.model.attention import choose_kernel

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    with pytest.raises(BertpreError, match="attention: varlen runs on CUDA only"):
        choose_kernel("varlen", cpu, 0.0, training=True)
    with pytest.raises(BertpreError, match="attention: flex trains on GPUs only"):
        choose_kernel("flex", cpu, 0.0, training=True)
    with pytest.raises(BertpreError, match="attention_probs_dropout_prob is 0.1"):
        choose_kernel("flex", gpu, 0.1, training=True)
    assert choose_kernel("flex", cpu, 0.1, training=False) == "flex"  # inference: no dropout, forward only
    assert choose_kernel("auto", cpu, 0.0, training=True) == "sdpa"
    assert choose_kernel("auto", gpu, 0.1, training=True) == "sdpa"  # BERT's attention dropout needs sdpa
    assert choose_kernel("auto", gpu, 0.0, training=True) == "varlen"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kernel", ["varlen", "flex"])
def test_gpu_kernels_train_like_sdpa_on_packed_rows(kernel: str) -> None:
    examples = sequences(24, seed=17)
    model, _, packed = pretraining_pair(examples, 128, unpad=kernel == "varlen")
    fast = BertForPreTraining(model.config, unpad_inputs=kernel == "varlen", attention=kernel)
    fast.load_state_dict(model.state_dict())
    model, fast = model.cuda(), fast.cuda()
    batch = {k: v.cuda() for k, v in packed.items()}
    results = []
    for m in (model, fast):
        m.zero_grad()
        loss = m(**batch).loss
        loss.backward()
        results.append((loss, [p.grad for p in m.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-4, rtol=1e-4)
    for got, want in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)


# ---- packed pretraining: the data order and a run ---------------------------------------------


def test_packed_rows_hold_every_sequence_once_and_steps_visit_every_row_once_an_epoch() -> None:
    import numpy as np

    from bertpre.data.data_order import BatchPlan, PackedRows

    lengths = np.random.default_rng(0).integers(8, 60, size=3000)
    rows = PackedRows.of(lengths, 128, seed=5)
    assert sorted(rows.members.tolist()) == list(range(3000))
    assert all(lengths[rows.row(r)].sum() <= 128 for r in range(len(rows)))
    assert rows.fill(lengths) > 0.97 and len(rows) < 3000 / 3
    assert np.array_equal(PackedRows.of(lengths, 128, seed=5).members, rows.members)  # a pure function of the seed
    one = BatchPlan(3000, 32, 8, world_size=1, seed=3, packed=rows)
    two = BatchPlan(3000, 32, 16, world_size=2, seed=3, packed=rows)
    assert one.steps_per_epoch == len(rows) // 32
    epoch = np.concatenate([one.indices(s, m, 0) for s in range(one.steps_per_epoch) for m in range(4)])
    assert len(np.unique(epoch)) == len(epoch) == one.steps_per_epoch * 32  # rows, each once
    for step in (0, 3, one.steps_per_epoch + 1):
        assert np.array_equal(np.concatenate([one.indices(step, m, 0) for m in range(4)]),
                              np.concatenate([two.indices(step, m, r) for m in range(2) for r in range(2)]))


@pytest.fixture(scope="module")
def short_documents(tmp_path_factory: pytest.TempPathFactory):
    """Pairs of 128 slots from documents of one paragraph: the speeches' paragraphs, mostly far shorter."""
    from .conftest import prepare_wiki64

    return prepare_wiki64(tmp_path_factory.mktemp("short") / "data", max_seq_length=128, short_seq_prob=0.6,
                          eval_fraction=0.1)


def run(data, output, **options: str):
    from bertpre.core.config import load_config
    from bertpre.core.configs import PretrainConfig
    from bertpre.training.pretrain import pretrain

    settings = {"data": str(data), "output": str(output), "model": "tiny", "global_batch_size": "8",
                "per_device_batch_size": "4", "warmup_steps": "2", "eval_every": "0", "log_every": "1",
                "report_to": "none", "cpu": "true", "num_workers": "0", "packing": "true", **options}
    return pretrain(load_config(PretrainConfig, None, settings), show_progress=False)


def test_a_packed_run_reads_more_sequences_per_step_and_resumes_exactly(short_documents, tmp_path) -> None:
    import json

    from safetensors.torch import load_file

    from bertpre.training.checkpoint import list_checkpoints

    whole = run(short_documents, tmp_path / "whole", max_steps="8", schedule_steps="8")
    lines = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "loss" in line]
    assert len(steps) == 8 and all(line["padding_fraction"] < 0.1 for line in steps)
    assert whole.tokens_seen > 8 * 8 * 64  # more than half of each step's slots hold real tokens
    state = json.loads((list_checkpoints(tmp_path / "whole")[-1] / "trainer_state.json").read_text())
    assert state["sequences_seen"] > 8 * 8  # more sequences than rows: several share a row
    run(short_documents, tmp_path / "parts", max_steps="4", schedule_steps="8")
    run(short_documents, tmp_path / "parts", max_steps="8", schedule_steps="8")  # resumes at step 4
    weights = [load_file(str(list_checkpoints(tmp_path / name)[-1] / "model.safetensors")) for name in ("whole", "parts")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
