"""One writer per output: a lock file beside each output a command writes, naming its holder.

``OUTPUT``'s lock is ``.OUTPUT.lock`` in the same directory (beside, not inside: directory outputs are
replaced in one rename, which would take a lock inside with them). It holds the writer's host, process
id, start time and command, and is removed when the writer ends. A second writer refuses in one line
naming the holder. How a lock is judged, in order:

1. The file is created with ``O_CREAT | O_EXCL`` (atomic on local file systems, NFSv3+, Lustre, GPFS)
   and locked with a POSIX record lock (``fcntl.lockf``), which the kernel drops when its process dies,
   however it dies. Refused: a lock that another process holds, or a lock file just created by another
   writer that has not yet said who it is.
2. A lock file whose record lock is free was left by a writer that is gone, except on file systems whose
   locks do not reach other machines (NFS mounted ``nolock``, Lustre ``localflock``). So its holder is
   checked too: one of this host is taken over (with a note) when its process has ended; one of another
   host when it is an earlier run of this same SLURM job (``SLURM_JOB_ID``, a lower
   ``SLURM_RESTART_COUNT``: SLURM requeues a job only after it ended), or when its heartbeat (the lock
   file's modification time, refreshed every ``HEARTBEAT_SECONDS`` while the writer runs) is older than
   ``STALE_SECONDS``. This assumes the machines' clocks agree to well within that time.

Within one process a second lock of the same output is refused too (POSIX record locks do not exclude
their own process). Under a multi-process launch one process locks for the run (see
``bertpre/training/accelerator.py``'s ``locked_output``).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional

from bertpre.core.errors import BertpreError

HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 120.0
"""Another host's lock whose heartbeat is older than this is taken over: four missed heartbeats."""

_HELD: dict[str, "OutputLock"] = {}  # lock files this process holds
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}  # a file system without record locks


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock, as its lock file says."""

    host: str
    pid: int
    started: float
    command: str = ""
    process_start: str = ""  # boot id and start time of the process: a reused pid is another process
    slurm_job: str = ""
    slurm_restart: int = 0

    def describe(self) -> str:
        """``pid 123 on node7 since 2026-12-06 14:02:11, running `bertpre pretrain …```."""
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        job = f" in SLURM job {self.slurm_job}" if self.slurm_job else ""
        command = self.command if len(self.command) <= 100 else self.command[:99] + "…"
        return f"pid {self.pid} on {self.host}{job} since {since}, running `{command}`"

    @classmethod
    def of_this_process(cls) -> "LockHolder":
        """The holder this process writes into a lock file it takes."""
        return cls(host=socket.gethostname(), pid=os.getpid(), started=time.time(), command=_command(),
                   process_start=_process_start(os.getpid()), slurm_job=os.environ.get("SLURM_JOB_ID", ""),
                   slurm_restart=_restart_count())


def make_parent(path: Path) -> list[Path]:
    """Create ``path``'s parent directories, or say in one line why they cannot be; return those it created,
    deepest first (a lock given back removes them again when still empty: a refused command leaves nothing)."""
    missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise BertpreError(f"{path.parent}: permission denied; choose an --output you can write to") from None
    except (FileExistsError, NotADirectoryError):
        blocking = next((p for p in (path.parent, *path.parent.parents) if p.exists() and not p.is_dir()), path.parent)
        raise BertpreError(f"{blocking}: is a file, not a directory; choose an --output outside it") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise BertpreError(f"{path.parent}: not writable (permission denied); choose an --output you can write to")
    return missing


def lock_path(output: str | Path) -> Path:
    """Where ``output``'s lock file lies: ``.NAME.lock`` beside it, in its real parent directory (two
    spellings of one output, through a symbolic link or not, share one lock)."""
    absolute = os.path.abspath(output)
    return Path(os.path.realpath(os.path.dirname(absolute))) / f".{os.path.basename(absolute)}.lock"


def holds_lock(output: str | Path) -> bool:
    """Whether this process holds ``output``'s lock."""
    return str(lock_path(output)) in _HELD


class OutputLock:
    """The exclusive lock of one output, taken by :meth:`acquire` and given back by :meth:`release`."""

    def __init__(self, output: str | Path) -> None:
        self.output = str(output)
        self.path = lock_path(output)
        self._fd: Optional[int] = None
        self._created: list[Path] = []  # directories made to hold the lock file
        self._stop = threading.Event()
        self._heartbeat: Optional[threading.Thread] = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *_exc: object) -> None:
        self.release()

    def acquire(self) -> "OutputLock":
        """Take the lock, taking over a stale one with a note; refuse in one line if another writer holds it."""
        if str(self.path) in _HELD:
            raise BertpreError(f"{self.output}: this process is writing it already; give each output its own path")
        for _ in range(5):  # a lock file removed or replaced between our open and our lock: look again
            fd, created = self._open()
            locked = False
            try:
                locked = self._lock_if_current(fd)
                if locked:
                    self._claim(fd, created)
                    return self
            except BaseException:
                if locked and created:  # ours alone: no other writer has seen it
                    self.path.unlink(missing_ok=True)
                os.close(fd)
                self._remove_created_directories()
                raise
            os.close(fd)
        raise BertpreError(f"{self.path}: the lock file keeps changing under this process; is another writer "
                           f"starting on {self.output}?")

    def release(self) -> None:
        """Stop the heartbeat, remove the lock file (if it is still ours) and unlock."""
        if self._fd is None:
            return
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        try:
            if _same_file(self._fd, self.path):
                self.path.unlink()
        except OSError:
            pass  # a lock file that cannot be removed is stale once we have gone: the next writer takes it over
        os.close(self._fd)
        self._fd = None
        _HELD.pop(str(self.path), None)
        self._remove_created_directories()

    def _remove_created_directories(self) -> None:
        for directory in self._created:  # deepest first; one that holds something now stays, and so do its parents
            try:
                directory.rmdir()
            except OSError:
                break
        self._created = []

    def _open(self) -> tuple[int, bool]:
        self._created = self._created or make_parent(self.path)
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), True
        except FileExistsError:
            pass
        except OSError as error:
            raise _cannot_lock(self.path, error) from None
        try:
            return os.open(self.path, os.O_RDWR), False
        except FileNotFoundError:  # its holder just removed it: create it ourselves
            return self._open()
        except OSError as error:
            raise _cannot_lock(self.path, error) from None

    def _lock_if_current(self, fd: int) -> bool:
        """Lock ``fd``'s file; False when the path no longer names that file. Refuses a held lock."""
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EACCES):
                raise self._refusal(fd, "holds it") from None
            if error.errno not in _NO_LOCKS:
                raise _cannot_lock(self.path, error) from None
            # no record locks here: the holder named in the file decides alone
        return _same_file(fd, self.path)

    def _claim(self, fd: int, created: bool) -> None:
        holder = _read_holder(fd)
        if not created:
            stale = _why_stale(holder, os.fstat(fd).st_mtime)
            if stale is None:
                raise self._refusal(fd, "holds it")
            if holder is not None:
                print(f"bertpre: note: {self.output}: taking over the lock of {holder.describe()}: {stale}",
                      file=sys.stderr)
        mine = json.dumps(asdict(LockHolder.of_this_process())) + "\n"
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, mine.encode("utf-8"), 0)
            os.fsync(fd)
        except OSError as error:  # a full disk, a quota: said naming the lock file
            raise OSError(error.errno, error.strerror, str(self.path)) from None
        self._fd = fd
        _HELD[str(self.path)] = self
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._beat, name="bertpre-lock-heartbeat", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                os.utime(self._fd)  # type: ignore[arg-type]
            except OSError:
                pass  # a missed beat is only a beat: after STALE_SECONDS of them another host may take over

    def _refusal(self, fd: int, verb: str) -> BertpreError:
        holder = _read_holder(fd)
        who = holder.describe() if holder is not None else "another process that is starting now"
        return BertpreError(f"{self.output}: another bertpre {verb}: {who}; wait for it to finish or choose "
                            f"another output (its lock file: {self.path})")


@contextmanager
def output_lock(output: str | Path) -> Iterator[OutputLock]:
    """Hold ``output``'s lock for the duration of the block."""
    with OutputLock(output) as lock:
        yield lock


def _why_stale(holder: Optional[LockHolder], heartbeat: float) -> Optional[str]:
    """Why a lock whose record lock was free may be taken over, or None when its holder may still run."""
    age = time.time() - heartbeat
    if holder is None:  # created but never written: its writer died at once, or is writing it now
        return f"its lock file was never written ({age:.0f} s ago)" if age > STALE_SECONDS else None
    if holder.host == socket.gethostname():
        if _is_running(holder.pid, holder.process_start):
            return None
        return "that process has ended"
    if holder.slurm_job and holder.slurm_job == os.environ.get("SLURM_JOB_ID") and \
            _restart_count() > holder.slurm_restart:
        return f"an earlier run of SLURM job {holder.slurm_job}, which SLURM ended before requeueing it"
    if age > STALE_SECONDS:
        return f"no heartbeat for {age:.0f} s (a running writer refreshes it every {HEARTBEAT_SECONDS:.0f} s)"
    return None


def _read_holder(fd: int) -> Optional[LockHolder]:
    try:
        record = json.loads(os.pread(fd, 65536, 0).decode("utf-8"))
        return LockHolder(**{key: record[key] for key in LockHolder.__dataclass_fields__ if key in record})
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _same_file(fd: int, path: Path) -> bool:
    try:
        mine, named = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (named.st_dev, named.st_ino)


def _is_running(pid: int, process_start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    return not process_start or not _process_start(pid) or _process_start(pid) == process_start


def _process_start(pid: int) -> str:
    """The boot id and start time of process ``pid`` (Linux), '' where /proc does not say."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return f"{boot}:{fields[19]}"  # field 22 of stat, counted after the command name
    except (OSError, IndexError):
        return ""


def _restart_count() -> int:
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def _command() -> str:
    return " ".join(["bertpre", *sys.argv[1:]]) if sys.argv and "bertpre" in sys.argv[0] else " ".join(sys.argv)


def _cannot_lock(path: Path, error: OSError) -> BertpreError:
    return BertpreError(f"{path}: cannot create the output's lock file ({error.strerror}); choose an --output "
                        "in a directory you can write to")
