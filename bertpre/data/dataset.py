"""Reading prepared data (the `bertpre prepare` output format) for training, with pyarrow only.

A prepared dataset is a directory holding ``prepare.json`` (metadata), ``prepare.yaml`` (the
config), ``tokenizer/`` (a copy of the tokenizer) and ``train/`` and ``eval/`` splits of Arrow
files. Several such directories under one parent (from ``--shard i/N`` runs) read as one dataset.
GPU machines without `datasets` can train: nothing here imports it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import numpy as np

from bertpre.core.errors import BertpreError
from bertpre.data.metadata import DataMetadata, read_data_metadata


def token_id_type(vocab_size: int) -> str:
    """The Arrow integer type that holds every token id of a vocabulary: uint16 when it fits."""
    return "uint16" if vocab_size <= 65536 else "int32"


class PretrainingData:
    """Prepared pairs of one split, memory-mapped from every shard under a `prepare` output.

    ``path`` is one `bertpre prepare` output, or a directory of several (from ``--shard i/N``
    runs); they are read as one dataset, in sorted order.
    """

    def __init__(self, path: str | Path, split: str = "train", metadata: Optional[DataMetadata] = None) -> None:
        self.path = Path(path)
        self.split = split
        self.metadata = metadata or read_data_metadata(self.path)
        self._open()

    def __getstate__(self) -> dict[str, Any]:
        # Data-loading workers reopen the memory map instead of receiving a pickled copy of the data.
        return {"path": self.path, "split": self.split, "metadata": self.metadata}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    def _open(self) -> None:
        tables = []
        for shard in self.metadata.shards:
            split_dir = shard.root / self.split
            files = split_files(split_dir)
            if not files:
                raise BertpreError(f"{split_dir}: no prepared {self.split} data (run `bertpre prepare`)")
            shard_tables = [_read_arrow_file(file) for file in files]
            _check_row_count(split_dir, shard.rows(self.split), sum(table.num_rows for table in shard_tables))
            tables += shard_tables
        import pyarrow as pa

        try:
            self.table = pa.concat_tables(tables).combine_chunks() if len(tables) > 1 else tables[0]
        except pa.ArrowInvalid:
            raise BertpreError(f"{self.path}: its {self.split} files differ in layout (prepared by different "
                               "versions or tokenizers?); prepare the data again") from None
        self._offsets, self._values = _list_buffers(self.table.column("input_ids"))
        self._type_offsets, self._type_values = _list_buffers(self.table.column("token_type_ids"))
        self._nsp = self.table.column("next_sentence_label").to_numpy()

    @property
    def max_seq_length(self) -> int:
        """The length the pairs were prepared for."""
        return self.metadata.max_seq_length

    def __len__(self) -> int:
        return self.table.num_rows

    def lengths(self) -> np.ndarray:
        """Length of every example (tokens including specials)."""
        return np.diff(self._offsets)

    def token_buffers(self) -> tuple[np.ndarray, np.ndarray]:
        """Every example's token ids at once: offsets (one more than examples) and the concatenated ids."""
        return self._offsets, self._values

    def example(self, index: int) -> dict[str, np.ndarray]:
        """One example as numpy arrays: ``input_ids``, ``token_type_ids``, ``next_sentence_label``."""
        start, end = self._offsets[index], self._offsets[index + 1]
        type_start = self._type_offsets[index]
        return {"input_ids": self._values[start:end],
                "token_type_ids": self._type_values[type_start:type_start + end - start],
                "next_sentence_label": self._nsp[index]}


def split_files(split_dir: Path) -> list[Path]:
    """The Arrow files of one split directory in order, refusing a set with a file missing.

    Files are named ``data-00003-of-00008.arrow``: a copy that lost one would otherwise train on
    seven eighths of the data without a word.
    """
    files = sorted(split_dir.glob("data-*.arrow"))
    present: dict[int, set[int]] = {}  # "of N" → the indices present
    for file in files:
        match = _FILE_NAME.fullmatch(file.name)
        if match:
            present.setdefault(int(match.group(2)), set()).add(int(match.group(1)))
    for total, indices in present.items():
        missing = sorted(set(range(total)) - indices)
        if missing:
            raise BertpreError(f"{split_dir}: data-{missing[0]:05d}-of-{total:05d}.arrow is missing ({len(missing)} of "
                               f"{total} files); copy the directory again or prepare the data again")
    return files


_FILE_NAME = re.compile(r"data-(\d+)-of-(\d+)\.arrow")


def _read_arrow_file(file: Path):  # noqa: ANN202 - a pyarrow Table
    """One memory-mapped Arrow stream; a damaged or cut-short file is named in one line."""
    import pyarrow as pa

    try:
        with pa.memory_map(str(file)) as source:
            table = pa.ipc.open_stream(source).read_all()
    except (pa.ArrowInvalid, OSError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0][:80]
        raise BertpreError(f"{file}: damaged or cut short ({reason}); copy it again or prepare the data again") from None
    missing = [name for name in ("input_ids", "token_type_ids", "next_sentence_label") if name not in table.column_names]
    if missing:
        raise BertpreError(f"{file}: not `bertpre prepare` data (no column {', '.join(missing)}); prepare the data again")
    return table


def _check_row_count(split_dir: Path, expected: Optional[int], rows: int) -> None:
    """The split holds as many pairs as `prepare` wrote (its summary says), or the data is incomplete."""
    if expected is not None and expected != rows:
        raise BertpreError(f"{split_dir}: holds {rows:,} pairs where `bertpre prepare` wrote {expected:,}; the "
                           "directory is incomplete or was mixed with another: copy or prepare it again")


def _list_buffers(column) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    array = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    offsets = array.offsets.to_numpy()
    values = array.values.to_numpy()
    return offsets, values
