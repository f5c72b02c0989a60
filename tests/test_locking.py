"""One writer per output: every command that writes locks its output; a second writer refuses naming the holder;
a stale lock (a dead process here, a silent one elsewhere, an earlier run of the same SLURM job) is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bertpre.cli import main
from bertpre.core import locking
from bertpre.core.errors import BertpreError
from bertpre.core.locking import OutputLock, lock_path

from .conftest import REPO, english_articles
from .test_faults import refused

HOLD = """
import sys, time
from bertpre.core.locking import OutputLock
locks = [OutputLock(path).acquire() for path in sys.argv[1:]]
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path: Path):
    """A process holding the locks of the outputs it is given, as a running command holds its output's."""
    processes = []

    def hold(*outputs: Path) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", HOLD, *map(str, outputs)], stdout=subprocess.PIPE, text=True,
                                   env={**os.environ, "PYTHONPATH": str(REPO)})
        assert process.stdout.readline().strip() == "held"
        processes.append(process)
        return process

    yield hold
    for process in processes:
        process.kill()
        process.wait()


def test_every_command_refuses_an_output_another_writer_holds(tmp_path: Path, holder, capsys: pytest.CaptureFixture,
                                                              wiki64_with_eval: Path) -> None:
    outputs = {name: tmp_path / name for name in ("tok", "data", "run", "hf", "ft", "glue", "pred.jsonl", "quick")}
    process = holder(*outputs.values())
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"row {i}.", "label": i % 2}) + "\n" for i in range(8)))
    model = REPO / "tokenizer"  # never read: the lock is taken first
    commands = [
        ["tokenizer", "train", "--inputs", str(english_articles()), "--vocab-size", "300", "--output", str(outputs["tok"])],
        ["prepare", "--inputs", str(english_articles()), "--output", str(outputs["data"])],
        ["pretrain", "--data", str(wiki64_with_eval), "--output", str(outputs["run"]), "--max-steps", "1", "--cpu", "true"],
        ["export", "--checkpoint", str(tmp_path / "norun"), "--output", str(outputs["hf"])],
        ["finetune", "--model", str(model), "--train-file", str(rows), "--eval-file", str(rows), "--output",
         str(outputs["ft"]), "--cpu", "true"],
        ["glue", "--model", str(model), "--tasks", "sst2", "--output", str(outputs["glue"]), "--cpu", "true"],
        ["predict", "--model", str(model), "--input", str(rows), "--output", str(outputs["pred.jsonl"])],
        ["quickstart", "--output", str(outputs["quick"])],
    ]
    for argv in commands:
        said = refused(capsys, *argv, match=f"another bertpre holds it: pid {process.pid} on {socket.gethostname()}")
        assert "its lock file" in said and "since" in said
    assert not any(path.exists() for path in outputs.values())


def test_two_pretraining_runs_on_one_output_train_once(wiki64_with_eval: Path, tmp_path: Path) -> None:
    """The issue's case: the second run refuses at once; the first trains every step once."""
    output = tmp_path / "run"
    command = [sys.executable, "-m", "bertpre", "pretrain", "--data", str(wiki64_with_eval), "--output", str(output),
               "--model", str(REPO / "configs" / "model" / "tiny.yaml"), "--global-batch-size", "8",
               "--per-device-batch-size", "8", "--max-steps", "12", "--log-every", "1", "--eval-every", "0",
               "--checkpoint-every", "4", "--num-workers", "0", "--cpu", "true", "--report-to", "none"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300
    while not lock_path(output).exists():
        assert first.poll() is None and time.time() < deadline, first.communicate()
        time.sleep(0.05)
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"another bertpre holds it: pid {first.pid}" in second.stderr
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    lines = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if "mlm_loss" in m] == list(range(1, 13))  # each step logged once, by the one writer
    assert not lock_path(output).exists()  # given back at the end


def _write_lock(output: Path, **holder: object) -> Path:
    path = lock_path(output)
    record = {"host": socket.gethostname(), "pid": 1, "started": time.time() - 3600, "command": "bertpre prepare",
              "process_start": "", "slurm_job": "", "slurm_restart": 0, **holder}
    path.write_text(json.dumps(record) + "\n")
    return path


def _ended_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_stale_lock_of_a_dead_process_on_this_host_is_taken_over_with_a_note(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "tok"
    _write_lock(output, pid=_ended_pid())
    assert main(["tokenizer", "train", "--inputs", str(english_articles()), "--vocab-size", "300", "--output",
                 str(output)]) == 0
    err = capsys.readouterr().err
    assert f"{output}: taking over the lock of pid" in err and "that process has ended" in err
    assert (output / "vocab.txt").is_file() and not lock_path(output).exists()


def test_takeover_notes_and_refusals_by_host_heartbeat_and_slurm_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "run"
    path = _write_lock(output, pid=os.getpid() + 10**6, host="node-elsewhere")  # fresh heartbeat: may still be running
    with pytest.raises(BertpreError, match="another bertpre holds it: pid .* on node-elsewhere since"):
        OutputLock(output).acquire()
    past = time.time() - locking.STALE_SECONDS - 10
    os.utime(path, (past, past))  # no heartbeat for longer than a running writer ever leaves it
    with OutputLock(output):
        pass
    assert "no heartbeat for" in capsys.readouterr().err

    _write_lock(output, host="node-elsewhere", slurm_job="4242", slurm_restart=0)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # SLURM requeued the job on another node after ending it
    with OutputLock(output):
        pass
    assert "an earlier run of SLURM job 4242" in capsys.readouterr().err
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # the same run of the job on another node: a live writer
    _write_lock(output, host="node-elsewhere", slurm_job="4242", slurm_restart=0)
    with pytest.raises(BertpreError, match="on node-elsewhere in SLURM job 4242"):
        OutputLock(output).acquire()


def test_a_live_writer_of_this_host_is_never_taken_over_even_without_record_locks(
        tmp_path: Path, holder, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a file system has no record locks (NFS mounted nolock), the holder named in the file decides."""
    process = holder(tmp_path / "data")

    def no_record_locks(*_args: object) -> None:
        raise OSError(locking.errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locking.fcntl, "lockf", no_record_locks)
    with pytest.raises(BertpreError, match=f"pid {process.pid}"):
        OutputLock(tmp_path / "data").acquire()
    process.kill()
    process.wait()
    with OutputLock(tmp_path / "data"):  # its process has ended: taken over
        pass


def test_one_process_never_locks_one_output_twice_and_two_spellings_share_a_lock(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    with OutputLock(tmp_path / "real" / "out"):
        with pytest.raises(BertpreError, match="this process is writing it already"):
            OutputLock(tmp_path / "alias" / "out").acquire()
    assert lock_path(tmp_path / "alias" / "out") == lock_path(tmp_path / "real" / "out")
    assert not lock_path(tmp_path / "real" / "out").exists()


def test_the_heartbeat_refreshes_the_lock_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locking, "HEARTBEAT_SECONDS", 0.05)
    with OutputLock(tmp_path / "out"):
        path = lock_path(tmp_path / "out")
        past = time.time() - 1000
        os.utime(path, (past, past))
        time.sleep(0.5)
        assert time.time() - path.stat().st_mtime < 10


@pytest.mark.slow
def test_ranks_of_one_launch_share_one_lock_and_all_refuse_a_held_output(wiki64_with_eval: Path, tmp_path: Path,
                                                                         holder) -> None:
    """Two processes under `accelerate launch`: the main one locks; when another writer holds the output, every
    rank refuses with the same line and the launch ends (no rank left waiting for the others)."""
    output = tmp_path / "run"
    process = holder(output)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
              "-m", "bertpre", "pretrain", "--data", str(wiki64_with_eval), "--output", str(output), "--model",
              str(REPO / "configs" / "model" / "tiny.yaml"), "--global-batch-size", "8", "--per-device-batch-size",
              "4", "--max-steps", "2", "--eval-every", "0", "--num-workers", "0", "--cpu", "true", "--report-to", "none"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(launch, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode != 0
    assert result.stderr.count(f"another bertpre holds it: pid {process.pid}") == 2, result.stderr[-2000:]
    assert not output.exists()
