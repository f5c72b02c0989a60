"""Writing results so that a failure never leaves a half-written directory where a complete one is expected."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bertpre.errors import BertpreError


def check_writable_output(output: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``output`` unless ``overwrite``; refuse a file in its place."""
    if output.exists() and not output.is_dir():
        raise BertpreError(f"{output}: exists and is not a directory")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise BertpreError(f"{output}: directory is not empty; choose another --output or pass --overwrite true")


@contextmanager
def atomic_directory(output: str | Path, overwrite: bool = False, keep_other_files: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory to fill; on success it replaces ``output`` in one rename.

    On any exception the temporary directory is removed and ``output`` is untouched. With
    ``keep_other_files`` an existing ``output`` is updated file by file, so files we did not
    write there (a recipe beside a tokenizer) stay.
    """
    output = Path(output)
    check_writable_output(output, overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        yield staging
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
