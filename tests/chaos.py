"""Kill `bertpre pretrain` with SIGKILL at random moments, resume each time, compare with an uninterrupted run.

Used by tests/test_chaos.py (a few kills, in CI) and runnable on its own for many more:

    python -m tests.chaos --kills 40 --seed 1        # from the repository root; needs ../shared/data or
                                                     # falls back to the built-in corpus
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from tests.conftest import prepare_wiki64

    root = Path(tempfile.mkdtemp(prefix="bertpre-chaos-"))
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
