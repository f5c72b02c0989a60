"""The one Accelerator set-up of every training command: device, precision, trackers, logging directory.

Precision: the command's own ``mixed_precision`` when set (YAML or command line); else the choice of
``accelerate launch`` (its ``--config_file``, or the default config of ``accelerate config``), which
the launcher hands to every process as ``ACCELERATE_MIXED_PRECISION``; else bf16 on a GPU. CPU runs
train in fp32 unless the command's own option says bf16: autocast to bf16 is 1.5× faster for BERT-mini
on a CPU with bf16 instructions, but fp32 keeps CPU runs exact and comparable with each other, so a
launcher's default never switches it on; fp16 has no CPU autocast and stays fp32.

Trackers: ``report_to`` names Accelerate's trackers (``tensorboard``, ``wandb``, ``mlflow``, …),
``all`` (every one installed) or ``none``; ``metrics.jsonl`` is written in every case.
"""

from __future__ import annotations

import dataclasses
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch

from bertpre.core.errors import BertpreError, ConfigError
from bertpre.core.locking import OutputLock

LAUNCHER_PRECISION_ENV = "ACCELERATE_MIXED_PRECISION"
"""Where ``accelerate launch`` puts the mixed precision of its config for the processes it starts."""

PRECISIONS = ("no", "bf16", "fp16")
GPU_DEFAULT_PRECISION = "bf16"
TENSORBOARD_DIR = "tensorboard"
"""TensorBoard's event files go to ``OUTPUT/tensorboard/``."""

TRACKER_PACKAGES = {
    # tracker name in Accelerate → the PyPI package that provides it
    "tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "comet_ml": "comet-ml", "aim": "aim",
    "mlflow": "mlflow", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab",
}
# The keyword each tracker's init takes for the run's name (the project is Accelerate's project_name).
_RUN_NAME_KEYWORD = {"wandb": "name", "trackio": "name", "mlflow": "run_name", "swanlab": "experiment_name",
                     "clearml": "task_name"}


@dataclasses.dataclass(frozen=True)
class PrecisionChoice:
    """What to pass as ``Accelerator(mixed_precision=...)`` (None: Accelerate takes its launcher's
    choice) and, when what applies is not what was asked for somewhere, one line saying so."""

    mixed_precision: Optional[str]
    note: Optional[str] = None


def choose_precision(requested: Optional[str], use_cpu: bool, launcher: Optional[str]) -> PrecisionChoice:
    """The precision to train in, from the option (``requested``, None when unset), the device and the
    launcher's ``ACCELERATE_MIXED_PRECISION`` (None when not launched by ``accelerate launch``)."""
    launcher = (launcher.strip().lower() or None) if launcher else None
    if use_cpu and requested == "bf16":
        return PrecisionChoice("bf16")
    if use_cpu:
        asked = requested if requested is not None else launcher
        source = "mixed_precision" if requested is not None else f"accelerate launch's config ({LAUNCHER_PRECISION_ENV})"
        note = f"mixed precision: {source} asks for {asked}, but CPU runs train in fp32 (or bf16 when --mixed-precision says so)" if asked not in (None, "no") else None
        return PrecisionChoice("no", note)
    if requested is not None:
        note = None
        if launcher is not None and launcher != requested:
            note = (f"mixed precision: {requested} (bertpre's mixed_precision option) applies, not {launcher} "
                    f"from accelerate launch's config")
        return PrecisionChoice(requested, note)
    if launcher is None:
        return PrecisionChoice(GPU_DEFAULT_PRECISION)
    if launcher not in PRECISIONS:
        raise ConfigError(f"mixed_precision: accelerate launch's config asks for {launcher} ({LAUNCHER_PRECISION_ENV}); "
                          f"bertpre trains in {', '.join(PRECISIONS)}: set one there or pass --mixed-precision")
    return PrecisionChoice(None)


def describe_precision(mixed_precision: str) -> str:
    """How a summary names a precision: ``fp32``, ``bf16 mixed``, ``fp16 mixed (loss scaling)``."""
    return {"no": "fp32", "bf16": "bf16 mixed", "fp16": "fp16 mixed (loss scaling)"}.get(mixed_precision,
                                                                                         mixed_precision)


def installed_trackers() -> list[str]:
    """The names of Accelerate's trackers whose package is installed."""
    from accelerate.tracking import get_available_trackers

    return [str(tracker) for tracker in get_available_trackers()]


def resolve_trackers(report_to: Sequence[str]) -> list[str]:
    """The trackers to log to: ``report_to`` with ``all`` expanded and ``none`` removed. A tracker whose
    package is missing is a one-line :class:`ConfigError` naming the package to install."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    installed = installed_trackers()
    names: list[str] = []
    for name in report_to:
        if name == "none":
            continue
        if name not in ("all", *LOGGER_TYPE_TO_CLASS):
            raise ConfigError(f"report_to: {name!r} is not a tracker Accelerate knows; choose from "
                              f"{', '.join(LOGGER_TYPE_TO_CLASS)}, all or none")
        if name != "all" and name not in installed:
            raise ConfigError(f"report_to: {name} is not installed; `pip install {TRACKER_PACKAGES.get(name, name)}`, "
                              "or leave it out of --report-to")
        names += installed if name == "all" else [name]
    return list(dict.fromkeys(names))


def uses_cpu(cpu: bool) -> bool:
    """Whether a command runs on the CPU: its ``cpu`` option, ``accelerate launch --cpu``, or no GPU."""
    from accelerate.utils import parse_flag_from_env

    return cpu or parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()


def process_state(cpu: bool) -> Any:
    """Accelerate's ``PartialState`` (rank, main process, ``wait_for_everyone``) before any Accelerator exists,
    on the device :func:`make_accelerator` will use; it joins the launcher's process group."""
    from accelerate import PartialState

    return PartialState(cpu=uses_cpu(cpu))


@contextmanager
def locked_output(output: str | Path, cpu: bool) -> Iterator[None]:
    """Hold ``output``'s lock (``bertpre/core/locking.py``) for a run of one or many processes: the main process
    takes it, and every process learns whether it could, so that all of them refuse alike (a second launch on
    the same output) instead of the others waiting on a main process that has gone."""
    processes = process_state(cpu)
    if processes.num_processes == 1:
        with OutputLock(output):
            yield
        return
    from accelerate.utils import broadcast_object_list

    lock, refusal = OutputLock(output), [""]
    if processes.is_main_process:
        try:
            lock.acquire()
        except BertpreError as error:
            refusal = [str(error)]
    broadcast_object_list(refusal)
    if refusal[0]:
        raise BertpreError(refusal[0])
    try:
        yield
    finally:
        lock.release()  # a no-op on the processes that never took it


def finish_trackers(accelerator: Any) -> None:
    """Flush and close the accelerator's trackers, keeping the process group (unlike ``end_training``):
    one command may train several times (seeds, GLUE tasks), and Accelerate cannot set the group up again."""
    for tracker in accelerator.trackers:
        tracker.finish()


def make_accelerator(output: str, cpu: bool, mixed_precision: Optional[str], gradient_accumulation_steps: int = 1,
                     report_to: Sequence[str] = ("tensorboard",)) -> Any:
    """An ``accelerate.Accelerator`` in the precision :func:`choose_precision` picks (saying so when it
    differs from what was asked), logging to ``report_to``'s trackers under ``output``."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.tracking import TensorBoardTracker
    from accelerate.utils import ProjectConfiguration

    use_cpu = uses_cpu(cpu)
    choice = choose_precision(mixed_precision, use_cpu, os.environ.get(LAUNCHER_PRECISION_ENV))
    # TensorBoard as an instance, so its files stay in OUTPUT/tensorboard whatever the project is called.
    trackers = [TensorBoardTracker(TENSORBOARD_DIR, str(output)) if name == "tensorboard" else name
                for name in resolve_trackers(report_to)]
    # One process may train several times (quickstart, comparisons, tests), each in its own precision:
    # Accelerate keeps the first one process-wide and refuses another, so each command starts its own.
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(cpu=use_cpu, mixed_precision=choice.mixed_precision,
                              gradient_accumulation_steps=gradient_accumulation_steps, log_with=trackers or None,
                              project_config=ProjectConfiguration(project_dir=str(output), logging_dir=str(output)))
    if choice.note:
        accelerator.print(choice.note)
    return accelerator


def start_trackers(accelerator: Any, output: str, project: str, run_name: Optional[str],
                   hyperparameters: dict[str, Any]) -> None:
    """Start the accelerator's trackers: ``project``, the run named ``run_name`` (default: the output
    directory's name) where the tracker takes a name, and the flattened ``hyperparameters``."""
    name = run_name or Path(output).resolve().name
    init_kwargs = {tracker: {keyword: name} for tracker, keyword in _RUN_NAME_KEYWORD.items()}
    accelerator.init_trackers(project, config=flat_hyperparameters(hyperparameters), init_kwargs=init_kwargs)


def flat_hyperparameters(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as the flat ``group.key: value`` mapping trackers take: lists as text, unset left out."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flat_hyperparameters(value, f"{prefix}{key}."))
        elif isinstance(value, (list, tuple)):
            flat[f"{prefix}{key}"] = ",".join(map(str, value))
        elif value is not None:
            flat[f"{prefix}{key}"] = value
    return flat
