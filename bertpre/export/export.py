"""Stage 5, `bertpre export`: a pretraining checkpoint → a Hugging Face directory (BERT or ModernBERT) with a model card.

The directory format is ``bertpre/model/hf_directory.py``'s; the parameter names ``bertpre/model/hf_format.py``'s.
"""

from __future__ import annotations

import shlex
from pathlib import Path


from bertpre.training.checkpoint import (RUN_CONFIG_FILE, load_model_weights, read_trainer_state,
                                resolve_checkpoint, verified)
from bertpre.core.config import load_config
from bertpre.core.configs import ExportConfig, PrepareConfig, PretrainConfig
from bertpre.data.metadata import CONFIG_FILE, read_data_metadata
from bertpre.core.errors import BertpreError
from bertpre.model.hf_directory import export_model, read_model_config
from bertpre.model.architectures import pretraining_model
from bertpre.export.model_card import hub_dataset_id, pretraining_model_card
from bertpre.core.io import check_apart_from_inputs, check_writable_output
from bertpre.core.locking import output_lock
from bertpre.core.resolve import tokenizer_directory


def export_checkpoint(config: ExportConfig) -> Path:
    """Export a pretraining checkpoint with its tokenizer and a model card, under the output's lock; the output
    is never the run, its data or the tokenizer, nor inside or around them."""
    with output_lock(config.output):
        return _export(config)


def _export(config: ExportConfig) -> Path:
    checkpoint = verified(resolve_checkpoint(config.checkpoint, config.step))
    run = load_config(PretrainConfig, checkpoint / RUN_CONFIG_FILE)
    tokenizer = str(tokenizer_directory(config.tokenizer)) if config.tokenizer else None
    if tokenizer is None:
        tokenizer = str(read_data_metadata(run.data).tokenizer_dir)
    check_apart_from_inputs(config.output, {"--checkpoint": [config.checkpoint, checkpoint], "--tokenizer": [tokenizer],
                                            "run's --data": [run.data]})
    check_writable_output(Path(config.output), config.overwrite, kind="model")  # before seconds of loading
    bert = read_model_config(checkpoint)
    model = pretraining_model(bert, next_sentence=run.objective == "mlm_nsp")
    load_model_weights(checkpoint, model)
    state = read_trainer_state(checkpoint)
    card = pretraining_model_card(bert, run, vars(state), checkpoint, _export_command(config), config,
                                  _hub_datasets(run.data))
    return export_model(model, config.output, tokenizer_dir=tokenizer, overwrite=config.overwrite, model_card=card,
                        trained_vocabulary=state.vocab_sha256)


def _hub_datasets(data: str) -> list[str]:
    """The hub datasets (``hf:`` inputs) the run's data was prepared from, for the card's metadata;
    none when the prepared data is not on this machine (an export needs only the checkpoint)."""
    try:
        roots = read_data_metadata(data).roots
        inputs = [spec for root in roots for spec in load_config(PrepareConfig, root / CONFIG_FILE).inputs]
    except (BertpreError, OSError):
        return []
    return sorted({name for name in map(hub_dataset_id, inputs) if name})


def _export_command(config: ExportConfig) -> str:
    """The command that reproduces this export, for the model card."""
    return " ".join(["bertpre export", "--checkpoint", shlex.quote(config.checkpoint), "--step", config.step,
                     "--output", shlex.quote(config.output)]
                    + (["--tokenizer", shlex.quote(config.tokenizer)] if config.tokenizer else [])
                    + (["--license", config.license] if config.license else [])
                    + (["--language", *config.language] if config.language else []))
