"""The Hugging Face parameter-name mapping, both ways, declared once; and the tied-weight key.

Our internal layout (fused ``qkv``, short names) ↔ the names of ``transformers.BertForPreTraining``
/ ``BertForSequenceClassification``.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from bertpre.core.errors import BertpreError

# our name → Hugging Face name; "{i}" is a layer index. The fused qkv is handled separately.
_NAME_MAP: list[tuple[str, str]] = [
    ("bert.embeddings.word.weight", "bert.embeddings.word_embeddings.weight"),
    ("bert.embeddings.position.weight", "bert.embeddings.position_embeddings.weight"),
    ("bert.embeddings.token_type.weight", "bert.embeddings.token_type_embeddings.weight"),
    ("bert.embeddings.norm.{p}", "bert.embeddings.LayerNorm.{p}"),
    ("bert.layers.{i}.attention_out.{p}", "bert.encoder.layer.{i}.attention.output.dense.{p}"),
    ("bert.layers.{i}.attention_norm.{p}", "bert.encoder.layer.{i}.attention.output.LayerNorm.{p}"),
    ("bert.layers.{i}.ffn_in.{p}", "bert.encoder.layer.{i}.intermediate.dense.{p}"),
    ("bert.layers.{i}.ffn_out.{p}", "bert.encoder.layer.{i}.output.dense.{p}"),
    ("bert.layers.{i}.ffn_norm.{p}", "bert.encoder.layer.{i}.output.LayerNorm.{p}"),
    ("bert.pooler.{p}", "bert.pooler.dense.{p}"),
    ("mlm.transform.{p}", "cls.predictions.transform.dense.{p}"),
    ("mlm.norm.{p}", "cls.predictions.transform.LayerNorm.{p}"),
    ("mlm.bias", "cls.predictions.bias"),
    ("nsp.{p}", "cls.seq_relationship.{p}"),
    ("classifier.{p}", "classifier.{p}"),
]
_QKV = ("bert.layers.{i}.qkv.{p}", "bert.encoder.layer.{i}.attention.self.{part}.{p}")
TIED_KEY = "mlm.word_embeddings.weight"
"""The masked-LM decoder shares the word embeddings: the weight is stored once, under the embeddings."""
HEAD_PREFIXES = {"mlm": "masked-LM head (cls.predictions)", "nsp": "next-sentence head (cls.seq_relationship)",
                 "bert.pooler": "pooler (bert.pooler)", "classifier": "classifier"}
"""Parameter-name prefixes of the parts a checkpoint may lack, with the name a user knows them by."""


def _pattern(template: str) -> re.Pattern:
    escaped = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)")
    return re.compile(f"^{escaped}$")


_OURS_TO_HF = [(_pattern(ours), hf) for ours, hf in _NAME_MAP]
_HF_TO_OURS = [(_pattern(hf), ours) for ours, hf in _NAME_MAP]
_QKV_OURS = _pattern(_QKV[0])
_QKV_HF = re.compile(r"^bert\.encoder\.layer\.(?P<i>\d+)\.attention\.self\.(?P<part>query|key|value)\.(?P<p>weight|bias)$")


def to_hf_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Our state dict renamed to Hugging Face BERT names, qkv split into query/key/value."""
    converted: dict[str, Tensor] = {}
    for name, tensor in model.state_dict().items():
        if name == TIED_KEY:
            continue
        qkv = _QKV_OURS.match(name)
        if qkv:
            for part, chunk in zip(("query", "key", "value"), tensor.chunk(3, dim=0)):
                converted[_QKV[1].format(i=qkv["i"], part=part, p=qkv["p"])] = chunk.clone().contiguous()
            continue
        for pattern, template in _OURS_TO_HF:
            match = pattern.match(name)
            if match:
                converted[template.format(**match.groupdict())] = tensor.clone().contiguous()
                break
        else:
            raise KeyError(f"no Hugging Face name for parameter {name}")
    return converted


def from_hf_state_dict(tensors: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Hugging Face BERT names → ours. Returns the converted dict and the names it did not use.

    Accepts checkpoints of ``BertModel`` (no ``bert.`` prefix), ``BertForPreTraining``,
    ``BertForMaskedLM`` and ``BertForSequenceClassification``, and TF-era ``gamma``/``beta``.
    """
    converted: dict[str, Tensor] = {}
    qkv_parts: dict[tuple[str, str], dict[str, Tensor]] = {}
    unused: list[str] = []
    for raw_name, tensor in tensors.items():
        if raw_name.endswith("position_ids"):  # a buffer older transformers saved; derived, not learned
            continue
        name = _normalize_hf_name(raw_name)
        qkv = _QKV_HF.match(name)
        if qkv:
            qkv_parts.setdefault((qkv["i"], qkv["p"]), {})[qkv["part"]] = tensor
            continue
        for pattern, template in _HF_TO_OURS:
            match = pattern.match(name)
            if match:
                converted[template.format(**match.groupdict())] = tensor
                break
        else:
            unused.append(raw_name)
    for (layer, kind), parts in qkv_parts.items():
        if set(parts) != {"query", "key", "value"}:
            raise BertpreError(f"layer {layer}: attention {kind} has only {sorted(parts)} of query/key/value")
        converted[_QKV[0].format(i=layer, p=kind)] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return converted, unused


def _normalize_hf_name(name: str) -> str:
    name = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", name))
    if name.startswith(("embeddings.", "encoder.", "pooler.")):
        name = "bert." + name
    return name
