"""Writing results so that a failure never leaves a half-written file or directory where a complete
one is expected, with the permissions the user's umask gives any file they create; and the rules that
keep an output from reaching anything else: never one of the command's inputs, never through a
symbolic link, ``--overwrite`` only over its own kind of output, and a full disk said in one line.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Optional

from bertpre.core.errors import BertpreError
from bertpre.core.locking import holds_lock, make_parent

# What each kind of output holds at its top level, to tell it before --overwrite replaces it; the first
# kind with one of its names present is the directory's kind (a checkpoint also holds a config.json).
OUTPUT_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pretraining checkpoint", ("trainer_state.json",)),
    ("pretraining run", ("pretrain.yaml", "checkpoints")),
    ("prepared dataset", ("prepare.json",)),
    ("GLUE run", ("glue.yaml", "glue_results.json")),
    ("fine-tuning run", ("finetune.yaml", "eval_results.json", "comparison.json")),
    ("model", ("config.json", "model.safetensors")),
    ("tokenizer", ("tokenizer.json", "vocab.txt", "bertpre_tokenizer.yaml")),
)
OTHER_FILES = "files that no bertpre command wrote"

# Faults of the machine, not of bertpre: one line with the file and what to do, as for user errors.
DISK_ERRORS = {
    errno.ENOSPC: "the disk is full: free space or choose another --output",
    errno.EDQUOT: "the disk quota is exhausted: free space or choose another --output",
    errno.EFBIG: "the file is larger than this file system or the file-size limit (ulimit -f) allows: choose "
                 "another --output (FAT32 holds at most 4 GB per file)",
    errno.EROFS: "the file system is read-only: choose another --output",
    errno.EACCES: "permission denied: choose files and an --output you can read and write",
    errno.EPERM: "operation not permitted: choose files and an --output you own",
    errno.EIO: "an input/output error: the disk or the network file system failed; check it and run again",
}
_ERRNO_IN_MESSAGE = re.compile(r"(?:os error|errno|Errno)\s*(\d+)")


def output_kind(directory: Path) -> Optional[str]:
    """What ``directory`` holds: one of :data:`OUTPUT_KINDS`, :data:`OTHER_FILES`, or None when empty or absent."""
    if not directory.is_dir() or not any(directory.iterdir()):
        return None
    return next((kind for kind, names in OUTPUT_KINDS if any((directory / name).exists() for name in names)),
                OTHER_FILES)


def refuse_symlinked_output(output: Path) -> None:
    """An output that is a symbolic link is refused: replacing or clearing it would reach what it points to."""
    if output.is_symlink():
        raise BertpreError(f"{output}: is a symbolic link (to {os.readlink(output)}); bertpre replaces or clears its "
                           f"output, which must not reach through a link: pass {os.path.realpath(output)} itself or "
                           "another --output")


def check_writable_output(output: Path, overwrite: bool, kind: Optional[str] = None,
                          keeps_other_files: bool = False) -> None:
    """Refuse a non-empty ``output`` unless ``overwrite``; refuse a file in its place or a symbolic link; with
    ``kind``, refuse to overwrite a directory that holds another kind of output (``keeps_other_files``: the
    command writes its files among files of other programs and deletes none of them)."""
    output = Path(output)
    refuse_symlinked_output(output)
    if output.exists() and not output.is_dir():
        raise BertpreError(f"{output}: exists and is not a directory")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise BertpreError(f"{output}: directory is not empty; choose another --output or pass --overwrite true")
    found = output_kind(output)
    if kind is not None and found is not None and found != kind and not (keeps_other_files and found == OTHER_FILES):
        what = f"holds {OTHER_FILES} ({_some_names(output)})" if found == OTHER_FILES else f"holds a {found}"
        raise BertpreError(f"{output}: {what}, not a {kind}; --overwrite replaces only a {kind}: choose another "
                           "--output")


def _some_names(directory: Path, count: int = 3) -> str:
    names = sorted(p.name for p in directory.iterdir())
    return ", ".join(names[:count]) + (", …" if len(names) > count else "")


def check_apart_from_inputs(output: str | Path, inputs: Mapping[str, Iterable[Optional[str | Path]]]) -> None:
    """Refuse an output that is one of the command's inputs, lies inside one, or contains one (paths compared
    after resolving symbolic links): writing or replacing it would destroy what the command reads.
    ``inputs`` maps each option (``--data``) to the paths it names; hub ids and built-ins are skipped."""
    real_output = Path(os.path.realpath(output))
    for option, paths in inputs.items():
        for path in paths:
            if path is None or str(path).startswith(("hf:", "builtin:")) or not os.path.lexists(path):
                continue
            real = Path(os.path.realpath(path))
            if real == real_output:
                relation = f"is the {option} {path}"
            elif real.is_relative_to(real_output):
                relation = f"contains the {option} {path}"
            elif real_output.is_relative_to(real):
                relation = f"lies inside the {option} {path}"
            else:
                continue
            raise BertpreError(f"{output}: {relation}; a command never writes over its own inputs: choose an "
                               "--output apart from them")


def os_error_of(error: BaseException) -> Optional[OSError]:
    """The operating-system error behind ``error``: itself, one in its chain of causes, or the errno a library
    wrote into its message (safetensors, tokenizers and torch's writers raise their own types)."""
    seen: set[int] = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno is not None:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    found = _ERRNO_IN_MESSAGE.search(str(error))
    if found and int(found.group(1)) in errno.errorcode:
        number = int(found.group(1))
        return OSError(number, os.strerror(number))
    return None


def disk_error(path: str | Path, error: BaseException, outcome: str) -> Optional[BertpreError]:
    """The one-line error for a write of ``path`` that failed for the machine's sake (a full disk, a quota, a
    file too large, a read-only file system), saying ``outcome`` (what was and was not left); None otherwise."""
    cause = os_error_of(error)
    if cause is None or cause.errno not in DISK_ERRORS:
        return None
    where = cause.filename or path
    return BertpreError(f"{where}: {cause.strerror} ({errno.errorcode[cause.errno]}); {DISK_ERRORS[cause.errno]}; "
                        f"{outcome}")


@contextmanager
def disk_errors_named(path: str | Path, outcome: str = "nothing half-written is left") -> Iterator[None]:
    """Turn a write that fails for the machine's sake inside the block into one line naming ``path`` (or the
    file the error names) and the errno; anything else passes through."""
    try:
        yield
    except BertpreError:
        raise
    except Exception as error:
        named = disk_error(path, error, outcome)
        if named is None:
            raise
        raise named from None


def remove_output(path: Path) -> None:
    """Delete an earlier output, never reaching through a symbolic link: a link is removed, not its target."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


def current_umask() -> int:
    """The process's umask (reading it means setting it; it is put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_directory(output: str | Path, overwrite: bool = False, keep_other_files: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory to fill; on success it replaces ``output`` in one rename.

    On any exception the temporary directory is removed and ``output`` is untouched; so is an ``output``
    that was empty when we started and was filled by another process meanwhile. With
    ``keep_other_files`` an existing ``output`` is updated file by file, so files we did not
    write there (a recipe beside a tokenizer) stay. The directory gets the mode the umask gives a
    new directory (a temporary directory would otherwise stay private, 0700).
    """
    output = Path(output)
    check_writable_output(output, overwrite)
    make_parent(output)
    if holds_lock(output):  # no other writer: what a killed writer of this output left is ours to remove
        remove_leftover_staging(output)
    was_empty = not _holds_something(output)
    staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX.format(name=output.name)}", dir=output.parent))
    try:
        yield staging
        if was_empty and _holds_something(output):  # two runs given one --output: the first to finish keeps it
            raise BertpreError(f"{output}: another process wrote it while this one ran; nothing of it was replaced. "
                               "Give each run its own --output")
        apply_umask(staging)
        if keep_other_files and output.is_dir() and any(output.iterdir()):
            for staged in staging.iterdir():
                if (output / staged.name).is_dir() or (output / staged.name).is_symlink():
                    remove_output(output / staged.name)
                os.replace(staged, output / staged.name)
            staging.rmdir()
        else:
            if output.exists():
                remove_output(output)
            os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


_STAGING_PREFIX = ".{name}.staging-"


def remove_leftover_staging(output: Path) -> None:
    """Remove the staging directories of ``output`` that a killed earlier writer left beside it (only safe
    while holding the output's lock: otherwise one of them may be another writer's, still being filled)."""
    pattern = re.compile(re.escape(_STAGING_PREFIX.format(name=output.name)) + r"[a-z0-9_]{8}")
    for leftover in output.parent.iterdir() if output.parent.is_dir() else ():
        if pattern.fullmatch(leftover.name) and leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)


def _holds_something(output: Path) -> bool:
    return output.exists() and (not output.is_dir() or any(output.iterdir()))


def apply_umask(directory: Path) -> None:
    """Give ``directory`` and everything in it the modes the umask gives new files and directories
    (temporary directories, and some libraries' files, start private)."""
    mask = current_umask()
    directory.chmod(0o777 & ~mask)
    for path in directory.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def write_text_atomically(path: str | Path, text: str) -> None:
    """Replace ``path``'s content in one rename: a kill or a full disk leaves the old file or the new one."""
    path = Path(path)
    make_parent(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~current_umask())
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        if error.filename is None:  # a failed write or fsync names no file: name the one being written
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
