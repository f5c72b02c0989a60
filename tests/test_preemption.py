"""Preemption under SLURM without a SLURM: a fake `scontrol` on PATH records every call.

The real loop on a real SLURM is `make test-slurm` (tests/slurm_requeue.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from bertpre.training.checkpoint import list_checkpoints
from bertpre.training.preemption import EXIT_PREEMPTED, exit_status, requeue_after_stop

from .conftest import REPO, prepare_wiki64

OPTIONS = ["--model", str(REPO / "configs" / "model" / "tiny.yaml"), "--global-batch-size", "16",
           "--per-device-batch-size", "8", "--warmup-steps", "2", "--log-every", "1", "--eval-every", "0",
           "--checkpoint-every", "0", "--num-workers", "0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_wiki64(tmp_path_factory.mktemp("preemption") / "wiki64", eval_fraction=0.2)


@pytest.fixture
def scontrol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake `scontrol` first on PATH, inside a fake SLURM job 4242; returns the file of its calls
    (one line each: the caller's RANK, then its arguments). FAKE_SCONTROL_STATUS sets its exit status."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls"
    fake = bin_dir / "scontrol"
    fake.write_text(f'#!/bin/sh\necho "${{RANK:-none}} $*" >> {calls}\n'
                    '[ "${FAKE_SCONTROL_STATUS:-0}" = 0 ] || echo "fake scontrol failed" >&2\n'
                    'exit ${FAKE_SCONTROL_STATUS:-0}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    return calls


def recorded(calls: Path) -> list[str]:
    return calls.read_text().splitlines() if calls.exists() else []


def pretrain_command(data: Path, output: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "bertpre", "pretrain", "--data", str(data), "--output", str(output),
            "--max-steps", str(steps), *OPTIONS, "--cpu", "true"]


def signal_tree(root: psutil.Process, signum: int) -> None:
    """Signal a process and all its descendants, as SLURM signals every process of a job step."""
    for process in [root, *root.children(recursive=True)]:
        try:
            process.send_signal(signum)
        except psutil.NoSuchProcess:
            pass


def wait_until(condition, process: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, f"exited before {what}: {process.communicate()}"
        assert time.time() < deadline, f"never {what}"
        time.sleep(0.02)


# ---- requeue_after_stop and exit_status, in process -----------------------------------------------

ONE_PROCESS = SimpleNamespace(is_main_process=True, num_processes=1, device="cpu")


def test_only_sigusr1_inside_a_slurm_job_requeues(scontrol: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert requeue_after_stop(ONE_PROCESS, "SIGUSR1")
    assert recorded(scontrol) == ["none requeue 4242"]
    assert not requeue_after_stop(ONE_PROCESS, "SIGTERM")  # scancel sends SIGTERM: a cancel must stay one
    assert not requeue_after_stop(ONE_PROCESS, "")
    monkeypatch.delenv("SLURM_JOB_ID")
    assert not requeue_after_stop(ONE_PROCESS, "SIGUSR1")
    assert recorded(scontrol) == ["none requeue 4242"]


def test_a_failed_requeue_is_reported_and_the_run_exits_as_preempted(scontrol: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("FAKE_SCONTROL_STATUS", "1")
    assert not requeue_after_stop(ONE_PROCESS, "SIGUSR1")
    assert "could not requeue the job (scontrol requeue 4242 exited 1: fake scontrol failed)" in capsys.readouterr().out
    assert exit_status("SIGUSR1", requeued=False) == EXIT_PREEMPTED == 75


def test_exit_status_tells_finished_requeued_and_preempted_apart() -> None:
    assert exit_status("", requeued=False) == 0
    assert exit_status("SIGUSR1", requeued=True) == 0  # the job comes back by itself: no failure for SLURM
    assert exit_status("SIGTERM", requeued=False) == EXIT_PREEMPTED


# ---- whole runs -----------------------------------------------------------------------------------


def test_a_run_that_ends_normally_in_a_slurm_job_never_requeues(data: Path, scontrol: Path, tmp_path: Path) -> None:
    result = subprocess.run(pretrain_command(data, tmp_path / "run", 2), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "max_steps reached" in result.stdout
    assert recorded(scontrol) == []


# Runs `bertpre pretrain` and sends it SIGUSR1 itself at the moment it starts importing torch (seconds
# of loading on a big job's start-up, when SLURM's signal may well land).
SIGNAL_WHILE_TORCH_LOADS = """
import os, signal, sys

class SignalOnTorchImport:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGUSR1)
        return None

sys.meta_path.insert(0, SignalOnTorchImport())
from bertpre.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_signal_while_torch_loads_is_kept_the_run_stops_after_one_step_and_requeues(
        data: Path, scontrol: Path, tmp_path: Path) -> None:
    output = tmp_path / "run"
    command = [sys.executable, "-c", SIGNAL_WHILE_TORCH_LOADS, *pretrain_command(data, output, 50)[3:]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr  # requeued: SLURM brings the job back, not a failure
    assert "stop signal (SIGUSR1): checkpoint saved" in result.stdout and "requeued SLURM job 4242" in result.stdout
    assert [p.name for p in list_checkpoints(output)] == ["step-00000001"]
    assert recorded(scontrol) == ["none requeue 4242"]


def test_sigusr1_on_the_step_that_ends_the_run_finishes_it_without_a_requeue(data: Path, scontrol: Path,
                                                                             tmp_path: Path) -> None:
    output = tmp_path / "run"
    command = [sys.executable, "-c", SIGNAL_WHILE_TORCH_LOADS, *pretrain_command(data, output, 1)[3:]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "max_steps reached" in result.stdout and "requeued" not in result.stdout
    assert recorded(scontrol) == []  # the run is done: a requeued job would only start a finished run again
    assert [p.name for p in list_checkpoints(output)] == ["step-00000001"]


def test_the_trackers_are_flushed_before_the_job_is_requeued(data: Path, scontrol: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """SLURM's SIGTERM follows `scontrol requeue` at once: logs flushed after it may be cut off."""
    from accelerate.tracking import TensorBoardTracker

    from bertpre.training import pretrain as pretrain_module
    from bertpre.core.config import load_config
    from bertpre.core.configs import PretrainConfig
    from bertpre.training.preemption import StopRequests

    events: list[str] = []
    finish_tracker, requeue = TensorBoardTracker.finish, pretrain_module.requeue_after_stop

    def recorded_finish(tracker: TensorBoardTracker) -> None:
        events.append("trackers finished")
        finish_tracker(tracker)

    def recorded_requeue(accelerator: object, stop_signal: str) -> bool:
        events.append("requeue")
        return requeue(accelerator, stop_signal)

    monkeypatch.setattr(TensorBoardTracker, "finish", recorded_finish)
    monkeypatch.setattr(pretrain_module, "requeue_after_stop", recorded_requeue)
    requests = StopRequests()
    requests.received.add("SIGUSR1")  # SLURM's time-limit warning, during the first step
    config = load_config(PretrainConfig, None, {
        "data": str(data), "output": str(tmp_path / "run"), "model": str(REPO / "configs" / "model" / "tiny.yaml"),
        "global_batch_size": "16", "per_device_batch_size": "8", "max_steps": "5", "eval_every": "0",
        "num_workers": "0", "cpu": "true", "report_to": ["tensorboard"]})
    summary = pretrain_module.pretrain(config, show_progress=False, stop_requests=requests)
    assert summary.requeued and summary.step == 1
    assert events == ["trackers finished", "requeue"]


@pytest.mark.slow
def test_two_processes_in_a_slurm_job_requeue_it_once_from_the_main_process(data: Path, scontrol: Path,
                                                                            tmp_path: Path) -> None:
    output = tmp_path / "run"
    # jobs/pretrain_cpu.slurm's launch: the launcher ignores SIGUSR1, the workers catch it
    launch = ["bash", "-c", 'trap "" USR1; exec "$@"', "launch", sys.executable, "-m", "accelerate.commands.launch",
              "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "--main_process_port", "29533", "-m", "bertpre", "pretrain",
              *pretrain_command(data, output, 60)[4:]]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(launch, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    wait_until((output / "metrics.jsonl").exists, process, "trained a step")
    signal_tree(psutil.Process(process.pid), signal.SIGUSR1)  # launcher and both workers, as SLURM does
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stdout + stderr
    assert recorded(scontrol) == ["0 requeue 4242"]  # once, from rank 0
    assert stdout.count("requeued SLURM job 4242") == 1
    stopped_at = int(list_checkpoints(output)[-1].name[5:])
    assert 1 <= stopped_at < 60
