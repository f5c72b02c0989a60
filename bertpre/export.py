"""Interchange with Hugging Face: the parameter-name mapping, export and import of BERT directories.

The mapping between our internal layout (fused ``qkv``, short names) and the parameter names of
``transformers.BertForPreTraining`` / ``BertForSequenceClassification`` lives here and nowhere
else. Weights are read and written with safetensors only; nothing is unpickled.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers import BertConfig

from bertpre.config import BertpreError
from bertpre.io import atomic_directory, check_writable_output
from bertpre.model import BertForPreTraining, BertForSequenceClassification

if TYPE_CHECKING:
    from bertpre.config import ExportConfig

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
_TIED = "mlm.word_embeddings.weight"  # the decoder shares the word embeddings; stored once
_HEAD_PREFIXES = {"mlm": "masked-LM head (cls.predictions)", "nsp": "next-sentence head (cls.seq_relationship)",
                  "bert.pooler": "pooler (bert.pooler)", "classifier": "classifier"}


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
        if name == _TIED:
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


# --------------------------------------------------------------------------------------------
# Writing a Hugging Face directory
# --------------------------------------------------------------------------------------------


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def export_model(model: nn.Module, output: str | Path, tokenizer_dir: str | Path | None = None,
                 overwrite: bool = False, model_card: str | None = None) -> Path:
    """Write ``model`` as a Hugging Face BERT directory that vanilla ``from_pretrained`` loads.

    ``config.json`` names the architecture (``BertForPreTraining`` or
    ``BertForSequenceClassification``), ``model.safetensors`` holds the weights under Hugging
    Face names, and the tokenizer files are copied from ``tokenizer_dir``. Written to a temporary
    directory and renamed, so a failure never leaves a half-written export.
    """
    output = Path(output)
    check_writable_output(output, overwrite)
    config: BertConfig = model.config
    if tokenizer_dir is not None:
        _check_tokenizer_matches(config, Path(tokenizer_dir))
    with atomic_directory(output, overwrite=overwrite) as staging:
        architecture = ("BertForSequenceClassification" if isinstance(model, BertForSequenceClassification)
                        else "BertForPreTraining")
        hf_config = BertConfig.from_dict({**config.to_dict(), "architectures": [architecture]})
        hf_config.save_pretrained(str(staging))
        save_file(to_hf_state_dict(model), str(staging / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer_dir is not None:
            for name in TOKENIZER_FILES:
                if (Path(tokenizer_dir) / name).exists():
                    shutil.copy2(Path(tokenizer_dir) / name, staging / name)
        if model_card:
            (staging / "README.md").write_text(model_card, encoding="utf-8")
    return output


def _check_tokenizer_matches(config: BertConfig, tokenizer_dir: Path) -> None:
    vocab_file = tokenizer_dir / "vocab.txt"
    if not vocab_file.exists():
        raise BertpreError(f"{tokenizer_dir}: no vocab.txt; is it a tokenizer directory?")
    size = len(vocab_file.read_text(encoding="utf-8").rstrip("\n").split("\n"))
    if size != config.vocab_size:
        raise BertpreError(f"{tokenizer_dir}: tokenizer has {size} tokens but the model's vocab_size is "
                           f"{config.vocab_size}; export with the tokenizer the model was trained with")


# --------------------------------------------------------------------------------------------
# Reading a Hugging Face directory
# --------------------------------------------------------------------------------------------


@dataclass
class ImportReport:
    """What loading a Hugging Face directory did: heads that were newly initialised, unused weights."""

    newly_initialized: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line for the user."""
        parts = []
        if self.newly_initialized:
            parts.append("newly initialised: " + ", ".join(self.newly_initialized))
        if self.unused:
            parts.append(f"{len(self.unused)} checkpoint tensors unused ({', '.join(self.unused[:3])}…)")
        return "; ".join(parts) or "all weights loaded"


def read_bert_config(directory: str | Path, **overrides: object) -> BertConfig:
    """The ``BertConfig`` of a Hugging Face directory; anything that is not BERT is refused."""
    directory = Path(directory)
    path = directory / "config.json"
    if not path.is_file():
        raise BertpreError(f"{directory}: no config.json; not a Hugging Face model directory")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("model_type") != "bert":
        raise BertpreError(f"{path}: model_type is {data.get('model_type')!r}, not 'bert'; bertpre loads BERT models only")
    if data.get("position_embedding_type", "absolute") != "absolute":
        raise BertpreError(f"{path}: position_embedding_type {data['position_embedding_type']!r} is not supported")
    data.update(overrides)
    return BertConfig.from_dict(data)


def read_safetensors(directory: str | Path) -> dict[str, Tensor]:
    """All tensors of a directory's ``model.safetensors`` (or its shards); refuses pickled weights."""
    directory = Path(directory)
    files = sorted(directory.glob("model*.safetensors"))
    if not files:
        pickled = [p.name for p in directory.glob("*.bin")]
        hint = f" (found {', '.join(pickled)}: convert to safetensors first)" if pickled else ""
        raise BertpreError(f"{directory}: no model.safetensors{hint}")
    tensors: dict[str, Tensor] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                tensors[name] = handle.get_tensor(name)
    return tensors


def load_pretrained(directory: str | Path, task: str = "pretraining", num_labels: int = 2,
                    unpad_inputs: bool = False, **config_overrides: object) -> tuple[nn.Module, ImportReport]:
    """Load any Hugging Face BERT directory into our model.

    ``task`` is ``"pretraining"`` (masked-LM + NSP heads) or ``"classification"`` (``num_labels``
    outputs; 1 = regression). Heads missing from the checkpoint start from BERT's initialisation
    and are named in the report. ``unpad_inputs`` is the model's runtime option of that name.
    """
    if task == "classification":
        overrides = {"num_labels": num_labels, **config_overrides}
        config = read_bert_config(directory, **overrides)
        model: nn.Module = BertForSequenceClassification(config, unpad_inputs)
    elif task == "pretraining":
        config = read_bert_config(directory, **config_overrides)
        model = BertForPreTraining(config, unpad_inputs)
    else:
        raise ValueError(f"task must be 'pretraining' or 'classification', got {task!r}")
    converted, unused = from_hf_state_dict(read_safetensors(directory))
    if task == "classification" and "classifier.weight" in converted:
        if converted["classifier.weight"].shape[0] != config.num_labels:
            unused += ["classifier.weight", "classifier.bias"]
            converted.pop("classifier.weight")
            converted.pop("classifier.bias", None)
    expected = {name for name in model.state_dict() if name != _TIED}
    useful = {name: tensor for name, tensor in converted.items() if name in expected}
    unused += [name for name in converted if name not in expected]
    _check_shapes(model, useful, directory)
    missing = sorted(expected - set(useful))
    core_missing = [name for name in missing if not name.startswith(tuple(_HEAD_PREFIXES))]
    if core_missing:
        raise BertpreError(f"{directory}: checkpoint lacks encoder weights ({', '.join(core_missing[:3])}…); "
                           "is it a complete BERT model?")
    model.load_state_dict(useful, strict=False)
    newly = sorted({label for prefix, label in _HEAD_PREFIXES.items()
                    if any(name.startswith(prefix) for name in missing)})
    return model, ImportReport(newly_initialized=newly, unused=sorted(unused))


def _check_shapes(model: nn.Module, tensors: dict[str, Tensor], directory: str | Path) -> None:
    state = model.state_dict()
    for name, tensor in tensors.items():
        if state[name].shape != tensor.shape:
            raise BertpreError(f"{directory}: {name} has shape {tuple(tensor.shape)} but config.json implies "
                               f"{tuple(state[name].shape)}")


# --------------------------------------------------------------------------------------------
# `bertpre export`: a pretraining checkpoint → Hugging Face directory
# --------------------------------------------------------------------------------------------


def resolve_checkpoint(path: str | Path, step: str = "latest") -> Path:
    """A checkpoint directory from a run directory (``latest`` or a step) or a checkpoint itself."""
    from bertpre.pretrain import list_checkpoints

    path = Path(path)
    if (path / "trainer_state.json").exists():
        return path
    checkpoints = list_checkpoints(path)
    if not checkpoints:
        raise BertpreError(f"{path}: no complete checkpoint (expected {path}/checkpoints/step-NNNNNNNN)")
    if step == "latest":
        return checkpoints[-1]
    wanted = [c for c in checkpoints if int(c.name[5:]) == int(step)]
    if not wanted:
        steps = ", ".join(str(int(c.name[5:])) for c in checkpoints)
        raise BertpreError(f"{path}: no checkpoint at step {step} (available: {steps})")
    return wanted[0]


def export_checkpoint(config: "ExportConfig") -> Path:
    """Export a pretraining checkpoint with its tokenizer and a model card."""
    import shlex

    from safetensors.torch import load_file

    from bertpre.config import PretrainConfig, load_config
    from bertpre.data import read_data_metadata

    checkpoint = resolve_checkpoint(config.checkpoint, config.step)
    bert = BertConfig.from_json_file(str(checkpoint / "config.json"))
    model = BertForPreTraining(bert)
    missing, unexpected = model.load_state_dict(load_file(str(checkpoint / "model.safetensors")), strict=False)
    if unexpected or set(missing) - {_TIED}:
        raise BertpreError(f"{checkpoint}: weights do not match its config.json ({(missing + unexpected)[:3]})")
    run = load_config(PretrainConfig, checkpoint / "pretrain.yaml")
    state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    tokenizer = config.tokenizer
    if tokenizer is None:
        tokenizer = str(Path(read_data_metadata(run.data)["roots"][0]) / "tokenizer")
    command = " ".join(["bertpre export", "--checkpoint", shlex.quote(config.checkpoint), "--step", config.step,
                        "--output", shlex.quote(config.output)]
                       + (["--tokenizer", shlex.quote(config.tokenizer)] if config.tokenizer else []))
    card = _pretraining_model_card(bert, run, state, checkpoint, command)
    return export_model(model, config.output, tokenizer_dir=tokenizer, overwrite=config.overwrite, model_card=card)


def _pretraining_model_card(bert: BertConfig, run: Any, state: dict, checkpoint: Path, command: str) -> str:
    evaluation = {k: v for k, v in state.get("last_eval", {}).items() if k != "step"}
    lines = [
        "---", "library_name: transformers", "tags: [bert, fill-mask, bertpre]", "---", "",
        "# BERT pretrained with bertpre", "",
        f"- architecture: BERT, {bert.num_hidden_layers} layers, hidden {bert.hidden_size}, "
        f"{bert.num_attention_heads} heads, feed-forward {bert.intermediate_size}, vocabulary {bert.vocab_size:,}",
        f"- objective: masked-LM ({run.mlm_probability:.0%} of tokens, 80/10/10"
        f"{', whole words' if run.whole_word_mask else ''}) + next-sentence prediction",
        f"- data: `{run.data}`",
        f"- steps: {state['step']:,} (global batch {run.global_batch_size} sequences, {run.optimizer}, "
        f"peak learning rate {run.learning_rate})",
        f"- tokens seen: {state['tokens_seen']:,}",
        f"- checkpoint: `{checkpoint}`",
    ]
    if evaluation:
        lines += ["", "## Final evaluation (held-out documents)", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k.replace('eval_', '')} | {v:.4f} |" for k, v in evaluation.items()]
    lines += ["", "## Use", "", "```python", "from transformers import pipeline",
              'fill = pipeline("fill-mask", model="PATH/TO/THIS/DIRECTORY")', 'fill("the [MASK] of the story.")',
              "```", "", "## Produced by", "", "```bash", command, "```", ""]
    return "\n".join(lines)
