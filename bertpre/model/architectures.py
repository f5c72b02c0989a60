"""The encoders bertpre trains, one entry each: from a model config or a Hugging Face ``config.json`` to our
model classes, their parameter names in Hugging Face's format, and the architecture ``config.json`` declares.

``bert`` is ``bertpre/model/bert.py`` (names mapped by ``bertpre/model/hf_format.py``); ``modernbert`` is
``bertpre/model/modernbert.py`` (it carries Hugging Face's names already).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from transformers import BertConfig, ModernBertConfig, PretrainedConfig

from bertpre.core.configs import ModelConfig
from bertpre.core.errors import BertpreError
from bertpre.model import hf_format
from bertpre.model.bert import BertForPreTraining, BertForSequenceClassification, bert_config
from bertpre.model.modernbert import (HEAD_PREFIXES as MODERNBERT_HEADS, TIED_KEY as MODERNBERT_TIED,
                                      ModernBertForMaskedLM, ModernBertForSequenceClassification)

MODEL_TYPES = ("bert", "modernbert")
"""The ``model_type`` values of the Hugging Face directories bertpre reads and writes."""


def hf_config(model: ModelConfig, **extra: object) -> PretrainedConfig:
    """The transformers config of our model config: a vanilla ``BertConfig`` or ``ModernBertConfig``."""
    if model.architecture == "bert":
        return bert_config(model, **extra)
    return ModernBertConfig(**{
        "vocab_size": model.vocab_size, "hidden_size": model.hidden_size, "num_hidden_layers": model.num_hidden_layers,
        "num_attention_heads": model.num_attention_heads, "intermediate_size": model.intermediate_size,
        "hidden_activation": model.hidden_act, "max_position_embeddings": model.max_position_embeddings,
        "initializer_range": model.initializer_range, "norm_eps": model.layer_norm_eps,
        "pad_token_id": model.pad_token_id, "embedding_dropout": model.hidden_dropout_prob,
        "mlp_dropout": model.hidden_dropout_prob, "attention_dropout": model.attention_probs_dropout_prob,
        "local_attention": model.local_attention, "global_attn_every_n_layers": model.global_attention_every,
        "global_rope_theta": model.global_rope_theta, "local_rope_theta": model.local_rope_theta, **extra})


def config_from_dict(data: dict[str, Any], source: str) -> PretrainedConfig:
    """A ``config.json``'s content as its transformers config; a model type bertpre does not train is refused."""
    model_type = data.get("model_type")
    if model_type == "bert":
        if data.get("position_embedding_type", "absolute") != "absolute":
            raise BertpreError(f"{source}: position_embedding_type {data['position_embedding_type']!r} is not supported")
        return BertConfig.from_dict(data)
    if model_type == "modernbert":
        return ModernBertConfig.from_dict(data)
    raise BertpreError(f"{source}: model_type is {model_type!r}; bertpre loads {' and '.join(MODEL_TYPES)} models only")


def is_modernbert(config: PretrainedConfig) -> bool:
    """Whether a transformers config is ModernBERT's."""
    return getattr(config, "model_type", "bert") == "modernbert"


def attention_dropout(config: PretrainedConfig) -> float:
    """The dropout on attention probabilities, whatever the architecture calls it."""
    return float(config.attention_dropout if is_modernbert(config) else config.attention_probs_dropout_prob)


def pretraining_model(config: PretrainedConfig, unpad_inputs: bool = False, next_sentence: bool = True,
                      attention: str = "sdpa") -> nn.Module:
    """Our masked-LM model (BERT with or without its NSP head; ModernBERT has none) for ``config``."""
    if is_modernbert(config):
        if next_sentence:
            raise BertpreError("objective: ModernBERT is trained with masked-LM only; use --objective mlm")
        return ModernBertForMaskedLM(config, unpad_inputs, attention)
    return BertForPreTraining(config, unpad_inputs, next_sentence, attention)


def classification_model(config: PretrainedConfig, unpad_inputs: bool = False, attention: str = "sdpa") -> nn.Module:
    """Our sequence classifier for ``config``."""
    if is_modernbert(config):
        return ModernBertForSequenceClassification(config, unpad_inputs, attention)
    return BertForSequenceClassification(config, unpad_inputs, attention)


def architecture_name(model: nn.Module) -> str:
    """What ``config.json``'s ``architectures`` says of ``model``, for transformers' Auto classes."""
    if isinstance(model, (ModernBertForMaskedLM, ModernBertForSequenceClassification)):
        return type(model).__name__
    if isinstance(model, BertForSequenceClassification):
        return "BertForSequenceClassification"
    return "BertForPreTraining" if model.nsp is not None else "BertForMaskedLM"


def tied_key(model: nn.Module) -> str:
    """The parameter stored once because it shares its tensor with the token embeddings (the MLM decoder)."""
    if isinstance(model, (ModernBertForMaskedLM, ModernBertForSequenceClassification)):
        return MODERNBERT_TIED
    return hf_format.TIED_KEY


def head_prefixes(model: nn.Module) -> dict[str, str]:
    """Parameter-name prefixes of the parts a checkpoint may lack, with the name a user knows them by."""
    if isinstance(model, (ModernBertForMaskedLM, ModernBertForSequenceClassification)):
        return MODERNBERT_HEADS
    return hf_format.HEAD_PREFIXES


def to_hf_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """``model``'s weights under Hugging Face's names, the tied decoder left out."""
    if isinstance(model, (ModernBertForMaskedLM, ModernBertForSequenceClassification)):
        return {name: tensor.clone().contiguous() for name, tensor in model.state_dict().items()
                if name != MODERNBERT_TIED}
    return hf_format.to_hf_state_dict(model)


def from_hf_state_dict(config: PretrainedConfig, tensors: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """A Hugging Face checkpoint's tensors under our names, and the names it did not use."""
    if not is_modernbert(config):
        return hf_format.from_hf_state_dict(tensors)
    converted, unused = {}, []
    for name, tensor in tensors.items():
        if name.startswith(("embeddings.", "layers.", "final_norm.")):  # a ModernBertModel: no `model.` prefix
            name = "model." + name
        if name.startswith(("model.", "head.", "decoder.", "classifier.")):
            converted[name] = tensor
        else:
            unused.append(name)
    return converted, unused
