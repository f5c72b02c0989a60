"""Preemption: stop signals, the exit status of a stopped run, and requeueing the SLURM job.

The loop under SLURM (``jobs/pretrain_multinode.slurm``): SLURM sends SIGUSR1 to every process of
the job step some minutes before the time limit (``--signal=USR1@120``; the launchers ignore it,
the workers catch it) → all ranks finish their step and save one checkpoint → the main process
runs ``scontrol requeue $SLURM_JOB_ID`` → SLURM puts the job back in the queue → when it starts
again, ``resume: auto`` continues from that checkpoint, ending bit-identical to an uninterrupted run.

SIGTERM (``scancel``, SLURM's own preemption, ``kill``) stops the run the same way but never
requeues: a cancelled job must stay cancelled, and SLURM requeues the jobs it preempts itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any

# sysexits' EX_TEMPFAIL: stopped by a signal after saving a checkpoint, nothing will restart it;
# running the same command again resumes. Distinct from 0 (finished), 1 (bug) and 2 (user error).
EXIT_PREEMPTED = 75
REQUEUE_SIGNAL = "SIGUSR1"  # the job scripts' time-limit warning: checkpoint, then requeue
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequests:
    """Catches SIGTERM / SIGUSR1 while a run starts and trains; the loop checkpoints and stops at the next step."""

    def __init__(self) -> None:
        self.received: set[str] = set()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequests":
        for sig in _STOP_SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread (e.g. a notebook)
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        self.received.add(signal.Signals(signum).name)

    def __exit__(self, *_exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def flags(self) -> list[float]:
        """[SIGTERM received, SIGUSR1 received], for the ranks to reduce (max) into one decision."""
        return [float("SIGTERM" in self.received), float(REQUEUE_SIGNAL in self.received)]


def stop_signal_from_flags(flags: Any) -> str:
    """The stop signal all ranks act on, from reduced :meth:`StopRequests.flags`: '' (none),
    'SIGTERM' (any rank got it: it wins, a cancel must not requeue) or 'SIGUSR1'."""
    return "SIGTERM" if flags[0] else REQUEUE_SIGNAL if flags[1] else ""


def slurm_job_id() -> str:
    """The SLURM job this process runs in ('' outside SLURM)."""
    return os.environ.get("SLURM_JOB_ID", "")


def requeue_slurm_job(job_id: str) -> str:
    """Run ``scontrol requeue JOB``; return '' on success, else why it failed (one line)."""
    try:
        result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"scontrol requeue {job_id}: {error}"
    if result.returncode:
        return f"scontrol requeue {job_id} exited {result.returncode}: {(result.stderr or result.stdout).strip()}"
    return ""


def requeue_after_stop(accelerator: Any, stop_signal: str) -> bool:
    """After a signal stop whose checkpoint every rank has finished writing: requeue the SLURM job
    from the main process, once, when the signal was SIGUSR1 inside a SLURM job. Every rank learns
    the outcome (the broadcast also holds the other ranks until the requeue is done); returns it."""
    import torch  # here, not at the top: the CLI installs the handlers before torch loads (seconds)

    requeued = False
    if stop_signal == REQUEUE_SIGNAL and slurm_job_id():
        if accelerator.is_main_process:
            problem = requeue_slurm_job(slurm_job_id())
            requeued = not problem
            print(f"requeued SLURM job {slurm_job_id()}: it resumes from this checkpoint when it starts again"
                  if requeued else f"bertpre: warning: could not requeue the job ({problem}); resubmit it to resume",
                  flush=True)
        if accelerator.num_processes > 1:
            from accelerate.utils import broadcast

            requeued = bool(broadcast(torch.tensor([float(requeued)], device=accelerator.device)).item())
    return requeued


def exit_status(stop_signal: str, requeued: bool) -> int:
    """0 when the run finished or its SLURM job was requeued (it comes back by itself); EXIT_PREEMPTED
    when a signal stopped it and nothing will restart it."""
    return EXIT_PREEMPTED if stop_signal and not requeued else 0
