"""Work spread over worker processes, answered in order: the results of a stream of tasks come back in
the order the tasks were given, with only a few tasks in flight beyond the one awaited, so memory stays
bounded however many tasks there are. One worker runs every task in this process.

A task's function and its argument must be picklable (a module-level function); what a worker needs
for every task (a tokenizer, a config) is given once to ``initializer``. An exception raised in a
worker is raised again here, as itself (a BertpreError stays one line for the user).
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
from collections import deque
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Optional, TypeVar

Task = TypeVar("Task")
Result = TypeVar("Result")


class WorkerPool:
    """``workers`` processes (none for one worker), each set up once with ``initializer(*initargs)``."""

    def __init__(self, workers: int, initializer: Optional[Callable[..., None]] = None, initargs: tuple = ()) -> None:
        self.workers = max(1, workers)
        self._pool = None
        if self.workers == 1:
            if initializer is not None:
                initializer(*initargs)
            return
        # fork starts a worker in milliseconds with bertpre already imported; elsewhere spawn is the safe way
        context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with _default_sigterm():
            self._pool = context.Pool(self.workers, _started_worker, (initializer, initargs))

    def map_ordered(self, function: Callable[[Task], Result], tasks: Iterable[Task],
                    ahead: Optional[int] = None) -> Iterator[Result]:
        """``function(task)`` for every task, in the tasks' order; at most ``ahead`` (default: twice the
        workers) tasks are handed out beyond the one whose result is awaited."""
        if self._pool is None:
            for task in tasks:
                yield function(task)
            return
        limit = ahead or 2 * self.workers
        pending: deque = deque()
        for task in tasks:
            pending.append(self._pool.apply_async(_run_task, (function, task)))
            if len(pending) > limit:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def close(self) -> None:
        """End the workers (at once: a task still running belongs to a run that is over)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


_SETUP_ERROR: list[BaseException] = []


@contextmanager
def _default_sigterm() -> Iterator[None]:
    """SIGTERM's default action (end the process) while workers are forked, so that they are born with it.

    ``close`` ends the workers with SIGTERM while holding their task queue's lock; a worker that inherited a
    handler which catches SIGTERM (a run's stop request, the command's clean unwinding) would survive it and
    wait on that lock forever, and the command with it."""
    try:
        previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:  # not the main thread: the workers reset it themselves (_started_worker)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _started_worker(initializer: Optional[Callable[..., None]], initargs: tuple) -> None:
    # Ctrl-C reaches the whole process group: the main process stops the workers, they do not stop themselves.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a worker the pool forks later, from its own thread
    try:
        if initializer is not None:
            initializer(*initargs)
    except Exception as error:  # noqa: BLE001 - raised with the first task: a pool whose set-up fails restarts it forever
        _SETUP_ERROR.append(error)


def _run_task(function: Callable[[Task], Result], task: Task) -> Result:
    if _SETUP_ERROR:
        raise _SETUP_ERROR[0]
    return function(task)
