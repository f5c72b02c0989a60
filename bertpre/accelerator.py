"""The one Accelerator set-up of every training command: device, precision, tracker, logging directory."""

from __future__ import annotations

from typing import Any

import torch


def make_accelerator(output: str, cpu: bool, mixed_precision: str, gradient_accumulation_steps: int = 1) -> Any:
    """An ``accelerate.Accelerator`` logging to TensorBoard under ``output``; fp32 on the CPU."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    use_cpu = cpu or not torch.cuda.is_available()
    return Accelerator(cpu=use_cpu, mixed_precision="no" if use_cpu else mixed_precision,
                       gradient_accumulation_steps=gradient_accumulation_steps, log_with="tensorboard",
                       project_config=ProjectConfiguration(project_dir=str(output), logging_dir=str(output)))
