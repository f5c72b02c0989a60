"""Input paths as the user named them: a path that exists is a name, never a pattern; a name that is not a
regular file or directory (a named pipe, a socket, a device) is refused by what it is; a symbolic link
whose target is missing is said to be one, never skipped or called "no such file".

Inputs are read more than once (a tokenizer's alphabet, then its training; a file's layout, then its
documents), which a pipe or a device cannot give.
"""

from __future__ import annotations

import glob
import os
import stat
from pathlib import Path
from typing import Callable, Iterator

from bertpre.core.errors import BertpreError

_SPECIAL_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                  (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def special_kind(path: str | Path) -> str | None:
    """What ``path`` is when it is neither a regular file nor a directory (after following links), else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return next((name for is_kind, name in _SPECIAL_KINDS if is_kind(mode)), None)


def is_dangling_link(path: str | Path) -> bool:
    """Whether ``path`` is a symbolic link whose target does not exist."""
    return os.path.islink(path) and not os.path.exists(path)


def refuse_unreadable_kind(path: str | Path) -> None:
    """Refuse, naming ``path``, a dangling symbolic link or anything that is not a regular file or directory."""
    if is_dangling_link(path):
        raise BertpreError(f"{path}: a symbolic link to {os.readlink(path)}, which does not exist; restore its "
                           "target or remove the link")
    kind = special_kind(path)
    if kind is not None:
        raise BertpreError(f"{path}: is {kind}, not a file; bertpre reads each input more than once: save "
                           "the data to a regular file and pass that")


def check_input_file(path: str | Path) -> None:
    """``path`` is a regular file (links followed), or a one-line error saying what it is instead."""
    refuse_unreadable_kind(path)
    if os.path.isdir(path):
        raise BertpreError(f"{path}: is a directory, not a file")
    if not os.path.lexists(path):
        raise BertpreError(f"{path}: no such file")


def expand_name(spec: str) -> list[str] | None:
    """What an input name stands for: None when it exists (a name, whatever its characters: `corpus[1].txt`
    is that file, not a pattern), else the sorted files of the glob pattern it spells, refusing dangling links
    and special files among them; directories a pattern matches are left out."""
    if os.path.lexists(spec) or not glob.has_magic(spec):
        return None
    matches = []
    for path in sorted(glob.glob(spec, recursive=True)):
        refuse_unreadable_kind(path)
        if os.path.isfile(path):
            matches.append(path)
    if not matches:
        raise BertpreError(f"{spec}: the pattern matches no file")
    return matches


def files_below(directory: str, wanted: Callable[[str], bool]) -> Iterator[str]:
    """Every file below ``directory`` whose name ``wanted`` accepts, symbolic links to directories followed
    (each real directory once, so a link back up the tree ends); names starting with a dot are left out.
    A dangling link is refused, and so is a special file that ``wanted`` accepts."""
    seen: set[str] = set()
    for root, subdirectories, files in os.walk(directory, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            subdirectories[:] = []
            continue
        seen.add(real)
        subdirectories.sort()
        for name in sorted(files):
            path = str(Path(root) / name)
            if name.startswith("."):
                continue
            if is_dangling_link(path) or (wanted(name) and special_kind(path)):
                refuse_unreadable_kind(path)
            if wanted(name):
                yield path
