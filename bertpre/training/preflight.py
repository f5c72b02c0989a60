"""Before a pretraining run writes or deletes anything: read and check everything it needs.

``preflight`` only reads. It resolves the starting weights, reads the prepared data's metadata and its
shards, checks the data against the model and the batch sizes against the processes, finds the
checkpoint to resume and checks that it continues this run, and decides whether an earlier run is to
be cleared. Whatever it refuses, the output directory is as it was: the rule "check everything before
deleting an earlier run" is this module, not the order of lines in the loop's set-up.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from bertpre.core.config import config_to_dict, load_config
from bertpre.core.configs import ModelConfig, PretrainConfig
from bertpre.core.errors import BertpreError
from bertpre.core.io import OTHER_FILES, check_apart_from_inputs, output_kind, refuse_symlinked_output
from bertpre.core.resolve import model_directory
from bertpre.data.data_order import PackedRows
from bertpre.data.dataset import PretrainingData, split_files
from bertpre.data.metadata import DataMetadata, data_fingerprint, read_data_metadata
from bertpre.model.architectures import hf_config, is_modernbert
from bertpre.model.hf_directory import read_model_config
from bertpre.tokenizer.files import directory_vocabulary_digest, refuse_remote_code, vocabulary_digests
from bertpre.training.accelerator import (LAUNCHER_PRECISION_ENV, choose_precision, process_state, resolve_trackers,
                                         uses_cpu)
from bertpre.training.checkpoint import (RUN_CONFIG_FILE, checkpoint_problem, is_complete, list_checkpoints,
                                         newest_intact_checkpoint, read_trainer_state, refuse_other_parallelism)


@dataclass
class CheckedRun:
    """What :func:`preflight` read and found sound: all that setting the run up needs from the disk."""

    config: PretrainConfig  # init_from resolved to a local directory
    metadata: DataMetadata
    bert: Any  # the transformers config to train: BertConfig or ModernBertConfig
    train_data: PretrainingData
    eval_data: Optional[PretrainingData]
    resume_from: Optional[Path]
    clear_earlier_run: bool  # resume: never with --overwrite over checkpoints of an earlier run
    world_size: int
    packed_rows: Optional[PackedRows] = None  # with packing: every sequence's row


def preflight(config: PretrainConfig) -> CheckedRun:
    """Read and check everything ``config`` asks for, writing nothing; refuse in one line what would fail later."""
    if config.init_from:  # a Hub id becomes its cached snapshot; a local directory stays as it is
        config = dataclasses.replace(config, init_from=str(model_directory(config.init_from, "--init-from")))
    check_run_directory(config)
    metadata = read_data_metadata(config.data)
    check_tokenizer_copy(metadata)
    bert = model_config(config, metadata)
    check_objective_fits_model(config, bert)
    check_objective_fits_data(config, metadata)
    check_data_fits_model(config, bert, metadata)
    resolve_trackers(config.logging.report_to)  # a tracker that is not installed
    train_data = PretrainingData(config.data, "train", metadata)  # damaged data
    eval_data = optional_eval_data(config.data, metadata)
    world_size = process_state(config.runtime.cpu).num_processes
    packed_rows = PackedRows.of(train_data.lengths(), metadata.max_seq_length, config.seed) \
        if config.runtime.packing else None
    check_batch_sizes(config, world_size, len(packed_rows) if packed_rows is not None else len(train_data),
                      "rows of packed" if packed_rows is not None else "prepared")
    check_schedules(config, world_size)
    resume_from = resume_point(config)
    if resume_from is not None:
        check_checkpoint_fits(resume_from, bert, metadata)
        refuse_other_parallelism(resume_from, os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true")
        refuse_resuming_into_another_run(config, resume_from, bert, metadata, world_size)
    return CheckedRun(config, metadata, bert, train_data, eval_data, resume_from, earlier_run_to_clear(config),
                      world_size, packed_rows)


def check_run_directory(config: PretrainConfig) -> None:
    """The run directory is none of the run's inputs, nor inside or around one, no symbolic link, and holds no
    other kind of output (a run writes into it, and --overwrite clears its checkpoints and metrics)."""
    output = Path(config.output)
    refuse_symlinked_output(output)
    check_apart_from_inputs(output, {"--data": [config.data], "--init-from": [config.init_from]})
    if output.exists() and not output.is_dir():
        raise BertpreError(f"{output}: exists and is not a directory")
    kind = output_kind(output)
    if kind not in (None, "pretraining run", OTHER_FILES):
        raise BertpreError(f"{output}: holds a {kind}, not a pretraining run; choose another --output")


def check_tokenizer_copy(metadata: DataMetadata) -> None:
    """The tokenizer inside the dataset is the one the pairs were made with (a swapped one would read every id
    as another word, or fail deep in the embedding)."""
    refuse_remote_code(metadata.tokenizer_dir)
    for name, found in vocabulary_digests(metadata.tokenizer_dir).items():
        if found != metadata.tokenizer.vocab_sha256:
            raise BertpreError(f"{metadata.tokenizer_dir}: not the tokenizer the data was prepared with (the vocabulary "
                               f"of its {name} differs from the fingerprint in prepare.json); restore it or prepare "
                               "the data again")


def model_config(config: PretrainConfig, metadata: DataMetadata) -> Any:
    """The transformers config to train (BERT's or ModernBERT's): ``init_from``'s own when starting from weights,
    else ``config.model``'s; ModernBERT's names the tokenizer's [CLS] and [SEP] as its config.json does."""
    if config.init_from is not None:
        return read_model_config(config.init_from)  # a Hugging Face directory or a bertpre checkpoint alike
    if config.model.architecture == "modernbert":
        tokenizer = metadata.tokenizer
        return hf_config(config.model, cls_token_id=tokenizer.cls_id, sep_token_id=tokenizer.sep_id,
                         bos_token_id=tokenizer.cls_id, eos_token_id=tokenizer.sep_id)
    return hf_config(config.model)


def check_objective_fits_data(config: PretrainConfig, metadata: DataMetadata) -> None:
    """MLM-only segments (``prepare --examples segments``) carry no next-sentence label to train NSP on."""
    if metadata.examples == "segments" and config.objective != "mlm":
        raise BertpreError(f"{config.data}: prepared as MLM-only segments (no next-sentence labels), which objective "
                           f"{config.objective} needs; pass --objective mlm (or prepare pairs: --examples pairs)")


def check_objective_fits_model(config: PretrainConfig, model: Any) -> None:
    """ModernBERT has no next-sentence head: its objective is masked-LM only."""
    if is_modernbert(model) and config.objective != "mlm":
        source = f"{config.init_from} is a ModernBERT" if config.init_from else "model.architecture is modernbert"
        raise BertpreError(f"objective: {config.objective} needs a next-sentence head, and {source} (masked-LM only); "
                           "pass --objective mlm")


def check_data_fits_model(config: PretrainConfig, bert: Any, metadata: DataMetadata) -> None:
    """Vocabulary size, [PAD] id, sequence length and (with --init-from) the vocabulary itself agree."""
    tokenizer = metadata.tokenizer
    checks = [("vocab_size", tokenizer.vocab_size, f"the tokenizer the data was prepared with "
               f"({tokenizer.vocab_size} tokens, {tokenizer.path})"),
              ("pad_token_id", tokenizer.pad_id, f"the tokenizer's [PAD] id ({tokenizer.path})")]
    for field_name, wanted, what in checks:
        if getattr(bert, field_name) != wanted:
            if config.init_from:
                raise BertpreError(f"{config.init_from}/config.json: {field_name} {getattr(bert, field_name)} differs "
                                   f"from {what}; prepare the data with the tokenizer of {config.init_from}")
            raise BertpreError(f"model.{field_name}: {getattr(bert, field_name)} differs from {what}; set "
                               f"--model.{field_name.replace('_', '-')} {wanted}")
    if metadata.max_seq_length > bert.max_position_embeddings:
        raise BertpreError(f"model.max_position_embeddings: {bert.max_position_embeddings} is shorter than the "
                           f"prepared max_seq_length {metadata.max_seq_length}")
    if config.init_from:
        theirs = directory_vocabulary_digest(config.init_from)
        init_dir = Path(config.init_from)
        if theirs is None and is_complete(init_dir) and (init_dir / RUN_CONFIG_FILE).is_file():  # a bertpre checkpoint
            theirs = read_trainer_state(init_dir).vocab_sha256 or None
        if theirs is not None and theirs != tokenizer.vocab_sha256:
            raise BertpreError(f"{config.init_from}: its vocabulary has other tokens than the tokenizer the data was "
                               f"prepared with ({tokenizer.path}), though as many; prepare the data with "
                               f"--tokenizer {config.init_from}")


def optional_eval_data(path: str, metadata: DataMetadata) -> Optional[PretrainingData]:
    """The held-out split when `prepare` wrote one in each shard (a damaged one is refused, never skipped)."""
    if not all(split_files(root / "eval") for root in metadata.roots):
        return None
    data = PretrainingData(path, "eval", metadata)
    return data if len(data) else None


def check_batch_sizes(config: PretrainConfig, world_size: int, examples: int, kind: str = "prepared") -> None:
    """The global batch splits evenly over processes and micro-batches, and the data holds one batch (of
    sequences, or of packed rows)."""
    batches = config.batches
    if batches.global_batch_size % (batches.per_device_batch_size * world_size):
        raise BertpreError(f"global_batch_size: {batches.global_batch_size} is not divisible by "
                           f"per_device_batch_size × processes = {batches.per_device_batch_size} × {world_size}")
    if examples < batches.global_batch_size:
        raise BertpreError(f"global_batch_size: {batches.global_batch_size} exceeds the {examples} {kind} "
                           "training examples; prepare more data or use a smaller batch")


def check_schedules(config: PretrainConfig, world_size: int) -> None:
    """A batch-size warm-up has micro-steps to grow by; a masking-rate schedule knows its length."""
    batches = config.batches
    accumulation = batches.global_batch_size // (batches.per_device_batch_size * world_size)
    if batches.batch_warmup_steps and accumulation < 2:
        raise BertpreError(f"batch_warmup_steps: the batch grows by whole micro-steps, and global_batch_size "
                           f"{batches.global_batch_size} is one micro-step of per_device_batch_size "
                           f"{batches.per_device_batch_size} × {world_size} processes; lower per_device_batch_size")
    masking = config.masking
    if masking.mlm_probability_end is not None and masking_steps(config) is None:
        raise BertpreError("mlm_probability_steps: this run has no step count (a token or time budget); give the "
                           "steps over which the masking rate moves to mlm_probability_end")


def masking_steps(config: PretrainConfig) -> Optional[int]:
    """The steps over which a masking-rate schedule moves: its own, else the run's length in steps."""
    return config.masking.mlm_probability_steps or config.schedule.schedule_steps or config.schedule.max_steps


def resume_point(config: PretrainConfig) -> Optional[Path]:
    """The checkpoint this run continues from, or None to start afresh."""
    resume = config.checkpointing.resume
    if resume == "never":
        return None
    if resume == "auto":
        checkpoints = list_checkpoints(config.output)
        intact = newest_intact_checkpoint(config.output)
        if checkpoints and intact is None:
            raise BertpreError(f"{config.output}: every checkpoint is damaged ({checkpoint_problem(checkpoints[-1])}); "
                               "restore one, or start over with --resume never --overwrite true")
        return intact
    path = Path(resume)
    if not is_complete(path):
        raise BertpreError(f"resume: {path} is not a complete checkpoint directory")
    return path


# What may differ when a run resumes; everything else is the experiment and is refused when it differs (a new
# option is refused until it is added here). Budgets that extend the run; where and how often it logs,
# evaluates and checkpoints; and switches of speed and layout after which every step computes what it did.
MAY_CHANGE_ON_RESUME = frozenset({
    "output",  # the same run directory, maybe reached by another path
    "schedule.max_steps", "schedule.max_tokens", "schedule.max_minutes",
    "logging.log_every", "logging.eval_every", "logging.eval_batches", "logging.report_to", "logging.run_name",
    "logging.project", "masking.eval_mlm_probability",
    "checkpointing.checkpoint_every", "checkpointing.keep_checkpoints", "checkpointing.resume",
    "checkpointing.overwrite",
    "batches.num_workers", "runtime.compile", "runtime.unpad_inputs", "runtime.max_nonfinite_steps", "runtime.cpu",
    # the kernel and the last layer at masked positions change how a step is computed, not what it reads
    "runtime.attention", "runtime.masked_last_layer",
    # a wsd run's decay may start from any of its checkpoints: a new decay length (see _other_schedule_length)
    "schedule.decay_steps",
})
# Compared on their own: the data by its fingerprint (not its path), the model by the shape it trains, the
# starting weights by where they resolved to, the precision as the launcher and the device settle it, a
# pinned schedule by its length (however it is spelled).
_COMPARED_APART = frozenset({"data", "model", "init_from", "runtime.mixed_precision", "schedule.schedule_steps"})


def refuse_resuming_into_another_run(config: PretrainConfig, checkpoint: Path, bert: Any, metadata: DataMetadata,
                                     world_size: int) -> None:
    """Resuming continues a run exactly: refuse, naming both values, any change that would make the continued
    run another experiment (batch sizes, data, tokenizer, model, objective, masking, seed, optimizer, schedule,
    precision, processes) instead of silently mixing two runs in one."""
    saved = load_config(PretrainConfig, checkpoint / RUN_CONFIG_FILE)
    state = read_trainer_state(checkpoint)
    ours, theirs = _flat_options(config), _flat_options(saved)
    changes = [f"{key.split('.')[-1]} {theirs.get(key)} → {ours.get(key)}" for key in sorted(ours.keys() | theirs.keys())
               if key not in MAY_CHANGE_ON_RESUME and key not in _COMPARED_APART and ours.get(key) != theirs.get(key)]
    changes += _other_starting_weights(saved, config) + _other_precision(saved, config)
    changes += _other_schedule_length(saved, config)
    changes += _other_data(saved, config, state.data_fingerprint, metadata)
    changes += _other_model(checkpoint, bert)
    saved_processes = len(state.rank_checksums)
    if saved_processes and saved_processes != world_size:
        changes.append(f"processes {saved_processes} → {world_size}")
    if changes:
        raise BertpreError(f"resume: {checkpoint} was saved by another run ({', '.join(changes)}); resuming continues "
                           "that run exactly, so its settings cannot change. Run with its values, or start a new "
                           f"phase from its weights (with this recipe and its schedule from step 0) with --init-from "
                           f"{checkpoint} and another --output")


def _flat_options(config: PretrainConfig) -> dict[str, Any]:
    """Every option as ``group.name`` (or ``name``) → value."""
    flat: dict[str, Any] = {}
    for key, value in config_to_dict(config).items():
        if isinstance(value, dict) and key != "model":
            flat.update({f"{key}.{name}": inner for name, inner in value.items()})
        else:
            flat[key] = value
    return flat


def _other_starting_weights(saved: PretrainConfig, config: PretrainConfig) -> list[str]:
    resolved = [os.path.realpath(path) if path else None for path in (saved.init_from, config.init_from)]
    return [] if resolved[0] == resolved[1] else [f"init_from {saved.init_from} → {config.init_from}"]


def _other_schedule_length(saved: PretrainConfig, config: PretrainConfig) -> list[str]:
    """A run whose schedule length was pinned (``schedule_steps``, to be done in chunks) keeps that length, whether
    written as ``schedule_steps`` or as a ``max_steps`` equal to it; a run without it follows ``max_steps``,
    which may grow."""
    if saved.schedule.schedule_steps is None and config.schedule.schedule_steps is None:
        return []
    if saved.schedule.lr_schedule == config.schedule.lr_schedule == "wsd":
        return []  # its stable phase is the same whatever the length: a new length places the decay anew
    lengths = [run.schedule.schedule_steps or run.schedule.max_steps for run in (saved, config)]
    return [] if lengths[0] == lengths[1] else [f"schedule length {lengths[0]} → {lengths[1]}"]


def _other_precision(saved: PretrainConfig, config: PretrainConfig) -> list[str]:
    """The precision this run would train in (as ``make_accelerator`` will settle it) against the saved one."""
    launcher = os.environ.get(LAUNCHER_PRECISION_ENV)
    choice = choose_precision(config.runtime.mixed_precision, uses_cpu(config.runtime.cpu), launcher).mixed_precision
    ours = choice or (launcher or "").strip().lower() or None
    theirs = saved.runtime.mixed_precision
    return [] if ours is None or theirs is None or ours == theirs else [f"mixed_precision {theirs} → {ours}"]


def _other_data(saved: PretrainConfig, config: PretrainConfig, trained_on: str, metadata: DataMetadata) -> list[str]:
    """Other data than the run trained on, told by the data's fingerprint wherever it lies (by its path for
    checkpoints saved before fingerprints were kept)."""
    ours = data_fingerprint(metadata)
    if trained_on:
        if trained_on == ours:
            return []
    elif os.path.realpath(saved.data) == os.path.realpath(config.data):
        return []
    rows = sum(shard.rows("train") or 0 for shard in metadata.shards)
    was = f"fingerprint {trained_on}" if trained_on else "no fingerprint kept"
    return [f"data {saved.data} ({was}) → {config.data} (fingerprint {ours}, {rows:,} training {metadata.examples})"]


def _other_model(checkpoint: Path, bert: Any) -> list[str]:
    """Model settings beyond the shape (checked first, by check_checkpoint_fits): activation, dropout, init, eps."""
    saved = read_model_config(checkpoint)
    names = [f.name for f in dataclasses.fields(ModelConfig) if f.name not in _SHAPE_FIELDS]
    return [f"model.{name} {getattr(saved, name, None)} → {getattr(bert, name, None)}" for name in names
            if getattr(saved, name, None) != getattr(bert, name, None)]


_SHAPE_FIELDS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "max_position_embeddings", "type_vocab_size", "local_attention", "layer_types")


def check_checkpoint_fits(checkpoint: Path, bert: Any, metadata: DataMetadata) -> None:
    """A checkpoint to resume has the model's shape and was trained on data of the same vocabulary: otherwise a
    resumed run would fail deep in ``load_state_dict``, or silently read every token id as another word."""
    saved = read_model_config(checkpoint)
    changed = [f"{name} {getattr(saved, name, None)} → {getattr(bert, name, None)}" for name in _SHAPE_FIELDS
               if getattr(saved, name, None) != getattr(bert, name, None)]
    if changed:
        raise BertpreError(f"{checkpoint}: saved with another model shape ({', '.join(changed)}); resume with its "
                           "model config, start over with --resume never --overwrite true, or start a new run from its "
                           "weights with --init-from")
    trained_on = read_trainer_state(checkpoint).vocab_sha256
    if trained_on and trained_on != metadata.tokenizer.vocab_sha256:
        raise BertpreError(f"{checkpoint}: trained on data of another vocabulary than {metadata.tokenizer.path} "
                           "(same size, other tokens); resume on data prepared with the run's own tokenizer")


def earlier_run_to_clear(config: PretrainConfig) -> bool:
    """Whether starting afresh means deleting an earlier run's checkpoints (refused without --overwrite)."""
    if config.checkpointing.resume != "never" or not list_checkpoints(config.output):
        return False
    if not config.checkpointing.overwrite:
        raise BertpreError(f"{config.output}: holds checkpoints of an earlier run; use resume: auto to continue it, "
                           "or --overwrite true to start over")
    return True
