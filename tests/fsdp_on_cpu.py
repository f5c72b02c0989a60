"""Run `bertpre` with Accelerate's FSDP on the CPU, which Accelerate itself runs on GPUs only.

Under ``accelerate launch --config_file jobs/accelerate/fsdp.yaml`` on a machine without CUDA,
Accelerate makes a CPU data-parallel (gloo) state and ignores the FSDP plugin. This entry point
switches that state to FSDP with the plugin the launcher described in the environment, so that
``accelerator.prepare`` takes Accelerate's own FSDP2 path (torch's ``fully_shard`` works on the
CPU with gloo). Everything else is the real ``bertpre`` command. Used by tests/test_fsdp.py:

    accelerate launch --config_file jobs/accelerate/fsdp.yaml --num_processes 2 --mixed_precision no \\
        tests/fsdp_on_cpu.py pretrain --data ... --output ...
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bertpre.training.pretrain  # noqa: E402
from bertpre.cli import main  # noqa: E402

_make_accelerator = bertpre.training.pretrain.make_accelerator


def use_fsdp_on_cpu(accelerator: Any, plugin: Any) -> None:
    """Make a CPU data-parallel ``accelerator`` prepare models and act as under FSDP with ``plugin``."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType

    accelerator.state.fsdp_plugin = plugin
    # Both shared states: every AcceleratorState() made later copies the process state's type.
    accelerator.state.distributed_type = PartialState().distributed_type = DistributedType.FSDP


def make_fsdp_accelerator(*args: Any, **kwargs: Any) -> Any:
    """bertpre's accelerator, switched to the FSDP plugin that the launcher's environment describes."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    accelerator = _make_accelerator(*args, **kwargs)
    if accelerator.num_processes > 1:
        use_fsdp_on_cpu(accelerator, FullyShardedDataParallelPlugin())
    return accelerator


if __name__ == "__main__":
    bertpre.training.pretrain.make_accelerator = make_fsdp_accelerator
    sys.exit(main())
