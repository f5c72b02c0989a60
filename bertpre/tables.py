"""Labelled tables for fine-tuning and prediction: CSV, TSV (GLUE's way), JSONL, Parquet and hub datasets,
their columns, and their rows tokenized for a classifier."""

from __future__ import annotations

import csv
import gzip
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from bertpre.corpus import load_hub_dataset, parse_json_line
from bertpre.errors import BertpreError

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def read_table(path: str, column_names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Rows of a CSV, TSV, JSONL or Parquet file (``.gz`` too), or of ``hf:NAME[:CONFIG]@SPLIT``.

    TSV files are read as GLUE distributes them: no quoting (quotes are text) and a UTF-8
    byte-order mark tolerated. ``column_names`` names the columns of a file without a header.
    """
    if path.startswith("hf:"):
        return _read_hub_table(path)
    file = Path(path)
    if not file.is_file():
        raise BertpreError(f"{path}: no such file")
    name = file.name[:-3] if file.name.endswith(".gz") else file.name
    suffix = Path(name).suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as error:  # pyarrow raises several types for a file that is not Parquet
            raise BertpreError(f"{path}: not a readable Parquet file ({str(error).splitlines()[0][:80]}); check "
                               "that its content matches its extension") from None
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            if suffix in (".jsonl", ".json", ".ndjson"):
                return [parse_json_line(line, path, number) for number, line in enumerate(handle, 1) if line.strip()]
            if suffix in (".tsv", ".txt"):
                reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            elif suffix == ".csv":
                reader = csv.reader(handle)
            else:
                raise BertpreError(f"{path}: unknown table format (use .csv, .tsv, .jsonl or .parquet)")
            return _rows_with_header(list(reader), column_names, path)
    except UnicodeDecodeError as error:
        raise BertpreError(f"{path}: not valid UTF-8 at byte {error.start} (is it a binary file?)") from None
    except (OSError, EOFError) as error:  # gzip.BadGzipFile, a truncated .gz
        raise BertpreError(f"{path}: not a readable gzip file ({error})") from None
    except csv.Error as error:
        raise BertpreError(f"{path}: not a readable table ({error})") from None


def _rows_with_header(rows: list[list[str]], column_names: Sequence[str], path: str) -> list[dict[str, Any]]:
    if not rows:
        return []
    header = list(column_names) if column_names else rows[0]
    body = rows if column_names else rows[1:]
    table = []
    for number, row in enumerate(body, start=1 if column_names else 2):
        if not row:
            continue
        if len(row) != len(header):
            raise BertpreError(f"{path}: row {number} has {len(row)} fields, the header has {len(header)} "
                               f"({', '.join(header)})")
        table.append(dict(zip(header, row)))
    return table


def _read_hub_table(spec: str) -> list[dict[str, Any]]:
    return load_hub_dataset(spec, streaming=False).to_list()


@dataclass
class LabelledData:
    """Texts (and optional pairs) with labels: class ids, or floats for regression."""

    texts: list[str]
    pairs: Optional[list[str]]
    labels: Optional[list[Any]]


def select_columns(rows: list[dict[str, Any]], text: str, pair: Optional[str], label: Optional[str],
                   source: str) -> LabelledData:
    """Pick the text, pair and label columns, naming the columns that exist when one is missing."""
    if not rows:
        raise BertpreError(f"{source}: the split is empty")
    columns = list(rows[0])
    for role, column in (("text", text), ("pair", pair), ("label", label)):
        if column is not None and column not in rows[0]:
            raise BertpreError(f"{source}: no {role} column '{column}' (columns: {', '.join(map(str, columns))}); "
                               f"set --{role}-column")
    texts = [str(row[text] or "") for row in rows]
    pairs = [str(row[pair] or "") for row in rows] if pair else None
    labels = [row[label] for row in rows] if label else None
    return LabelledData(texts, pairs, labels)


def as_floats(values: list[Any], source: str, column: str) -> list[float]:
    """Regression labels as floats; a value that is not a number is refused naming its row."""
    floats = []
    for row, value in enumerate(values, start=1):
        try:
            floats.append(float(value))
        except (TypeError, ValueError):
            raise BertpreError(f"{source}: row {row} column '{column}' is {value!r}, not a number; a regression "
                               "task needs numeric labels") from None
    return floats


class EncodedRows(torch.utils.data.Dataset):
    """Tokenized texts (and pairs) with optional label ids, one dict per row for :func:`pad_examples`."""

    def __init__(self, tokenizer: Any, data: LabelledData, max_length: int, label_ids: Optional[list[Any]]) -> None:
        encoded = tokenizer(data.texts, data.pairs, truncation=True, max_length=max_length,
                            return_attention_mask=False)
        self.input_ids = encoded["input_ids"]
        self.token_type_ids = encoded["token_type_ids"]
        self.labels = label_ids

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {"input_ids": self.input_ids[index], "token_type_ids": self.token_type_ids[index]}
        if self.labels is not None:
            item["labels"] = self.labels[index]
        return item
