"""A split's pairs (or segments) as Arrow files, laid out as `datasets.save_to_disk` lays them out, written with
pyarrow.

``train/`` and ``eval/`` hold ``data-0000i-of-0000N.arrow`` (Arrow IPC streams, record batches of 1,000
rows), ``state.json`` and ``dataset_info.json``, so ``datasets.load_from_disk`` reads a split as well
as ``bertpre/data/dataset.py`` does. The number of files follows ``max_shard_size`` and the data's
size as `datasets` computes them.

The files are byte-identical to those bertpre wrote through `datasets` (0.1.0; one worker), which
had a quirk: an Arrow writer records a buffer's length padded to 8 bytes when the array it writes is
a slice with bytes after it in memory, and `datasets` wrote each file from slices of the files of
the step before (``datasets.map`` over groups of 32 documents, then one save, then the save of the
split). :func:`_recorded_lengths` replays those three steps on the row counts to know, for each
record batch and column, how many bytes were recorded; :func:`write_split` writes them (the padding
bytes are the next rows' own, as they were). It changes no value: only the bytes between buffers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertpre.data.pair_rows import B_DOCUMENTS, DOCUMENTS, LABELS, LENGTHS, TYPES, VALUES

ROWS_PER_BATCH = 1000  # datasets' DEFAULT_MAX_BATCH_SIZE: rows per record batch (map, save_to_disk)
_INTERMEDIATE_SHARD_SIZE = 500 * 10**6  # datasets' MAX_SHARD_SIZE, of the save between map and the split's save
_MAX_ROW_GROUP_SIZE = 100 * 10**6  # datasets' MAX_ROW_GROUP_SIZE: a batch holds at most this much
COLUMNS = ("input_ids", "token_type_ids", "next_sentence_label", "document", "b_document")


def features(id_type: str) -> dict:
    """The split's columns as `datasets` Features (its JSON form, in the schema's metadata and dataset_info.json)."""
    return {"input_ids": {"feature": {"dtype": id_type, "_type": "Value"}, "_type": "List"},
            "token_type_ids": {"feature": {"dtype": "uint8", "_type": "Value"}, "_type": "List"},
            "next_sentence_label": {"dtype": "int8", "_type": "Value"},
            "document": {"dtype": "int32", "_type": "Value"},
            "b_document": {"dtype": "int32", "_type": "Value"}}


def arrow_schema(id_type: str):  # noqa: ANN201 - a pyarrow Schema
    """The Arrow schema of a split's files, with the metadata `datasets` reads its features from."""
    import pyarrow as pa

    return pa.schema([pa.field("input_ids", pa.list_(pa.from_numpy_dtype(np.dtype(id_type)))),
                      pa.field("token_type_ids", pa.list_(pa.uint8())),
                      pa.field("next_sentence_label", pa.int8()), pa.field("document", pa.int32()),
                      pa.field("b_document", pa.int32())],
                     metadata={"huggingface": json.dumps({"info": {"features": features(id_type)}})})


@dataclass(frozen=True)
class SplitRows:
    """A split's pairs on disk (the files of ``bertpre/data/pair_rows.py``, joined) and how they were made."""

    directory: Path
    id_type: str
    rows: int
    tokens: int
    group_rows: list[list[int]]  # per pass, pairs per group of 32 documents

    def nbytes(self) -> int:
        """The data's size as `datasets` estimates it (pyarrow's ``Table.nbytes``): values, and 4 bytes of
        offset per row and list column."""
        return self.tokens * (np.dtype(self.id_type).itemsize + 1) + self.rows * (4 + 4 + 1 + 4 + 4)


@dataclass(frozen=True)
class Layout:
    """Where the files of a split begin and end (rows), and the rows per record batch."""

    shards: list[tuple[int, int]]
    batch_rows: int


def layout(rows: int, nbytes: int, max_shard_size: int) -> Layout:
    """The files `datasets.save_to_disk` writes: ``nbytes / max_shard_size + 1`` of them, of equal rows."""
    return Layout(_contiguous_shards(rows, min(rows, int(nbytes / max_shard_size) + 1)), _batch_rows(rows, nbytes))


def _contiguous_shards(rows: int, count: int) -> list[tuple[int, int]]:
    div, mod = divmod(rows, count)
    starts = [div * index + min(index, mod) for index in range(count)]
    return [(start, start + div + (1 if index < mod else 0)) for index, start in enumerate(starts)]


def _batch_rows(rows: int, nbytes: int) -> int:
    return min(ROWS_PER_BATCH, max(1, rows * _MAX_ROW_GROUP_SIZE // nbytes)) if nbytes > 0 else ROWS_PER_BATCH


def _slices(shards: list[tuple[int, int]], batch_rows: int) -> list[tuple[int, int]]:
    return [(start, min(start + batch_rows, end)) for first, end in shards for start in range(first, end, batch_rows)]


def write_split(split_rows: SplitRows, output: Path, max_shard_size: int, shard_index: int) -> Path:
    """Write file ``shard_index`` of the split into ``output`` (a directory); return its path."""
    import pyarrow as pa

    files = layout(split_rows.rows, split_rows.nbytes(), max_shard_size)
    first, end = files.shards[shard_index]
    path = output / f"data-{shard_index:05d}-of-{len(files.shards):05d}.arrow"
    schema = arrow_schema(split_rows.id_type)
    columns = _RowReader(split_rows)
    batches = [(a, b) for a, b in _slices(files.shards, files.batch_rows) if first <= a < end]
    recorded = _recorded_lengths(split_rows, files, batches, columns)
    with pa.OSFile(str(path), "wb") as sink, pa.RecordBatchStreamWriter(sink, schema) as writer:
        for (a, b), lengths, first_token in zip(batches, *recorded):
            writer.write_batch(columns.batch(a, b, lengths, first_token, schema))
    return path


def write_split_descriptions(split_rows: SplitRows, output: Path, max_shard_size: int, split: str,
                             examples: str = "pairs") -> None:
    """``state.json`` and ``dataset_info.json``, as `datasets.load_from_disk` expects them (``examples``: pairs or
    segments, for the description)."""
    files = layout(split_rows.rows, split_rows.nbytes(), max_shard_size)
    names = [f"data-{index:05d}-of-{len(files.shards):05d}.arrow" for index in range(len(files.shards))]
    fingerprint = hashlib.blake2b(json.dumps([split, split_rows.rows, split_rows.tokens, split_rows.group_rows,
                                              names]).encode(), digest_size=8).hexdigest()
    state = {"_data_files": [{"filename": name} for name in names], "_fingerprint": fingerprint,
             "_format_columns": None, "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False,
             "_split": split}
    (output / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    size = split_rows.nbytes()
    info = {"builder_name": None, "citation": "", "config_name": None, "dataset_name": None, "dataset_size": size,
            "description": _DESCRIPTIONS[examples], "download_size": 0,
            "features": features(split_rows.id_type), "homepage": "", "license": "", "size_in_bytes": size,
            "splits": {split: {"name": split, "num_bytes": size, "num_examples": split_rows.rows}}}
    (output / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")


_DESCRIPTIONS = {"pairs": "next-sentence pairs written by `bertpre prepare`",
                 "segments": "MLM-only segments written by `bertpre prepare --examples segments`"}


# ---- the byte layout of `datasets` (see the module docstring) ----------------------------------


def _recorded_lengths(split_rows: SplitRows, files: Layout, batches: list[tuple[int, int]],
                      columns: "_RowReader") -> tuple[list[dict[str, int]], list[int]]:
    """For each batch to write and each column, the buffer length (bytes) `datasets`' writers recorded; and
    the token where each batch begins."""
    # step 1: datasets.map wrote each group's pairs as one table, cut into batches of 1,000 rows
    groups, chunks, start = [], [], 0
    for pass_groups in split_rows.group_rows:
        for rows in pass_groups:
            if rows:
                groups.append((start, start + rows))
                chunks += [(a, min(a + ROWS_PER_BATCH, start + rows)) for a in range(start, start + rows, ROWS_PER_BATCH)]
                start += rows
    group_end = {a: end for first, end in groups for a in range(first, end, ROWS_PER_BATCH)}
    # step 2: one save of all passes; step 3: the split's own save (this call's files)
    saved = _slices(_contiguous_shards(split_rows.rows, min(split_rows.rows, int(
        split_rows.nbytes() / _INTERMEDIATE_SHARD_SIZE) + 1)), files.batch_rows)
    positions = columns.byte_positions(sorted({r for a, b in chunks + saved + batches for r in (a, b)}
                                              | set(group_end.values())))
    step1 = {(a, b): _padded_within(positions, a, b, a, group_end[a], {}) for a, b in chunks}
    step2 = _slices_of(saved, chunks, step1, positions)
    step3 = _slices_of(batches, saved, step2, positions)
    width = columns.widths["input_ids"]
    return [step3[batch] for batch in batches], [positions["input_ids"][a] // width for a, _ in batches]


def _slices_of(slices: list[tuple[int, int]], sources: list[tuple[int, int]], recorded: dict, positions: dict) -> dict:
    """Recorded lengths of ``slices`` written from tables made of the batches ``sources`` (recorded as given)."""
    starts = [a for a, _ in sources]
    result = {}
    for a, b in slices:
        index = int(np.searchsorted(starts, a, side="right")) - 1
        source = sources[index]
        if b <= source[1]:  # inside one source batch: its buffer, with what it recorded after the slice
            result[(a, b)] = _padded_within(positions, a, b, source[0], None, recorded[source])
        else:  # across batches: pyarrow concatenates them into a buffer of its exact size
            result[(a, b)] = {column: positions[column][b] - positions[column][a] for column in positions}
    return result


def _padded_within(positions: dict, a: int, b: int, source_start: int, source_end, recorded: dict) -> dict:  # noqa: ANN001
    """Rows ``[a, b)`` written from a buffer that starts at row ``source_start`` and holds ``recorded`` bytes (or
    ends at row ``source_end``): the length padded to 8, as far as the buffer reaches."""
    lengths = {}
    for column, at in positions.items():
        exact = at[b] - at[a]
        available = (at[source_end] if source_end is not None else at[source_start] + recorded[column]) - at[a]
        lengths[column] = min(-(-exact // 8) * 8, available)
    return lengths


class _RowReader:
    """Reads a split's rows from its joined files and builds Arrow record batches of them."""

    def __init__(self, split_rows: SplitRows) -> None:
        self.directory = split_rows.directory
        self.id_dtype = np.dtype(split_rows.id_type)
        self.rows = split_rows.rows
        self.widths = {"input_ids": self.id_dtype.itemsize, "token_type_ids": 1, "next_sentence_label": 1,
                       "document": 4, "b_document": 4}

    def _read(self, name: str, dtype: np.dtype, first: int, count: int) -> np.ndarray:
        return np.fromfile(self.directory / name, dtype, count=count, offset=first * np.dtype(dtype).itemsize)

    def byte_positions(self, rows: list[int]) -> dict[str, dict[int, int]]:
        """For each column, where each of ``rows`` (sorted) begins in its buffer, in bytes."""
        token_at: dict[int, int] = {}
        total, done, block = 0, 0, 2**20
        wanted = iter(rows)
        row = next(wanted, None)
        while row is not None:
            lengths = self._read(LENGTHS, np.int32, done, min(block, self.rows - done)).astype(np.int64)
            starts = total + np.concatenate([[0], np.cumsum(lengths)])
            while row is not None and row <= done + len(lengths):
                token_at[row] = int(starts[row - done])
                row = next(wanted, None)
            total, done = int(starts[-1]), done + len(lengths)
            if not len(lengths):
                break
        return {column: {r: (token_at[r] if column in ("input_ids", "token_type_ids") else r) * width
                         for r in rows} for column, width in self.widths.items()}

    def batch(self, a: int, b: int, recorded: dict[str, int], first_token: int, schema):  # noqa: ANN001, ANN201
        """Rows ``[a, b)`` (``first_token`` is where row ``a`` begins) as a record batch whose buffers reach
        ``recorded`` bytes: the bytes after the rows' own are the next rows'."""
        import pyarrow as pa

        lengths = self._read(LENGTHS, np.int32, a, b - a).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        tokens = int(offsets[-1])
        ids = self._read(VALUES, self.id_dtype, first_token, recorded["input_ids"] // self.id_dtype.itemsize)
        types = self._read(TYPES, np.dtype(np.uint8), first_token, recorded["token_type_ids"])
        arrays = [pa.ListArray.from_arrays(_arrow(offsets), _arrow(ids).slice(0, tokens)),
                  pa.ListArray.from_arrays(_arrow(offsets), _arrow(types).slice(0, tokens))]
        for column, name, dtype in (("next_sentence_label", LABELS, np.int8), ("document", DOCUMENTS, np.int32),
                                    ("b_document", B_DOCUMENTS, np.int32)):
            values = self._read(name, dtype, a, recorded[column] // np.dtype(dtype).itemsize)
            arrays.append(_arrow(values).slice(0, b - a))
        return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _arrow(values: np.ndarray):  # noqa: ANN202 - a pyarrow Array
    """A numpy array as an Arrow array over the same bytes (``pa.array`` would import pandas to look for it)."""
    import pyarrow as pa

    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])
