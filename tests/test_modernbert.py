"""ModernBERT: the same weights give transformers' ModernBertForMaskedLM / ModernBertForSequenceClassification
logits (fp32, ≤ 1e-4), padded and packed, local and global layers, sequences longer than the window; exports
load in vanilla transformers; transformers' own checkpoints load into ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from transformers import ModernBertConfig

from bertpre.core.configs import ModelConfig
from bertpre.core.errors import BertpreError
from bertpre.data.packing import last_layer_queries, pack_examples
from bertpre.model.architectures import hf_config, to_hf_state_dict
from bertpre.model.hf_directory import export_model, load_pretrained
from bertpre.model.modernbert import ModernBertForMaskedLM, ModernBertForSequenceClassification

from .conftest import REPO

TOL = dict(atol=1e-4, rtol=1e-4)
WINDOW = 8  # local layers see 4 tokens on either side: shorter than the sequences below


def tiny_config(**extra: object) -> ModernBertConfig:
    model = ModelConfig.of_size("modernbert-tiny", vocab_size=1000, hidden_size=64, num_attention_heads=4,
                                intermediate_size=96, local_attention=WINDOW)
    return hf_config(model, **extra)


def reference(ours: torch.nn.Module, hf_class: type) -> torch.nn.Module:
    """transformers' model with exactly our weights."""
    config = ModernBertConfig.from_dict(ours.config.to_dict())
    config._attn_implementation = "sdpa"
    hf = hf_class(config)
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(ours), strict=False)
    assert not unexpected and set(missing) <= {"decoder.weight"}
    if hasattr(hf, "tie_weights"):
        hf.tie_weights()
    return hf.eval()


def examples(count: int = 5, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    result = []
    for _ in range(count):
        length = int(torch.randint(10, 30, (), generator=generator))
        ids = [2, *torch.randint(5, 1000, (length - 2,), generator=generator).tolist(), 3]
        result.append({"input_ids": ids, "token_type_ids": [0] * length})
    return result


def padded(batch: list[dict]) -> dict[str, torch.Tensor]:
    from bertpre.data.batching import pad_examples

    return pad_examples(batch, multiple_of=1)


def test_the_config_alternates_global_and_local_layers_and_ties_the_decoder() -> None:
    config = tiny_config()
    assert config.layer_types == ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    model = ModernBertForMaskedLM(config)
    assert model.decoder.weight is model.model.embeddings.tok_embeddings.weight
    assert not any(name.endswith(".bias") for name, _ in model.named_parameters() if "decoder" not in name)


@pytest.mark.parametrize("unpad", [False, True])
def test_masked_lm_matches_transformers_padded_with_local_and_global_layers(unpad: bool) -> None:
    torch.manual_seed(0)
    ours = ModernBertForMaskedLM(tiny_config(), unpad_inputs=unpad).eval()
    hf = reference(ours, transformers.ModernBertForMaskedLM)
    batch = padded(examples())
    assert batch["input_ids"].shape[1] > 2 * WINDOW  # local layers must cut attention
    with torch.no_grad():
        expected = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        got = ours(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).mlm_logits
    valid = batch["attention_mask"].bool()
    torch.testing.assert_close(got[valid], expected[valid], **TOL)


def test_a_wrong_window_would_show() -> None:
    """The parity above is not vacuous: a global-only ModernBERT gives other logits."""
    torch.manual_seed(0)
    ours = ModernBertForMaskedLM(tiny_config()).eval()
    wide = ModernBertForMaskedLM(tiny_config(local_attention=4 * WINDOW)).eval()
    wide.load_state_dict(ours.state_dict())
    batch = padded(examples())
    with torch.no_grad():
        assert not torch.allclose(ours(**batch).mlm_logits, wide(**batch).mlm_logits, atol=1e-3)


def test_packed_rows_give_the_logits_of_each_sequence_run_alone() -> None:
    torch.manual_seed(0)
    ours = ModernBertForMaskedLM(tiny_config()).eval()
    hf = reference(ours, transformers.ModernBertForMaskedLM)
    sequences = examples(7, seed=3)
    packed = pack_examples(sequences, 64)
    assert packed["input_ids"].shape[0] < len(sequences)
    with torch.no_grad():
        logits = ours(**packed).mlm_logits.flatten(0, 1)
        for index, sequence in enumerate(sequences):
            ids = torch.tensor([sequence["input_ids"]])
            alone = hf(input_ids=ids).logits[0]
            start = int(packed["cls_positions"][index])
            torch.testing.assert_close(logits[start:start + ids.shape[1]], alone, **TOL)


def test_compact_masked_positions_and_the_last_layer_at_them_give_the_same_loss() -> None:
    torch.manual_seed(0)
    ours = ModernBertForMaskedLM(tiny_config()).eval()
    hf = reference(ours, transformers.ModernBertForMaskedLM)
    batch = padded(examples(4, seed=5))
    labels = torch.full_like(batch["input_ids"], -100)
    chosen = (torch.rand(labels.shape, generator=torch.Generator().manual_seed(1)) < 0.3) & batch["attention_mask"].bool()
    chosen[:, 0] = False
    labels[chosen] = batch["input_ids"][chosen]
    positions = torch.nonzero(labels.flatten() != -100).flatten()
    compact = {**batch, "masked_positions": positions, "masked_labels": labels.flatten()[positions]}
    with torch.no_grad():
        expected = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
        full = ours(**compact)
        last = ours(**compact, **last_layer_queries(compact))
    torch.testing.assert_close(full.loss, expected, **TOL)
    torch.testing.assert_close(last.loss, expected, **TOL)
    torch.testing.assert_close(last.mlm_logits, full.mlm_logits, **TOL)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("num_labels", [1, 3])
def test_sequence_classification_matches_transformers_padded_and_packed(pooling: str, num_labels: int) -> None:
    torch.manual_seed(0)
    config = tiny_config(num_labels=num_labels, classifier_pooling=pooling)
    ours = ModernBertForSequenceClassification(config).eval()
    hf = reference(ours, transformers.ModernBertForSequenceClassification)
    sequences = examples(6, seed=7)
    batch = padded(sequences)
    with torch.no_grad():
        expected = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        torch.testing.assert_close(ours(**batch).logits, expected, **TOL)
        torch.testing.assert_close(ours(**pack_examples(sequences, 64)).logits, expected, **TOL)


def test_gradients_of_packed_and_padded_training_agree() -> None:
    torch.manual_seed(0)
    model = ModernBertForSequenceClassification(tiny_config(num_labels=2)).train()
    sequences = examples(6, seed=9)
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    grads = []
    for batch in (padded(sequences), pack_examples(sequences, 64)):
        model.zero_grad()
        model(**batch, labels=labels).loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for packed_grad, padded_grad in zip(*grads[::-1]):
        torch.testing.assert_close(packed_grad, padded_grad, atol=1e-5, rtol=1e-4)


# ---- export and import ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ModernBERT masked-LM of the project's vocabulary, exported with its tokenizer."""
    vocab = len((REPO / "tokenizer" / "vocab.txt").read_text(encoding="utf-8").splitlines())
    torch.manual_seed(0)
    config = hf_config(ModelConfig.of_size("modernbert-tiny", vocab_size=vocab), cls_token_id=2, sep_token_id=3,
                       bos_token_id=2, eos_token_id=3)
    return export_model(ModernBertForMaskedLM(config), tmp_path_factory.mktemp("mb") / "export",
                        tokenizer_dir=REPO / "tokenizer")


def test_vanilla_transformers_loads_the_exports_without_missing_or_unexpected_keys(exported: Path,
                                                                                   tmp_path: Path) -> None:
    config = json.loads((exported / "config.json").read_text())
    assert config["model_type"] == "modernbert" and config["architectures"] == ["ModernBertForMaskedLM"]
    model, info = transformers.AutoModelForMaskedLM.from_pretrained(exported, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and type(model).__name__ == "ModernBertForMaskedLM"
    classifier, _ = load_pretrained(exported, task="classification", num_labels=3)
    export_model(classifier, tmp_path / "classifier", tokenizer_dir=REPO / "tokenizer")
    model, info = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "classifier",
                                                                                   output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert type(model).__name__ == "ModernBertForSequenceClassification" and model.config.num_labels == 3


def test_the_export_round_trips_and_fill_mask_runs(exported: Path) -> None:
    ours, report = load_pretrained(exported)
    assert report.newly_initialized == [] and isinstance(ours, ModernBertForMaskedLM)
    hf = transformers.AutoModelForMaskedLM.from_pretrained(exported).eval()
    batch = padded(examples(3, seed=11))
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(**batch).mlm_logits[batch["attention_mask"].bool()],
                                   hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                                   .logits[batch["attention_mask"].bool()], **TOL)
    fill = transformers.pipeline("fill-mask", model=str(exported))
    assert len(fill("the history of [MASK].")) == 5


def test_a_checkpoint_saved_by_transformers_itself_loads_into_ours(tmp_path: Path) -> None:
    torch.manual_seed(1)
    config = ModernBertConfig(vocab_size=500, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                              num_attention_heads=2, local_attention=8, pad_token_id=0)
    for hf_class in (transformers.ModernBertForMaskedLM, transformers.ModernBertModel):
        hf = hf_class(config).eval()
        hf.save_pretrained(tmp_path / hf_class.__name__)
        ours, report = load_pretrained(tmp_path / hf_class.__name__)
        batch = {"input_ids": torch.randint(5, 500, (2, 20)), "attention_mask": torch.ones(2, 20, dtype=torch.long)}
        with torch.no_grad():
            encoder = ours.eval().model(batch["input_ids"], batch["attention_mask"])
            reference_states = (hf.model if hasattr(hf, "model") else hf)(**batch).last_hidden_state
        torch.testing.assert_close(encoder, reference_states, **TOL)
        if hf_class is transformers.ModernBertModel:  # no head in the checkpoint: said so
            assert "prediction head (head)" in report.newly_initialized
        else:
            assert report.newly_initialized == []


def test_next_sentence_prediction_is_refused_for_modernbert() -> None:
    from bertpre.model.architectures import pretraining_model

    with pytest.raises(BertpreError, match="masked-LM only; use --objective mlm"):
        pretraining_model(tiny_config(), next_sentence=True)
