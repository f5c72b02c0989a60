"""Hugging Face model directories: writing one that vanilla ``from_pretrained`` loads, and loading any BERT one.

A directory holds ``config.json`` (a ``BertConfig`` naming the architecture), ``model.safetensors``
(weights under Hugging Face names; nothing is ever unpickled), the tokenizer files and a model card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers import PretrainedConfig

from bertpre.core.errors import BertpreError
from bertpre.model.architectures import (architecture_name, classification_model, config_from_dict,
                                         from_hf_state_dict, head_prefixes, is_modernbert, pretraining_model, tied_key,
                                         to_hf_state_dict)
from bertpre.core.io import atomic_directory, check_writable_output, disk_errors_named
from bertpre.core.resolve import model_directory
from bertpre.tokenizer.files import copy_tokenizer_files, directory_vocabulary_digest, refuse_remote_code

WEIGHTS_FILE = "model.safetensors"


def export_model(model: nn.Module, output: str | Path, tokenizer_dir: str | Path | None = None,
                 overwrite: bool = False, model_card: str | None = None, trained_vocabulary: str = "") -> Path:
    """Write ``model`` as a Hugging Face BERT directory that vanilla ``from_pretrained`` loads.

    ``config.json`` names the architecture (``BertForPreTraining`` or
    ``BertForSequenceClassification``), ``model.safetensors`` holds the weights under Hugging
    Face names, and the tokenizer files are copied from ``tokenizer_dir``, refused when their size,
    or their tokens (``trained_vocabulary``: the fingerprint the model was trained with, if known),
    differ from the model's. Written to a temporary directory and renamed, so a failure never leaves
    a half-written export.
    """
    output = Path(output)
    check_writable_output(output, overwrite, kind="model")
    config: PretrainedConfig = model.config
    if tokenizer_dir is not None:
        check_tokenizer_matches(config, Path(tokenizer_dir))
        _check_same_vocabulary(Path(tokenizer_dir), trained_vocabulary)
    with disk_errors_named(output), atomic_directory(output, overwrite=overwrite) as staging:
        hf_config = type(config).from_dict({**config.to_dict(), "architectures": [architecture_name(model)]})
        hf_config.save_pretrained(str(staging))
        save_file(to_hf_state_dict(model), str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        if tokenizer_dir is not None:
            copy_tokenizer_files(tokenizer_dir, staging)
        if model_card:
            (staging / "README.md").write_text(model_card, encoding="utf-8")
    return output


def usable_sequence_length(requested: int, config: PretrainedConfig, directory: str | Path) -> tuple[int, str]:
    """The longest input the model can read, at most ``requested``, and a note when it is shorter.

    Inputs are truncated to it: a longer one would otherwise fail at the first long batch, mid-epoch.
    """
    if requested <= config.max_position_embeddings:
        return requested, ""
    return config.max_position_embeddings, (f"max_seq_length: {requested} is longer than the "
                                            f"{config.max_position_embeddings} positions of {directory}; inputs "
                                            f"are truncated to {config.max_position_embeddings} tokens")


def check_tokenizer_matches(config: PretrainedConfig, tokenizer_dir: Path) -> None:
    """The tokenizer an export will copy has a ``vocab.txt`` of the model's vocabulary size."""
    vocab_file = tokenizer_dir / "vocab.txt"
    if not vocab_file.exists():
        raise BertpreError(f"{tokenizer_dir}: no vocab.txt; is it a tokenizer directory?")
    size = len(vocab_file.read_text(encoding="utf-8").rstrip("\n").split("\n"))
    if size != config.vocab_size:
        raise BertpreError(f"{tokenizer_dir}: tokenizer has {size} tokens but the model's vocab_size is "
                           f"{config.vocab_size}; export with the tokenizer the model was trained with")


def _check_same_vocabulary(tokenizer_dir: Path, trained_vocabulary: str) -> None:
    """The same size is not enough: a run's data may have been prepared again since, with another tokenizer."""
    shipped = directory_vocabulary_digest(tokenizer_dir)
    if trained_vocabulary and shipped is not None and shipped != trained_vocabulary:
        raise BertpreError(f"{tokenizer_dir}: other tokens than the vocabulary the model was trained with (prepared "
                           "again since?); pass --tokenizer with the tokenizer the run's data was prepared with")


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


def read_model_config(directory: str | Path, **overrides: object) -> PretrainedConfig:
    """The transformers config of a Hugging Face directory (``BertConfig`` or ``ModernBertConfig``); any other
    model type is refused."""
    directory = Path(directory)
    path = directory / "config.json"
    if not path.is_file():
        raise BertpreError(f"{directory}: no config.json; not a Hugging Face model directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        where = f" at line {error.lineno}" if isinstance(error, json.JSONDecodeError) else ""
        raise BertpreError(f"{path}: not valid JSON{where}; the file is damaged or was edited by hand") from None
    if not isinstance(data, dict):
        raise BertpreError(f"{path}: not a model configuration (a JSON object is expected)")
    refuse_remote_code(directory)
    data.update(overrides)
    return config_from_dict(data, str(path))


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
        try:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():
                    tensors[name] = handle.get_tensor(name)
        except Exception as error:  # safetensors raises its own error type for a damaged file
            raise BertpreError(f"{file}: unreadable weights ({str(error).splitlines()[0][:80]}); the file is "
                               "damaged or cut short") from None
    return tensors


def load_pretrained(directory: str | Path, task: str = "pretraining", num_labels: int = 2,
                    unpad_inputs: bool = False, random_init: bool = False, attention: str = "sdpa",
                    **config_overrides: object) -> tuple[nn.Module, ImportReport]:
    """Load any Hugging Face BERT directory into our model.

    ``directory`` may also be a Hub id, as for ``from_pretrained`` (see ``bertpre/core/resolve.py``).
    ``task`` is ``"pretraining"`` (masked-LM + NSP heads) or ``"classification"`` (``num_labels``
    outputs; 1 = regression). Heads missing from the checkpoint start from BERT's initialisation
    and are named in the report. ``unpad_inputs`` and ``attention`` (the kernel) are the model's runtime options. With
    ``random_init`` only the configuration is read: the same architecture, initialised as BERT is.
    """
    directory = model_directory(directory)
    if task == "classification":
        overrides = {"num_labels": num_labels, **config_overrides}
        config = read_model_config(directory, **overrides)
        model: nn.Module = classification_model(config, unpad_inputs, attention)
    elif task == "pretraining":
        config = read_model_config(directory, **config_overrides)
        model = pretraining_model(config, unpad_inputs, next_sentence=not is_modernbert(config), attention=attention)
    else:
        raise ValueError(f"task must be 'pretraining' or 'classification', got {task!r}")
    if random_init:
        return model, ImportReport(newly_initialized=["every weight (random initialisation)"])
    converted, unused = from_hf_state_dict(config, read_safetensors(directory))
    if task == "classification" and "classifier.weight" in converted:
        if converted["classifier.weight"].shape[0] != config.num_labels:
            unused += ["classifier.weight", "classifier.bias"]
            converted.pop("classifier.weight")
            converted.pop("classifier.bias", None)
    report = load_encoder_weights(model, converted, directory)
    report.unused = sorted(report.unused + unused)
    return model, report


def load_encoder_weights(model: nn.Module, tensors: dict[str, Tensor], source: str | Path) -> ImportReport:
    """Load ``tensors`` (our parameter names) into ``model``: the encoder must be complete and fit;
    heads the source lacks keep their initialisation and are named in the report."""
    tied, heads = tied_key(model), head_prefixes(model)
    expected = {name for name in model.state_dict() if name != tied}
    useful = {name: tensor for name, tensor in tensors.items() if name in expected}
    unused = [name for name in tensors if name not in expected and name != tied]
    _check_shapes(model, useful, source)
    missing = sorted(expected - set(useful))
    core_missing = [name for name in missing if not name.startswith(tuple(heads))]
    if core_missing:
        raise BertpreError(f"{source}: checkpoint lacks encoder weights ({', '.join(core_missing[:3])}…); "
                           "is it a complete model?")
    model.load_state_dict(useful, strict=False)
    newly = sorted({label for prefix, label in heads.items()
                    if any(name.startswith(prefix) for name in missing)})
    return ImportReport(newly_initialized=newly, unused=sorted(unused))


def _check_shapes(model: nn.Module, tensors: dict[str, Tensor], directory: str | Path) -> None:
    state = model.state_dict()
    for name, tensor in tensors.items():
        if state[name].shape != tensor.shape:
            raise BertpreError(f"{directory}: {name} has shape {tuple(tensor.shape)} but config.json implies "
                               f"{tuple(state[name].shape)}")
