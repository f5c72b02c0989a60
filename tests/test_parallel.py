"""Work in worker processes: results in task order whatever finishes first, a few tasks in flight at most,
a worker's error raised as itself, one worker run in this process."""

from __future__ import annotations

import os
import time
from typing import Iterator

import pytest

from bertpre.core.errors import BertpreError
from bertpre.core.parallel import WorkerPool

_SETUP: dict[str, int] = {}


def remember(value: int) -> None:
    _SETUP["value"] = value


def slow_square(task: int) -> tuple[int, int, int]:
    time.sleep(0.05 if task % 3 == 0 else 0.0)  # early tasks finish last
    return task * task + _SETUP["value"], os.getpid(), task


def refuse_seven(task: int) -> int:
    if task == 7:
        raise BertpreError("task 7: refused")
    return task


def test_results_come_in_task_order_from_several_processes() -> None:
    with WorkerPool(2, remember, (1000,)) as pool:
        results = list(pool.map_ordered(slow_square, range(12)))
    assert [square for square, _, _ in results] == [task * task + 1000 for task in range(12)]
    assert len({pid for _, pid, _ in results}) == 2 and os.getpid() not in {pid for _, pid, _ in results}


def test_one_worker_runs_in_this_process() -> None:
    pool = WorkerPool(1, remember, (5,))
    assert [result[:2] for result in pool.map_ordered(slow_square, [2, 3])] == [(9, os.getpid()), (14, os.getpid())]
    pool.close()


def test_only_a_few_tasks_are_handed_out_ahead() -> None:
    handed_out = []

    def tasks() -> Iterator[int]:
        for task in range(100):
            handed_out.append(task)
            yield task

    with WorkerPool(2, remember, (0,)) as pool:
        results = pool.map_ordered(slow_square, tasks(), ahead=3)
        next(results)
        assert len(handed_out) <= 5  # the one awaited, three ahead, and the one that went over the limit
        assert len(list(results)) == 99


def refuse_to_start(value: int) -> None:
    raise BertpreError(f"cannot start with {value}")


def test_a_worker_that_cannot_start_says_why_instead_of_hanging() -> None:
    with WorkerPool(2, refuse_to_start, (3,)) as pool:
        with pytest.raises(BertpreError, match="^cannot start with 3$"):
            list(pool.map_ordered(slow_square, range(4)))


def test_an_error_in_a_worker_is_raised_as_itself() -> None:
    with WorkerPool(2) as pool:
        with pytest.raises(BertpreError, match="^task 7: refused$"):
            list(pool.map_ordered(refuse_seven, range(20)))


_STOPPED_EARLY = """
import signal, sys, threading, time
from bertpre.core.parallel import WorkerPool

def slow(task):
    time.sleep(0.2)
    return task

def stop_early():
    with WorkerPool(2) as pool:  # left after the first result: the workers are ended mid-task
        next(pool.map_ordered(slow, range(10)))

signal.signal(signal.SIGTERM, lambda signum, frame: None)  # caught, as a run's stop request catches it
stop_early()
if sys.argv[1] == "thread":  # a pool opened off the main thread (a notebook, a library caller)
    thread = threading.Thread(target=stop_early)
    thread.start()
    thread.join()
print("closed")
"""


@pytest.mark.parametrize("where", ["main", "thread"])
def test_closing_early_ends_the_workers_when_the_caller_catches_sigterm(where: str) -> None:
    """A command that catches SIGTERM (pretraining's stop request, the CLI's clean unwinding) and leaves a
    pool early, as a damaged input does: the workers end, instead of waiting forever on their queue's lock."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _STOPPED_EARLY, where], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "closed", result.stderr[-2000:]
