"""Writing results so that a failure never leaves a half-written file or directory where a complete
one is expected, with the permissions the user's umask gives any file they create."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bertpre.core.errors import BertpreError


def check_writable_output(output: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``output`` unless ``overwrite``; refuse a file in its place."""
    if output.exists() and not output.is_dir():
        raise BertpreError(f"{output}: exists and is not a directory")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise BertpreError(f"{output}: directory is not empty; choose another --output or pass --overwrite true")


def current_umask() -> int:
    """The process's umask (reading it means setting it; it is put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_parent(path: Path) -> None:
    """Create ``path``'s parent directories, or say in one line why they cannot be."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise BertpreError(f"{path.parent}: permission denied; choose an --output you can write to") from None
    except (FileExistsError, NotADirectoryError):
        blocking = next((p for p in (path.parent, *path.parent.parents) if p.exists() and not p.is_dir()), path.parent)
        raise BertpreError(f"{blocking}: is a file, not a directory; choose an --output outside it") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise BertpreError(f"{path.parent}: not writable (permission denied); choose an --output you can write to")


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
    was_empty = not _holds_something(output)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        yield staging
        if was_empty and _holds_something(output):  # two runs given one --output: the first to finish keeps it
            raise BertpreError(f"{output}: another process wrote it while this one ran; nothing of it was replaced. "
                               "Give each run its own --output")
        apply_umask(staging)
        if keep_other_files and output.is_dir() and any(output.iterdir()):
            for staged in staging.iterdir():
                if (output / staged.name).is_dir():
                    shutil.rmtree(output / staged.name)
                os.replace(staged, output / staged.name)
            staging.rmdir()
        else:
            if output.exists():
                shutil.rmtree(output)
            os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


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
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
