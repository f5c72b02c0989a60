"""The SLURM array path of the data stage: jobs/prepare_array.slurm with two array tasks gives the same dataset
as one process.

`make test-slurm-prepare` starts a one-node SLURM (jobs/slurm_local.sh) and runs this; by hand, with
SLURM_CONF pointing at a running SLURM that may run jobs on this machine:

    python -m tests.slurm_prepare [--workdir runs/test-slurm-prepare]

"The same dataset" means, precisely:

1. each array task's directory ``OUT/shard-0000i-of-00002`` holds the files one process writes with
   ``bertpre prepare --shard i/2`` (no SLURM, one worker), byte for byte: every Arrow file,
   ``state.json``, ``dataset_info.json`` and the tokenizer copy; ``prepare.json`` and ``prepare.yaml``
   too but for what names the run itself (its output directory, worker count and duration);
2. training reads the two directories under OUT as one dataset (``PretrainingData(OUT)``) with the
   same rows, in the same order, as the two one-process shards read together, and every input file
   is read by exactly one of the two tasks (their documents add up to those of an unsharded run).

It is not the bytes of one unsharded ``prepare`` of the whole corpus: a shard holds out its own
documents and seeds its pairs with its own index, by design (each node needs no other's data).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BERTPRE_SHARED_DATA", REPO.parent / "shared" / "data"))
OPTIONS = ["--tokenizer", str(REPO / "tokenizer"), "--max-seq-length", "128", "--dupe-factor", "2",
           "--eval-fraction", "0.05", "--document-boundary", "file"]
RUN_FIELDS = {"prepare.json": ("seconds", "workers", "output"), "prepare.yaml": ("output", "num_workers")}
FINISHED_STATES = {"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}
TASKS = 2


def say(message: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:6.1f} s] {message}", flush=True)


def corpus() -> Path:
    """The 55 inaugural addresses of ../shared/data, a document per file."""
    directory = SHARED_DATA / "pretrain" / "inaugural"
    if not directory.is_dir():
        raise SystemExit(f"{directory}: not present (the project's shared data lies beside the checkout)")
    return directory


def environment() -> dict[str, str]:
    """This environment with the virtual environment's bin first (sbatch runs `bertpre` from PATH)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def prepare_directly(inputs: Path, output: Path, index: int) -> None:
    """The reference: shard ``index`` prepared by one process, without SLURM."""
    without_slurm = {k: v for k, v in environment().items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}
    subprocess.run([sys.executable, "-m", "bertpre", "prepare", "--inputs", str(inputs), "--shard",
                    f"{index}/{TASKS}", "--num-workers", "1", "--output",
                    str(output / f"shard-{index:05d}-of-{TASKS:05d}"), *OPTIONS],
                   check=True, capture_output=True, env=without_slurm, cwd=REPO)


def submit(inputs: Path, output: Path, logs: Path) -> str:
    """sbatch --array=0-1 jobs/prepare_array.slurm (one CPU per task: both run at once on two cores)."""
    command = ["sbatch", "--parsable", f"--array=0-{TASKS - 1}", "--cpus-per-task=1",
               f"--output={logs}/%x-%A_%a.out", f"--chdir={REPO}", str(REPO / "jobs" / "prepare_array.slurm"),
               str(inputs), str(output), *OPTIONS]
    return subprocess.run(command, capture_output=True, text=True, env=environment(), check=True).stdout.strip()


def follow(job: str, started: float, limit: float) -> dict[str, str]:
    """Poll the array until every task has ended; return each task's JobState."""
    deadline = time.perf_counter() + limit
    seen: dict[str, str] = {}
    while time.perf_counter() < deadline:
        text = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
        states = {fields["ArrayTaskId"]: fields["JobState"] for fields in
                  (dict(re.findall(r"(\w+)=(\S*)", line)) for line in text.splitlines() if line.strip())
                  if "ArrayTaskId" in fields}
        for task, state in states.items():
            if seen.get(task) != state:
                say(f"job {job}_{task}: {state}", started)
        seen = states
        if len(states) == TASKS and all(state in FINISHED_STATES for state in states.values()):
            return states
        time.sleep(1)
    subprocess.run(["scancel", job])
    raise SystemExit(f"job {job} not finished after {limit:.0f} s ({seen}); cancelled")


def compare_bytes(reference: Path, slurm: Path) -> int:
    """Every file of the reference shard is in the SLURM shard with the same bytes (prepare.json: its data
    fields); return how many files were compared."""
    names = sorted(str(p.relative_to(reference)) for p in reference.rglob("*") if p.is_file())
    got = sorted(str(p.relative_to(slurm)) for p in slurm.rglob("*") if p.is_file())
    assert names == got, f"{slurm}: other files than the one-process run: {sorted(set(names) ^ set(got))}"
    for name in names:
        if name in RUN_FIELDS:
            expected, actual = (_without_run_fields(root / name) for root in (reference, slurm))
            assert expected == actual, f"{slurm / name}: differs from the one-process run beyond {RUN_FIELDS[name]}"
        else:
            assert (reference / name).read_bytes() == (slurm / name).read_bytes(), f"{slurm / name}: other bytes"
    return len(names)


def _without_run_fields(path: Path) -> dict:
    import yaml

    record = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    fields = record["summary"] if path.suffix == ".json" else record
    for field in RUN_FIELDS[path.name]:
        fields.pop(field)
    return record


def compare_as_training_reads_it(reference: Path, slurm: Path, inputs: Path) -> int:
    """Both directories read as one dataset give the same rows; the shards' documents cover the corpus once."""
    sys.path.insert(0, str(REPO))
    from bertpre.data.dataset import PretrainingData

    for split in ("train", "eval"):
        expected, actual = PretrainingData(reference, split), PretrainingData(slurm, split)
        assert expected.table.equals(actual.table), f"{slurm}: the {split} split read as one differs"
    documents = sum(json.loads(p.read_text())["summary"]["documents"] for p in slurm.glob("shard-*/prepare.json"))
    files = len(list(inputs.glob("*.txt")))
    assert documents == files, f"the shards hold {documents} documents for {files} input files"
    return len(PretrainingData(slurm, "train"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "test-slurm-prepare")
    parser.add_argument("--limit", type=float, default=600, help="seconds to wait for the array")
    args = parser.parse_args()
    if not shutil.which("sbatch") or not os.environ.get("SLURM_CONF"):
        raise SystemExit("no SLURM here: run `make test-slurm-prepare` (it starts a local one) or set SLURM_CONF")
    started = time.perf_counter()
    work = args.workdir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    (work / "logs").mkdir(parents=True)
    inputs = corpus()
    for index in range(TASKS):
        prepare_directly(inputs, work / "direct", index)
    say(f"reference: {TASKS} shards prepared by one process each, without SLURM, in {work / 'direct'}", started)
    job = submit(inputs, work / "slurm", work / "logs")
    say(f"submitted array job {job}: jobs/prepare_array.slurm, --array=0-{TASKS - 1}", started)
    states = follow(job, started, args.limit)
    logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in sorted((work / "logs").glob("*.out")))
    assert set(states.values()) == {"COMPLETED"}, f"array tasks ended {states}:\n{logs}"
    for index in range(TASKS):
        name = f"shard-{index:05d}-of-{TASKS:05d}"
        files = compare_bytes(work / "direct" / name, work / "slurm" / name)
        say(f"{name}: {files} files, the same bytes as the one-process run (but the run's own fields of "
            "prepare.json and prepare.yaml)", started)
    rows = compare_as_training_reads_it(work / "direct", work / "slurm", inputs)
    say(f"read as one dataset: the same {rows:,} training pairs in the same order; every input file in one shard",
        started)
    say("PASS", started)


if __name__ == "__main__":
    main()
