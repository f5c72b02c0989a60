"""The model is numerically transformers' BERT; exports load in vanilla transformers; imports work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from transformers import (AutoModel, AutoModelForMaskedLM, AutoModelForPreTraining,
                          AutoModelForSequenceClassification, BertConfig, pipeline)

from bertpre.core.config import load_config
from bertpre.core.configs import ModelConfig
from bertpre.core.errors import BertpreError
from bertpre.model.hf_directory import export_model, load_pretrained
from bertpre.model.hf_format import to_hf_state_dict
from bertpre.model.bert import BertForPreTraining, BertForSequenceClassification, bert_config

from .conftest import REPO

TOL = dict(atol=1e-5, rtol=1e-5)


def tiny_config(**extra: object) -> BertConfig:
    model = load_config(ModelConfig, REPO / "configs" / "model" / "tiny.yaml")
    return bert_config(model, **extra)


def hf_twin(ours: torch.nn.Module, hf_class: type) -> torch.nn.Module:
    """The transformers model with exactly our weights."""
    hf = hf_class(BertConfig.from_dict(ours.config.to_dict()))
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(ours), strict=False)
    assert not unexpected
    assert set(missing) <= {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    hf.tie_weights()
    return hf.eval()


def random_batch(vocab_size: int, batch: int = 3, length: int = 24, padded: bool = True, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab_size, (batch, length), generator=generator)
    input_ids[:, 0] = 2
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    if padded:
        for row, pad in enumerate([0, 5, 11][:batch]):
            if pad:
                attention_mask[row, -pad:] = 0
                input_ids[row, -pad:] = 0
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, length // 2:] = 1
    token_type_ids *= attention_mask
    labels = torch.full_like(input_ids, -100)
    chosen = (torch.rand(input_ids.shape, generator=generator) < 0.3) & (attention_mask == 1)
    chosen[:, 0] = False
    labels[chosen] = input_ids[chosen]
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
            "labels": labels, "next_sentence_label": torch.tensor([0, 1, 1][:batch])}


def assert_pretraining_parity(ours: BertForPreTraining, batch: dict) -> None:
    ours.eval()
    hf = hf_twin(ours, transformers.BertForPreTraining)
    with torch.no_grad():
        expected = hf(**batch, output_hidden_states=True)
        got = ours(**batch)
        got_full = ours(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    chosen = batch["labels"] != -100
    valid = batch["attention_mask"].bool()
    torch.testing.assert_close(got.hidden_states[valid], expected.hidden_states[-1][valid], **TOL)
    torch.testing.assert_close(got.mlm_logits, expected.prediction_logits[chosen], **TOL)
    torch.testing.assert_close(got_full.mlm_logits[valid], expected.prediction_logits[valid], **TOL)
    torch.testing.assert_close(got.nsp_logits, expected.seq_relationship_logits, **TOL)
    torch.testing.assert_close(got.loss, expected.loss, **TOL)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("unpad_inputs", [False, True])
def test_tiny_model_matches_transformers_bert_for_pretraining(padded: bool, unpad_inputs: bool) -> None:
    torch.manual_seed(0)
    ours = BertForPreTraining(tiny_config(vocab_size=1000), unpad_inputs=unpad_inputs)
    assert_pretraining_parity(ours, random_batch(1000, padded=padded))


def test_unpadded_training_step_gives_the_padded_paths_gradients() -> None:
    config = tiny_config(vocab_size=1000, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    padded = BertForPreTraining(config).train()
    unpadded = BertForPreTraining(config, unpad_inputs=True).train()
    unpadded.load_state_dict(padded.state_dict())
    batch = random_batch(1000, batch=3, length=32, seed=4)
    assert batch["attention_mask"].float().mean() < 0.9  # a real share of padding
    losses = [model(**batch).loss for model in (padded, unpadded)]
    for loss in losses:
        loss.backward()
    torch.testing.assert_close(losses[1], losses[0], **TOL)
    for (name, p), q in zip(padded.named_parameters(), unpadded.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_compact_masked_positions_give_the_same_loss_as_dense_labels() -> None:
    torch.manual_seed(0)
    ours = BertForPreTraining(tiny_config(vocab_size=1000)).eval()
    batch = random_batch(1000)
    positions = torch.nonzero(batch["labels"].flatten() != -100).flatten()
    compact = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        dense = ours(**batch)
        fast = ours(**compact, masked_positions=positions, masked_labels=batch["labels"].flatten()[positions])
    torch.testing.assert_close(fast.loss, dense.loss, atol=0, rtol=0)
    assert fast.mlm_logits.shape == (len(positions), 1000)


@pytest.mark.parametrize("padded", [False, True])
def test_real_pretrained_config_matches_transformers(minilm_dir: Path, padded: bool) -> None:
    ours, report = load_pretrained(minilm_dir)
    assert "masked-LM head (cls.predictions)" in report.newly_initialized
    assert "next-sentence head (cls.seq_relationship)" in report.newly_initialized
    assert "pooler (bert.pooler)" not in report.newly_initialized
    assert_pretraining_parity(ours, random_batch(30522, padded=padded, seed=1))
    # and the encoder itself equals transformers' BertModel loaded straight from the package
    hf = AutoModel.from_pretrained(minilm_dir).eval()
    batch = random_batch(30522, padded=padded, seed=2)
    with torch.no_grad():
        expected = hf(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).last_hidden_state
        got = ours.bert(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    valid = batch["attention_mask"].bool()
    torch.testing.assert_close(got[valid], expected[valid], **TOL)


@pytest.mark.parametrize("num_labels", [1, 3])
@pytest.mark.parametrize("unpad_inputs", [False, True])
def test_sequence_classification_matches_transformers(num_labels: int, unpad_inputs: bool) -> None:
    torch.manual_seed(0)
    config = tiny_config(vocab_size=1000, num_labels=num_labels)
    ours = BertForSequenceClassification(config, unpad_inputs=unpad_inputs).eval()
    hf = hf_twin(ours, transformers.BertForSequenceClassification)
    batch = random_batch(1000)
    labels = torch.tensor([0.5, -1.0, 2.0]) if num_labels == 1 else torch.tensor([0, 2, 1])
    inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    with torch.no_grad():
        expected = hf(**inputs, labels=labels)
        got = ours(**inputs, labels=labels)
    torch.testing.assert_close(got.logits, expected.logits, **TOL)
    torch.testing.assert_close(got.loss, expected.loss, **TOL)


def test_initialisation_follows_bert() -> None:
    torch.manual_seed(0)
    model = BertForPreTraining(tiny_config(vocab_size=5000))
    weights = model.bert.layers[0].ffn_in.weight
    assert abs(weights.std().item() - 0.02) < 0.001 and abs(weights.mean().item()) < 0.001
    assert abs(model.bert.embeddings.word.weight[1:].std().item() - 0.02) < 0.001
    assert torch.all(model.bert.embeddings.word.weight[0] == 0)  # [PAD]
    for name, parameter in model.named_parameters():
        if name.endswith("bias"):
            assert torch.all(parameter == 0), name
        if "norm" in name and name.endswith("weight"):
            assert torch.all(parameter == 1), name
    assert model.mlm.word_embeddings.weight is model.bert.embeddings.word.weight  # tied decoder


# ---- export → vanilla transformers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BertForPreTraining]:
    torch.manual_seed(0)
    model = BertForPreTraining(tiny_config(vocab_size=30522))
    output = tmp_path_factory.mktemp("export") / "tiny"
    export_model(model, output, tokenizer_dir=REPO / "tokenizer")
    return output, model


def test_export_writes_vanilla_files(exported) -> None:
    directory, model = exported
    names = {p.name for p in directory.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "tokenizer_config.json"} <= names
    config = BertConfig.from_pretrained(directory)
    assert config.model_type == "bert" and config.architectures == ["BertForPreTraining"]
    from safetensors import safe_open

    with safe_open(str(directory / "model.safetensors"), "pt") as handle:
        keys = set(handle.keys())
    reference = transformers.BertForPreTraining(config)
    tied = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    assert keys == set(reference.state_dict()) - tied


@pytest.mark.parametrize("auto_class", [AutoModel, AutoModelForMaskedLM, AutoModelForPreTraining,
                                        transformers.BertForPreTraining, AutoModelForSequenceClassification])
def test_vanilla_transformers_loads_the_export(exported, auto_class) -> None:
    directory, _ = exported
    model, info = auto_class.from_pretrained(directory, output_loading_info=True)
    missing = set(info["missing_keys"])
    if auto_class is AutoModelForSequenceClassification:
        assert missing == {"classifier.weight", "classifier.bias"}
    else:
        assert not missing
    assert not info["mismatched_keys"]
    allowed_unexpected = {
        AutoModel: ("cls.",), AutoModelForMaskedLM: ("cls.seq_relationship", "bert.pooler"),
        AutoModelForSequenceClassification: ("cls.",),
    }.get(auto_class, ())
    assert all(key.startswith(allowed_unexpected) for key in info["unexpected_keys"]), info["unexpected_keys"]


def test_transformers_outputs_equal_ours_after_export(exported) -> None:
    directory, model = exported
    hf = transformers.BertForPreTraining.from_pretrained(directory).eval()
    model.eval()
    batch = random_batch(30522)
    with torch.no_grad():
        expected = hf(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        got = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    valid = batch["attention_mask"].bool()
    torch.testing.assert_close(got.mlm_logits[valid], expected.prediction_logits[valid], **TOL)
    torch.testing.assert_close(got.nsp_logits, expected.seq_relationship_logits, **TOL)


def test_fill_mask_pipeline_runs_on_the_export(exported) -> None:
    directory, _ = exported
    fill = pipeline("fill-mask", model=str(directory))
    predictions = fill("the capital of france is [MASK].")
    assert len(predictions) == 5 and all("token_str" in p for p in predictions)


def test_round_trip_through_transformers_is_bit_identical(exported, tmp_path: Path) -> None:
    directory, model = exported
    hf = transformers.BertForPreTraining.from_pretrained(directory)
    hf.save_pretrained(tmp_path / "resaved")
    again, report = load_pretrained(tmp_path / "resaved")
    assert report.newly_initialized == []
    original, restored = model.state_dict(), again.state_dict()
    assert original.keys() == restored.keys()
    for name in original:
        assert torch.equal(original[name], restored[name]), name


def test_classifier_export_loads_for_sequence_classification(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config(vocab_size=30522, num_labels=3)).eval()
    export_model(model, tmp_path / "clf", tokenizer_dir=REPO / "tokenizer")
    hf, info = AutoModelForSequenceClassification.from_pretrained(tmp_path / "clf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    batch = random_batch(30522)
    inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, hf.eval()(**inputs).logits, **TOL)
    reloaded, report = load_pretrained(tmp_path / "clf", task="classification", num_labels=3)
    assert report.newly_initialized == [] and torch.equal(reloaded.classifier.weight, model.classifier.weight)


# ---- import errors ------------------------------------------------------------------------------


def test_import_refuses_non_bert_and_pickled_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(BertpreError, match="model_type is 'gpt2'; bertpre loads bert and modernbert models only"):
        load_pretrained(tmp_path / "gpt")
    (tmp_path / "old").mkdir()
    BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=64).save_pretrained(tmp_path / "old")
    (tmp_path / "old" / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(BertpreError, match="no model.safetensors .found pytorch_model.bin"):
        load_pretrained(tmp_path / "old")


def test_export_refuses_a_tokenizer_of_another_size(tmp_path: Path) -> None:
    model = BertForPreTraining(tiny_config(vocab_size=1000))
    with pytest.raises(BertpreError, match="tokenizer has 30522 tokens but the model's vocab_size is 1000"):
        export_model(model, tmp_path / "out", tokenizer_dir=REPO / "tokenizer")
    assert not (tmp_path / "out").exists()


# ---- GPU: bf16 against the fp32 reference -------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("unpad_inputs", [False, True])
def test_bf16_on_gpu_matches_fp32_reference_within_bf16_tolerance(unpad_inputs: bool) -> None:
    torch.manual_seed(0)
    config = bert_config(load_config(ModelConfig, REPO / "configs" / "model" / "base.yaml"))
    ours = BertForPreTraining(config, unpad_inputs=unpad_inputs).cuda().eval()
    hf = hf_twin(ours, transformers.BertForPreTraining).cuda()
    batch = {k: v.cuda() for k, v in random_batch(30522, batch=3, length=128).items()}
    with torch.no_grad():
        reference = hf(**batch)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            got = ours(**batch)
    chosen = batch["labels"] != -100
    mlm_error = (got.mlm_logits.float() - reference.prediction_logits[chosen]).abs()
    print(f"\nbf16 vs fp32: MLM logits max {mlm_error.max():.4f} mean {mlm_error.mean():.5f}; "
          f"loss {got.loss.item():.5f} vs {reference.loss.item():.5f}")
    assert mlm_error.mean() < 0.02 and mlm_error.max() < 0.25
    assert abs(got.loss.item() - reference.loss.item()) < 0.02 * reference.loss.item()
