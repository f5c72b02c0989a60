"""Fully sharded data parallel (FSDP2, torch ``fully_shard``): what is supported, and whole state on save.

Under FSDP every process holds a shard of each parameter (a ``DTensor``) and of its optimizer
state. Checkpoints keep the layout they have without sharding: the model weights whole, in one
file that ``export`` and ``transformers`` read, and the optimizer state whole too (keyed by
parameter name rather than by position). Saving gathers each tensor in turn to the main process's
CPU memory. Loading reads the whole weights and optimizer state on the main process only and sends
each process its shard; every process still verifies the checkpoint's files and reads the weight
names, the scheduler and its own RNG state itself. Every process must call these functions together.

Accelerate's FSDP1 (``fsdp_version: 1``, flat parameters) is refused: LAMB needs each parameter's
norm, which flat parameters do not keep, and FSDP2 is torch's supported path.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from bertpre.core.errors import BertpreError


def uses_fsdp(accelerator: Any) -> bool:
    """Whether the run shards parameters and optimizer state across processes (Accelerate's FSDP)."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def refuse_unsupported_fsdp(accelerator: Any) -> None:
    """A one-line error, before anything is trained, for an FSDP set-up that bertpre does not support."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and not uses_fsdp(accelerator):
        raise BertpreError("the accelerate config asks for FSDP (distributed_type: FSDP), which Accelerate runs on GPUs "
                           "only; on CPUs launch plain data parallelism (accelerate launch --multi_gpu)")
    if uses_fsdp(accelerator) and accelerator.state.fsdp_plugin.fsdp_version != 2:
        raise BertpreError("the accelerate config sets fsdp_version: 1, which bertpre does not support; set "
                           "fsdp_version: 2 (see jobs/accelerate/fsdp.yaml)")


def without_compile(model: nn.Module) -> nn.Module:
    """The module under a ``torch.compile`` wrapper (parameter names without ``_orig_mod.``)."""
    return getattr(model, "_orig_mod", model)


def base_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer under Accelerate's wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


def _options(**options: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **options)


def full_model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole weights on the main process's CPU (an empty dict on the others)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(without_compile(model), options=_options(cpu_offload=True))


def full_optimizer_state_dict(model: nn.Module, optimizer: Any) -> dict[str, Any]:
    """The whole optimizer state, keyed by parameter name, on the main process's CPU (empty elsewhere)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(without_compile(model), base_optimizer(optimizer),
                                    options=_options(cpu_offload=True))


def load_full_model_state_dict(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Shard whole weights, read on the main process only (``{}`` elsewhere), into ``model``.

    A tied parameter is loaded once, under its first name; check the names before (not strict here).
    """
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(without_compile(model), weights, options=_options(broadcast_from_rank0=True, strict=False))


def load_full_optimizer_state_dict(model: nn.Module, optimizer: Any, state: dict[str, Any]) -> None:
    """Shard a whole optimizer state (from :func:`full_optimizer_state_dict`, on the main process only)."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(without_compile(model), base_optimizer(optimizer), state,
                             options=_options(broadcast_from_rank0=True))


def reshard(model: nn.Module) -> None:
    """Put every FSDP unit back in its sharded state: a forward pass without backward (an evaluation)
    leaves the root unit's parameters gathered whole on every process."""
    from torch.distributed.fsdp import FSDPModule

    for module in without_compile(model).modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def state_dict_names(model: nn.Module) -> set[str]:
    """The names a whole state dict of ``model`` has, tied parameters under each of their names
    (FSDP2's state dict holds shards: no process sends anything)."""
    return set(without_compile(model).state_dict())


def local_part(tensor: torch.Tensor) -> torch.Tensor:
    """The part of a tensor this process holds: its shard of a ``DTensor``, else the tensor itself."""
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def holds_first_copy(tensor: torch.Tensor) -> bool:
    """Whether this process's shard counts in a sum over all processes: always, except on the second and
    later copies of a tensor replicated along some mesh dimension (hybrid sharding)."""
    from torch.distributed.tensor import DTensor

    if not isinstance(tensor, DTensor):
        return True
    coordinate = tensor.device_mesh.get_coordinate() or []
    return all(coordinate[dim] == 0 for dim, placement in enumerate(tensor.placements) if placement.is_replicate())
