"""The pretraining run directory's checkpoint format: state, list, save, load, resolve.

A run directory holds ``pretrain.yaml``, ``metrics.jsonl`` and ``checkpoints/step-NNNNNNNN/``; each
checkpoint holds the model weights (safetensors, the tied decoder stored once), ``config.json``,
the optimizer, scheduler and (fp16) scaler states, each rank's RNG state, the run's config, and
last ``trainer_state.json``: a directory without it is never taken for a checkpoint. Under FSDP
the weights and optimizer state are gathered whole (``bertpre/training/sharding.py``), so a checkpoint
looks the same however the run was parallelised.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import nn

from bertpre.core.config import save_config
from bertpre.core.errors import BertpreError
from bertpre.model.architectures import tied_key
from bertpre.core.io import apply_umask, disk_error, os_error_of
from bertpre.training.sharding import (without_compile, full_model_state_dict, full_optimizer_state_dict, holds_first_copy,
                              load_full_model_state_dict, load_full_optimizer_state_dict, local_part,
                              reshard, state_dict_names, uses_fsdp)

from bertpre.training.run_directory import (  # noqa: F401 - the run directory's layout, used from here too
    CHECKPOINT_PATTERN, CHECKPOINTS_DIR, MANIFEST_FILE, MODEL_CONFIG_FILE, OPTIMIZER_FILE, RUN_CONFIG_FILE, SCALER_FILE,
    SCHEDULER_FILE, STATE_FILE, WEIGHTS_FILE, TrainerState, checkpoint_name, is_complete, list_checkpoints,
    read_trainer_state, resolve_checkpoint)

if TYPE_CHECKING:
    from bertpre.core.configs import PretrainConfig


def _rank_file(stem: str, rank: int) -> str:
    return f"{stem}-rank{rank}.pt"



def read_checkpoint_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's model weights, under our parameter names (the tied decoder left out)."""
    from safetensors.torch import load_file

    try:
        return load_file(str(checkpoint / WEIGHTS_FILE))
    except Exception as error:  # safetensors raises its own error type for a damaged file
        raise BertpreError(f"{checkpoint / WEIGHTS_FILE}: unreadable ({str(error).splitlines()[0][:80]}); the "
                           "file is damaged or cut short") from None


def load_model_weights(checkpoint: Path, model: nn.Module) -> None:
    """Load a checkpoint's weights into ``model``, refusing weights that do not fit its config."""
    missing, unexpected = model.load_state_dict(read_checkpoint_weights(checkpoint), strict=False)
    _refuse_misfit(checkpoint, missing, unexpected, tied_key(model))


def _refuse_misfit(checkpoint: Path, missing: list[str], unexpected: list[str], tied: str) -> None:
    if unexpected or set(missing) - {tied}:
        raise BertpreError(f"{checkpoint}: weights do not fit the model config (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}); use the config it was saved with")


def _load_sharded_model_weights(checkpoint: Path, accelerator: Any, model: nn.Module) -> None:
    """Read the whole weights on the main process and give each process its shard.

    The names are checked on every process first: a process that raised alone would leave the
    others waiting for its shards forever."""
    from safetensors import safe_open

    with safe_open(str(checkpoint / WEIGHTS_FILE), framework="pt") as weights_file:
        saved = set(weights_file.keys())
    expected = state_dict_names(model)
    _refuse_misfit(checkpoint, sorted(expected - saved), sorted(saved - expected), tied_key(without_compile(model)))
    load_full_model_state_dict(model, read_checkpoint_weights(checkpoint) if accelerator.is_main_process else {})


def _rank_checksums(accelerator: Any, model: nn.Module) -> list[float]:
    """A checksum of the weights as every process sees them.

    Without sharding each process holds the whole weights, which data parallelism keeps equal: a
    difference means the processes diverged. Under FSDP each holds a shard; the checksum is the sum
    of the shards' sums, the same number on every process and the sum of the whole weights saved.
    """
    if uses_fsdp(accelerator):
        reshard(model)
    parameters = [p for p in accelerator.unwrap_model(model).parameters() if holds_first_copy(p)]
    local = local_weight_sum(parameters, accelerator.device).reshape(1)
    if uses_fsdp(accelerator):
        torch.distributed.all_reduce(local)
    return [float(x) for x in accelerator.gather(local)]


def local_weight_sum(parameters: list[torch.Tensor], device: Any) -> torch.Tensor:
    """The float64 sum of this process's parts of ``parameters``, on ``device``; 0 for none (under hybrid
    sharding a replica may hold no first copy at all, and must still join the all-reduce of the sums)."""
    with torch.no_grad():
        sums = [local_part(p).detach().double().sum().to(device) for p in parameters]
        return torch.stack([torch.zeros((), dtype=torch.float64, device=device), *sums]).sum()


def _rng_state() -> dict[str, Any]:
    """This process's random generators as tensors and plain numbers, which ``weights_only`` loading reads."""
    version, keys, gauss = random.getstate()
    name, numpy_keys, position, has_gauss, cached = np.random.get_state()
    state = {"python": [version, torch.tensor(keys, dtype=torch.int64), gauss],
             "numpy": [name, torch.from_numpy(numpy_keys.astype(np.int64)), position, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, keys, gauss = state["python"]
    random.setstate((int(version), tuple(int(k) for k in (keys.tolist() if torch.is_tensor(keys) else keys)), gauss))
    name, numpy_keys, position, has_gauss, cached = state["numpy"]
    numpy_keys = numpy_keys.numpy() if torch.is_tensor(numpy_keys) else numpy_keys  # tensors since 2026-12
    np.random.set_state((name, np.asarray(numpy_keys, dtype=np.uint32), int(position), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_array_globals() -> list[Any]:
    """What unpickling a plain numpy array needs, allowed for RNG files written before they held tensors: it
    rebuilds arrays of numbers and can call nothing else (an object array's items would need other globals)."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return [(_reconstruct, "numpy._core.multiarray._reconstruct"), (_reconstruct, "numpy.core.multiarray._reconstruct"),
            np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_tensors(path: Path, allowed: Sequence[Any] = ()) -> Any:
    """A torch file of tensors and plain data (``weights_only``: nothing in it can run code); a file that holds
    anything else, or is damaged, is refused in one line naming it. ``allowed``: further safe globals."""
    import pickle

    try:
        with torch.serialization.safe_globals(list(allowed)), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols: noise beside the refusal
            return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)", str(error))
        which = f" ({found.group(1)})" if found else ""
        raise BertpreError(f"{path}: holds Python objects{which}, not only tensors and numbers; refused unread: a "
                           "file that could run code is never loaded. Use checkpoints that bertpre wrote") from None
    except (RuntimeError, EOFError, ValueError) as error:
        raise BertpreError(f"{path}: damaged or cut short ({str(error).splitlines()[0][:80] if str(error) else type(error).__name__}); "
                           "resume from another checkpoint") from None


def save_tensors(value: Any, path: Path) -> None:
    """``torch.save`` through a Python file, so that a failed write keeps its errno (a full disk, a file too
    large): torch's own writer reports only "file write failed"."""
    with open(path, "wb") as handle:
        try:
            torch.save(value, handle)
        except RuntimeError as error:
            cause = os_error_of(error)
            if cause is None:
                raise
            raise OSError(cause.errno, cause.strerror, str(path)) from None


def save_checkpoint(accelerator: Any, model: nn.Module, optimizer: Any, scheduler: Any,
                    state: TrainerState, config: "PretrainConfig") -> Path:
    """Write a complete checkpoint atomically (temporary directory, then rename); keep the newest K.

    A write that fails for the machine's sake (a full disk, a quota, a file too large) removes the partial
    checkpoint and stops in one line naming the file and the errno; the checkpoints before it stay intact.
    """
    checkpoints = Path(config.output) / CHECKPOINTS_DIR
    staging = checkpoints / f".{checkpoint_name(state.step)}.partial"
    previous = list_checkpoints(config.output)
    try:
        return _write_checkpoint(accelerator, model, optimizer, scheduler, state, config, staging)
    except Exception as error:
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        kept = (f"{previous[-1]} is intact: free space and run the same command again to resume from it" if previous
                else "no earlier checkpoint exists: free space and run again")
        named = disk_error(staging, error, f"the checkpoint of step {state.step} was not saved; {kept}")
        if named is None:
            raise
        raise named from None


def _write_checkpoint(accelerator: Any, model: nn.Module, optimizer: Any, scheduler: Any, state: TrainerState,
                      config: "PretrainConfig", staging: Path) -> Path:
    checkpoints = staging.parent
    final = checkpoints / checkpoint_name(state.step)
    if accelerator.is_main_process:
        for leftover in [*checkpoints.glob(".step-*.partial"), *checkpoints.glob(".step-*.deleting")]:
            shutil.rmtree(leftover, ignore_errors=True)  # what a kill during an earlier save left
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    state.rank_checksums = _rank_checksums(accelerator, model)
    if len(set(state.rank_checksums)) > 1:
        raise BertpreError(f"step {state.step}: processes hold different weights {state.rank_checksums}; "
                           "data-parallel synchronisation failed")
    save_tensors(_rng_state(), staging / _rank_file("rng", accelerator.process_index))
    if uses_fsdp(accelerator):  # every process sends its shards; the main process gets them whole
        full_state = full_model_state_dict(model)
        optimizer_state = full_optimizer_state_dict(model, optimizer)
    else:
        full_state = accelerator.get_state_dict(model)
        optimizer_state = optimizer.state_dict() if accelerator.is_main_process else {}
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        tied = tied_key(unwrapped)
        weights = {k: v.detach().cpu().contiguous() for k, v in full_state.items() if k != tied}
        _save_weights(weights, staging / WEIGHTS_FILE)
        save_tensors(optimizer_state, staging / OPTIMIZER_FILE)
        save_tensors(scheduler.state_dict(), staging / SCHEDULER_FILE)
        if accelerator.scaler is not None:
            save_tensors(accelerator.scaler.state_dict(), staging / SCALER_FILE)
        unwrapped.config.to_json_file(str(staging / MODEL_CONFIG_FILE))
        save_config(config, staging / RUN_CONFIG_FILE)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        apply_umask(staging)
        write_manifest(staging)
        # The state file goes last: a directory without it is never taken for a checkpoint.
        (staging / STATE_FILE).write_text(json.dumps(vars(state), indent=2), encoding="utf-8")
        if final.exists():
            _remove(final)
        os.replace(staging, final)
        for old in list_checkpoints(config.output)[:-config.checkpointing.keep_checkpoints]:
            _remove(old)
    accelerator.wait_for_everyone()
    return final


def _save_weights(weights: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors' ``save_file``, its write errors as an ``OSError`` naming the file (it raises its own type)."""
    from safetensors.torch import save_file

    try:
        save_file(weights, str(path), metadata={"format": "pt"})
    except Exception as error:
        cause = os_error_of(error)
        if cause is None:
            raise
        raise OSError(cause.errno, cause.strerror, str(path)) from None


def _remove(checkpoint: Path) -> None:
    """Rename, then delete: a kill halfway leaves a hidden directory, never a checkpoint missing files."""
    doomed = checkpoint.with_name(f".{checkpoint.name}.deleting")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(checkpoint, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _file_digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path) -> None:
    """Record the size and hash of every file of a checkpoint being written, to verify it later."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name not in (MANIFEST_FILE, STATE_FILE))
    manifest = {p.name: {"size": p.stat().st_size, "blake2b": _file_digest(p)} for p in files}
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why a checkpoint cannot be trusted (naming the file), or None when it is intact.

    Checks the state file and every file its manifest lists (size, then hash); checkpoints written
    before manifests existed get the state-file check only.
    """
    try:
        read_trainer_state(checkpoint)
    except (OSError, ValueError, TypeError) as error:
        return f"{checkpoint / STATE_FILE}: unreadable ({type(error).__name__})"
    manifest_path = checkpoint / MANIFEST_FILE
    if not manifest_path.exists():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{manifest_path}: unreadable"
    for name, expected in manifest.items():
        file = checkpoint / name
        if not file.is_file():
            return f"{file}: missing"
        if file.stat().st_size != expected["size"]:
            return f"{file}: {file.stat().st_size:,} bytes, {expected['size']:,} when saved (cut short?)"
        if _file_digest(file) != expected["blake2b"]:
            return f"{file}: content differs from when it was saved (corrupted)"
    return None


def verified(checkpoint: Path) -> Path:
    """``checkpoint`` when intact; otherwise a one-line error naming the damaged file."""
    problem = checkpoint_problem(checkpoint)
    if problem:
        raise BertpreError(f"{problem}; the checkpoint {checkpoint} cannot be used")
    return checkpoint


def newest_intact_checkpoint(output: str | Path) -> Path | None:
    """The newest checkpoint of a run that passes verification; damaged newer ones are skipped with a warning."""
    for checkpoint in reversed(list_checkpoints(output)):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return checkpoint
        warnings.warn(f"skipping damaged checkpoint: {problem}", stacklevel=2)
    return None


def _keyed_by_name(optimizer_state: dict[str, Any]) -> bool:
    """Whether an optimizer state was saved under FSDP (parameter names) rather than without (positions)."""
    names = [name for group in optimizer_state["param_groups"] for name in group["params"]]
    return bool(names) and all(isinstance(name, str) for name in names)


def refuse_other_parallelism(checkpoint: Path, under_fsdp: bool) -> None:
    """Before anything is built: a checkpoint saved under FSDP resumes only under FSDP, and one saved without it
    only without (their optimizer states are keyed differently); the file is memory-mapped, its tensors unread."""
    path = checkpoint / OPTIMIZER_FILE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, weights_only=True, map_location="cpu", mmap=True)
    except Exception:  # noqa: BLE001 - a damaged file is named where it is read for real
        return
    saved_under_fsdp = _keyed_by_name(state)
    if saved_under_fsdp and not under_fsdp:
        raise BertpreError(f"{checkpoint}: saved under FSDP (optimizer state keyed by parameter name); resume it "
                           "under FSDP (accelerate launch --config_file jobs/accelerate/fsdp.yaml)")
    if under_fsdp and not saved_under_fsdp:
        raise BertpreError(f"{checkpoint}: saved without FSDP (optimizer state keyed by position); resume it "
                           "without FSDP, or start a new phase from its weights with --init-from")


def _read_optimizer_state(checkpoint: Path) -> dict[str, Any]:
    state = load_tensors(checkpoint / OPTIMIZER_FILE)
    if _keyed_by_name(state):
        raise BertpreError(f"{checkpoint}: saved under FSDP (optimizer state keyed by parameter name); resume it "
                           "under FSDP (accelerate launch --config_file jobs/accelerate/fsdp.yaml)")
    return state


def _load_sharded_optimizer(checkpoint: Path, accelerator: Any, model: nn.Module, optimizer: Any) -> None:
    """The whole optimizer state, read on the main process, sharded into ``optimizer``."""
    state: dict[str, Any] = {}
    if accelerator.is_main_process:
        state = load_tensors(checkpoint / OPTIMIZER_FILE)
    keyed_by_name = torch.tensor([float(accelerator.is_main_process and _keyed_by_name(state))],
                                 device=accelerator.device)
    torch.distributed.broadcast(keyed_by_name, src=0)  # every process must make the same decision
    if not keyed_by_name.item():
        raise BertpreError(f"{checkpoint}: saved without FSDP (optimizer state keyed by position); resume it "
                           "without FSDP, or start a new phase from its weights with --init-from")
    load_full_optimizer_state_dict(model, optimizer, state)


def load_checkpoint(path: Path, accelerator: Any, model: nn.Module, optimizer: Any, scheduler: Any) -> TrainerState:
    """Restore model, optimizer, scheduler, scaler, this rank's RNG and the counters from ``path``."""
    if not is_complete(path):
        raise BertpreError(f"{path}: not a complete checkpoint (no {STATE_FILE})")
    verified(path)
    if uses_fsdp(accelerator):
        _load_sharded_model_weights(path, accelerator, model)
        _load_sharded_optimizer(path, accelerator, model, optimizer)
    else:
        load_model_weights(path, accelerator.unwrap_model(model))
        optimizer.load_state_dict(_read_optimizer_state(path))
    scheduler.load_state_dict(load_tensors(path / SCHEDULER_FILE))
    if accelerator.scaler is not None and (path / SCALER_FILE).exists():
        accelerator.scaler.load_state_dict(load_tensors(path / SCALER_FILE))
    rng_file = path / _rank_file("rng", accelerator.process_index)
    if not rng_file.exists():
        raise BertpreError(f"{path}: saved with fewer processes (no {rng_file.name}); an exact resume needs "
                           "the same number of processes")
    _set_rng_state(load_tensors(rng_file, allowed=_numpy_array_globals()))
    return read_trainer_state(path)
