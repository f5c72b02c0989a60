"""Fault injection of our own, for every command.

1. Kill `bertpre pretrain` with SIGKILL at random moments, resume each time, compare with an uninterrupted run.
2. Interrupt every other stage (tokenizer train, prepare, export, finetune) with SIGINT, SIGTERM or SIGKILL at a
   random moment: afterwards its output is complete or absent (never half-written), no lock or staging
   directory outlives a clean stop, and the same command run again works.

Used by tests/test_chaos.py (a few of each, in CI) and runnable on its own for many more:

    python -m tests.chaos --kills 40 --seed 1        # from the repository root; needs ../shared/data or
                                                     # falls back to the built-in corpus
    python -m tests.chaos --stages --rounds 5        # every stage × every signal, 5 random moments each
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
STEPS = 24
# Checkpoints, metrics lines and evaluations every few steps: most random moments land in or near one.
OPTIONS = ["--model", str(REPO / "configs" / "model" / "tiny.yaml"), "--global-batch-size", "8",
           "--per-device-batch-size", "8", "--learning-rate", "2e-3", "--warmup-steps", "3", "--log-every", "1",
           "--eval-every", "4", "--eval-batches", "2", "--checkpoint-every", "3", "--keep-checkpoints", "2",
           "--num-workers", "0", "--cpu", "true"]


def pretrain_command(data: Path, output: Path) -> list[str]:
    return [sys.executable, "-m", "bertpre", "pretrain", "--data", str(data), "--output", str(output),
            "--max-steps", str(STEPS), *OPTIONS]


def run_to_the_end(data: Path, output: Path) -> float:
    """Run (or resume) to the last step; return the wall time it took."""
    started = time.perf_counter()
    result = subprocess.run(pretrain_command(data, output), capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise AssertionError(f"pretrain failed after a kill:\n{result.stdout}\n{result.stderr}")
    return time.perf_counter() - started


def kill_at_random_moments(data: Path, output: Path, kills: int, duration: float, rng: random.Random) -> list[float]:
    """Start the run, SIGKILL it after a random time, resume, again ``kills`` times; then finish it."""
    moments = []
    for _ in range(kills):
        process = subprocess.Popen(pretrain_command(data, output), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        moment = rng.uniform(0.2, 1.0) * duration
        try:
            process.wait(timeout=moment)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            moments.append(moment)
    run_to_the_end(data, output)
    return moments


def final_weights(output: Path) -> dict:
    from safetensors.torch import load_file

    from bertpre.training.checkpoint import list_checkpoints

    return load_file(str(list_checkpoints(output)[-1] / "model.safetensors"))


# ---- every other stage ---------------------------------------------------------------------------

SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}


@dataclass
class Stage:
    """A command that writes one output, and how to tell its output is complete."""

    name: str
    argv: list[str]
    output: Path
    complete: Callable[[Path], bool]


def stages(root: Path, corpus: Path, data: Path, run: Path, model: Path, rows: Path) -> list[Stage]:
    """The stages to interrupt, writing under ``root``; ``data`` a prepared dataset, ``run`` a pretraining run,
    ``model`` an exported BERT directory, ``rows`` a JSONL file of labelled rows."""
    def tokenizer_complete(path: Path) -> bool:
        from transformers import AutoTokenizer

        return (path / "vocab.txt").is_file() and len(AutoTokenizer.from_pretrained(str(path))) == 400

    def data_complete(path: Path) -> bool:
        from bertpre.data.dataset import PretrainingData

        return len(PretrainingData(path, "train")) > 0

    def model_complete(path: Path) -> bool:
        from bertpre.model.hf_directory import read_model_config, read_safetensors

        return read_model_config(path) is not None and len(read_safetensors(path)) > 0 and (path / "vocab.txt").is_file()

    def finetune_complete(path: Path) -> bool:
        return model_complete(path / "model") and (path / "eval_results.json").is_file()

    quick = ["--cpu", "true", "--report-to", "none"]
    return [
        Stage("tokenizer", ["tokenizer", "train", "--inputs", str(corpus), "--vocab-size", "400", "--output",
                            str(root / "tok")], root / "tok", tokenizer_complete),
        Stage("prepare", ["prepare", "--inputs", str(corpus), "--output", str(root / "data"), "--max-seq-length", "64",
                          "--num-workers", "1", "--dupe-factor", "2"], root / "data", data_complete),
        Stage("export", ["export", "--checkpoint", str(run), "--output", str(root / "hf")], root / "hf", model_complete),
        Stage("finetune", ["finetune", "--model", str(model), "--train-file", str(rows), "--eval-file", str(rows),
                           "--epochs", "2", "--per-device-batch-size", "8", "--output", str(root / "ft"), *quick],
              root / "ft", finetune_complete),
    ]


def bertpre_command(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "bertpre", *argv]


def started(stage: Stage, process: subprocess.Popen, timeout: float = 600) -> bool:
    """Wait until the stage holds its output's lock (its imports done, its work begun); False if it ended first."""
    from bertpre.core.locking import lock_path

    deadline = time.time() + timeout
    while not lock_path(stage.output).exists():
        if process.poll() is not None:
            return False
        assert time.time() < deadline, f"{stage.name} never started"
        time.sleep(0.01)
    return True


def time_to_finish(stage: Stage) -> float:
    """Run a stage once, uninterrupted: how long it works once started; its output is removed again."""
    process = subprocess.Popen(bertpre_command(stage.argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started(stage, process)
    began = time.perf_counter()
    _, err = process.communicate(timeout=900)
    assert process.returncode == 0 and stage.complete(stage.output), err[-3000:]
    shutil.rmtree(stage.output)
    return time.perf_counter() - began


def leftovers(output: Path) -> list[str]:
    """Staging directories and lock files of ``output`` beside it."""
    return sorted(p.name for p in output.parent.glob(f".{output.name}.*"))


def interrupt_and_rerun(stage: Stage, sig: str, moment: float) -> str:
    """Start the stage, send ``sig`` ``moment`` seconds after it began its work, check what it left, run it again;
    say what happened.

    After any signal its output is complete or absent (a fine-tuning run's output may also hold the logs of a run
    stopped before its end, but never a half-written classifier); after SIGINT and SIGTERM nothing else is left
    beside it; the same command then completes (with --overwrite true when the first had already finished).
    """
    process = subprocess.Popen(bertpre_command(stage.argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not started(stage, process):
            raise subprocess.TimeoutExpired(stage.argv, 0) if process.returncode is None else AssertionError(
                f"{stage.name} failed before it began (exit {process.returncode})")
        process.wait(timeout=moment)
        outcome = "finished first"
    except subprocess.TimeoutExpired:
        process.send_signal(SIGNALS[sig])
        outcome = f"{sig} {moment:.1f} s into its work"
    process.communicate(timeout=300)  # what it says depends on the moment (Python's own start-up, or ours)
    finished = stage.output.exists() and _complete(stage)
    absent = not stage.output.exists() or (stage.name == "finetune" and not (stage.output / "model").exists())
    assert finished or absent, f"{stage.name}: a half-written output after {outcome}: {sorted(stage.output.rglob('*'))}"
    if sig != "SIGKILL" or outcome == "finished first":
        assert leftovers(stage.output) == [], f"{stage.name} after {outcome} left {leftovers(stage.output)}"
    again = stage.argv + (["--overwrite", "true"] if finished else [])
    result = subprocess.run(bertpre_command(again), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{stage.name}: the rerun after {outcome} failed:\n{result.stderr[-3000:]}"
    assert stage.complete(stage.output) and leftovers(stage.output) == [], f"{stage.name}: rerun after {outcome}"
    shutil.rmtree(stage.output)
    return f"{stage.name}: {outcome}, {'complete' if finished else 'absent'}, rerun complete"


def _complete(stage: Stage) -> bool:
    try:
        return stage.complete(stage.output)
    except Exception:  # a half-written output fails to load: not complete
        return False


def stage_fixtures(root: Path) -> tuple[Path, Path, Path, Path, Path]:
    """A corpus, a prepared dataset, a 4-step run, its export and labelled rows, made under ``root``."""
    from bertpre.cli import main
    from tests.conftest import english_articles, prepare_wiki64

    data = prepare_wiki64(root / "fixture-data", eval_fraction=0.2)
    run, model = root / "fixture-run", root / "fixture-hf"
    assert main(["pretrain", "--data", str(data), "--output", str(run), "--max-steps", "4", *OPTIONS]) == 0
    assert main(["export", "--checkpoint", str(run), "--output", str(model)]) == 0
    rows = root / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"the film was {'good' if i % 2 else 'bad'} ({i}).", "label": i % 2})
                            + "\n" for i in range(64)))
    return english_articles(), data, run, model, rows


def interrupt_every_stage(root: Path, rounds: int, rng: random.Random, signals: list[str]) -> list[str]:
    """Each stage, each of ``signals``, ``rounds`` random moments each; the outcomes, one line each."""
    said = []
    for stage in stages(root, *stage_fixtures(root)):
        duration = time_to_finish(stage)
        for _ in range(rounds):
            for sig in signals:
                said.append(interrupt_and_rerun(stage, sig, rng.uniform(0.3, 1.0) * duration))
    return said


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", action="store_true", help="interrupt every other stage instead of pretraining")
    parser.add_argument("--rounds", type=int, default=3, help="with --stages: random moments per stage and signal")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from tests.conftest import prepare_wiki64

    root = Path(tempfile.mkdtemp(prefix="bertpre-chaos-"))
    if args.stages:
        try:
            print("\n".join(interrupt_every_stage(root, args.rounds, random.Random(args.seed), list(SIGNALS))))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return
    try:
        data = prepare_wiki64(root / "data", eval_fraction=0.2)
        duration = run_to_the_end(data, root / "uninterrupted")
        moments = kill_at_random_moments(data, root / "killed", args.kills, duration, random.Random(args.seed))
        expected, got = final_weights(root / "uninterrupted"), final_weights(root / "killed")
        same = expected.keys() == got.keys() and all((expected[k] == got[k]).all() for k in expected)
        print(f"{len(moments)} kills at {', '.join(f'{m:.1f}' for m in moments)} s of a {duration:.1f} s run; "
              f"final weights {'bit-identical' if same else 'DIFFER'}")
        sys.exit(0 if same else 1)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
