"""The preemption loop on a real SLURM: time-limit signal → checkpoint → requeue → resume → same weights.

`make test-slurm` starts a one-node SLURM (jobs/slurm_local.sh) and runs this; by hand, with SLURM_CONF
pointing at a running SLURM that may run jobs on this machine:

    python -m tests.slurm_requeue [--steps 250] [--workdir runs/test-slurm]

It prepares a small dataset, trains the tiny model with two gloo processes directly (no SLURM) as the
reference, then submits jobs/pretrain_cpu.slurm with the same options and a time limit whose
SIGUSR1 (`--signal=USR1@…`) lands at most 75% of the reference's duration into a start: how long
that is depends on the machine, so the limit is set from the reference (SLURM's timer runs every
30 s, so the signal comes up to 30 s before the nominal moment). SLURM holds a requeued job for two
minutes before it may start again; to keep the test short it moves that start to now (`scontrol
update JobId=… StartTime=now`). A start that is cut again is requeued again. The checks: the job
was requeued at least once, a later start resumed from the checkpoint, the job completed, and its
final weights are bit-identical to the reference's.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OPTIONS = ["--model", str(REPO / "configs" / "model" / "tiny.yaml"), "--global-batch-size", "16",
           "--per-device-batch-size", "8", "--learning-rate", "2e-3", "--warmup-steps", "10", "--log-every", "10",
           "--eval-every", "0", "--checkpoint-every", "0", "--num-workers", "0"]
FINISHED_STATES = {"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}


def say(message: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:6.1f} s] {message}", flush=True)


def prepare_data(directory: Path) -> Path:
    """Ten English articles as 64-token pairs (tests' helper: shared Wikipedia slice or the built-in corpus)."""
    sys.path.insert(0, str(REPO))
    from tests.conftest import prepare_wiki64

    return prepare_wiki64(directory, eval_fraction=0.2)


def without_slurm() -> dict[str, str]:
    """This environment minus SLURM's job variables, so the reference run is a plain run."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}


def run_directly(data: Path, output: Path, steps: int) -> None:
    """The reference: the job's launch (two gloo processes) without SLURM, start to end."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               "29631", "-m", "bertpre", "pretrain", "--cpu", "true", "--data", str(data), "--output", str(output),
               "--max-steps", str(steps), *OPTIONS]
    env = {**without_slurm(), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if result.returncode != 0:
        raise SystemExit(f"the reference run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def time_limit(reference_seconds: float) -> tuple[int, int]:
    """(--time minutes, --signal seconds before it) putting SLURM's SIGUSR1 at most 75% of the reference's
    duration into a start, at least a minute before the limit."""
    latest = 0.75 * reference_seconds
    if latest < 45:  # the signal may come 30 s early: before 15 s, the workers may not be there yet
        raise SystemExit(f"the reference run took {reference_seconds:.0f} s: too short for SLURM's signal to land "
                         "inside a start on this machine; raise --steps")
    minutes = math.ceil((latest + 60) / 60)
    return minutes, round(minutes * 60 - latest)


def submit(data: Path, output: Path, log: Path, steps: int, minutes: int, warning: int) -> str:
    """sbatch jobs/pretrain_cpu.slurm with this limit and SIGUSR1 ``warning`` seconds before it; return the job id."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = ["sbatch", "--parsable", f"--time={minutes}", f"--signal=USR1@{warning}", "--requeue", "--open-mode=append",
               f"--output={log}", f"--chdir={REPO}", str(REPO / "jobs" / "pretrain_cpu.slurm"),
               "--data", str(data), "--output", str(output), "--max-steps", str(steps), *OPTIONS]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return result.stdout.strip().split(";")[0]


def job_fields(job: str) -> dict[str, str]:
    """`scontrol show job -o` as a dict (JobState, Restarts, ExitCode, ...)."""
    text = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text))


def follow(job: str, started: float, limit: float) -> dict[str, str]:
    """Poll the job until it ends; skip SLURM's two-minute hold after each requeue; return its last fields."""
    restarts_seen, state = 0, ""
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        fields = job_fields(job)
        if fields["JobState"] != state:
            state = fields["JobState"]
            say(f"job {job}: {state} (restarts {fields['Restarts']})", started)
        if int(fields["Restarts"]) > restarts_seen and state == "PENDING":
            restarts_seen = int(fields["Restarts"])
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
            say(f"job {job}: requeued (restart {restarts_seen}); its start moved from "
                f"{fields.get('EligibleTime', '?')} to now", started)
        if state in FINISHED_STATES:
            return fields
        time.sleep(1)
    subprocess.run(["scancel", job])
    raise SystemExit(f"job {job} still not finished after {limit:.0f} s (state {state}); cancelled")


def compare_final_weights(reference: Path, resumed: Path) -> int:
    """Assert the two runs' last checkpoints hold bit-identical tensors; return how many were compared."""
    import torch
    from safetensors.torch import load_file

    from bertpre.training.checkpoint import list_checkpoints

    expected = load_file(str(list_checkpoints(reference)[-1] / "model.safetensors"))
    got = load_file(str(list_checkpoints(resumed)[-1] / "model.safetensors"))
    assert expected.keys() == got.keys(), sorted(set(expected) ^ set(got))
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, f"{len(different)} tensors differ from the uninterrupted run, e.g. {different[:3]}"
    return len(expected)


def check_log(log: str, steps: int) -> tuple[int, list[str]]:
    """The job log shows several starts, the requeue(s), a resume and the finish; return (starts, resume lines)."""
    starts = re.findall(r"bertpre: job \d+, start (\d+)", log)
    assert len(starts) >= 2, f"the log shows {len(starts)} start(s), not a requeued job:\n{log[-3000:]}"
    assert "stop signal (SIGUSR1): checkpoint saved" in log, log[-3000:]
    assert re.search(r"requeued SLURM job \d+", log), log[-3000:]
    resumed = re.findall(r"resumed from \S+ at step \d+", log)
    assert len(resumed) >= 1, f"no start resumed from a checkpoint:\n{log[-3000:]}"
    assert re.search(rf"steps\s+{steps}\b", log) and "max_steps reached" in log, log[-3000:]
    return len(starts), resumed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=250, help="training steps (long enough to outlast the signal)")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "test-slurm")
    parser.add_argument("--limit", type=float, default=600, help="seconds to wait for the job")
    args = parser.parse_args()
    if not shutil.which("sbatch") or not os.environ.get("SLURM_CONF"):
        raise SystemExit("no SLURM here: run `make test-slurm` (it starts a local one) or set SLURM_CONF")
    started = time.perf_counter()
    work = args.workdir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    data = prepare_data(work / "data")
    say(f"prepared {data}", started)
    reference_started = time.perf_counter()
    run_directly(data, work / "direct", args.steps)
    reference_done = time.perf_counter()
    reference_seconds = reference_done - reference_started
    say(f"reference run (2 gloo processes, no SLURM): {args.steps} steps in {reference_seconds:.0f} s", started)

    log = work / "job.log"
    minutes, warning = time_limit(reference_seconds)
    job = submit(data, work / "slurm", log, args.steps, minutes, warning)
    say(f"submitted job {job}: jobs/pretrain_cpu.slurm --time={minutes} --signal=USR1@{warning} --requeue", started)
    fields = follow(job, started, args.limit)
    text = log.read_text(encoding="utf-8", errors="replace")
    assert fields["JobState"] == "COMPLETED", f"job ended {fields['JobState']} ({fields.get('ExitCode')}):\n{text[-3000:]}"
    restarts = int(fields["Restarts"])
    assert restarts >= 1, f"the job was never requeued (Restarts=0):\n{text[-3000:]}"
    starts, resumed = check_log(text, args.steps)
    tensors = compare_final_weights(work / "direct", work / "slurm")
    say(f"job {job}: COMPLETED, Restarts={restarts}, {starts} starts in the log", started)
    for line in resumed:
        say(f"  {line}", started)
    say(f"final weights: {tensors} tensors bit-identical to the uninterrupted run", started)
    say(f"PASS (SLURM part {time.perf_counter() - reference_done:.0f} s)", started)


if __name__ == "__main__":
    main()
