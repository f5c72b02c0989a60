"""Labelled tables for fine-tuning and prediction: CSV, TSV (GLUE's way), JSONL, Parquet and hub datasets,
their columns, and their rows tokenized for a classifier."""

from __future__ import annotations

import codecs
import csv
import gzip
import math
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from bertpre.readers.corpus import load_hub_dataset, parse_json_line, refuse_gzipped_parquet
from bertpre.readers.input_paths import check_input_file
from bertpre.readers.lines import refuse_other_unicode
from bertpre.core.errors import BertpreError

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class TableRows(list):
    """A table's rows (dicts), with the file line each starts on when the file has lines (CSV, TSV, JSONL)."""

    def __init__(self, rows: list[dict[str, Any]], lines: Optional[list[int]] = None) -> None:
        super().__init__(rows)
        self.lines = lines


def read_table(path: str, column_names: Sequence[str] = ()) -> TableRows:
    """Rows of a CSV, TSV, JSONL or Parquet file (``.gz`` too), or of ``hf:NAME[:CONFIG]@SPLIT``.

    TSV files are read as GLUE distributes them: no quoting (quotes are text) and a UTF-8
    byte-order mark tolerated. ``column_names`` names the columns of a file without a header.
    """
    if path.startswith("hf:"):
        return TableRows(_read_hub_table(path))
    file = Path(path)
    check_input_file(path)  # a pipe, a device, a dangling link or a directory is named as what it is
    name = file.name[:-3] if file.name.endswith(".gz") else file.name
    suffix = Path(name).suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        refuse_gzipped_parquet(path)
        try:
            return TableRows(pq.read_table(path).to_pylist())
        except Exception as error:  # pyarrow raises several types for a file that is not Parquet
            raise BertpreError(f"{path}: not a readable Parquet file ({str(error).splitlines()[0][:80]}); check "
                               "that its content matches its extension") from None
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            if suffix in (".jsonl", ".json", ".ndjson"):
                numbered = [(number, line) for number, line in enumerate(handle, 1) if line.strip()]
                return TableRows([parse_json_line(line, path, number) for number, line in numbered],
                                 [number for number, _ in numbered])
            if suffix in (".tsv", ".txt"):
                reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            elif suffix == ".csv":
                reader = csv.reader(handle)
            else:
                raise BertpreError(f"{path}: unknown table format (use .csv, .tsv, .jsonl or .parquet)")
            return _rows_with_header([(row, reader.line_num) for row in reader], column_names, path)
    except UnicodeDecodeError:
        refuse_other_unicode(path, _first_bytes(path, opener))
        line, offset = _first_invalid_utf8(path, opener)
        raise BertpreError(f"{path}: not valid UTF-8 at line {line} (byte {offset}); is it a binary file, or in "
                           "another encoding? Convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile, a truncated or damaged .gz
        raise BertpreError(f"{path}: not a readable gzip file ({error})") from None
    except csv.Error as error:
        raise BertpreError(f"{path}: not a readable table ({error})") from None


def _rows_with_header(rows: list[tuple[list[str], int]], column_names: Sequence[str], path: str) -> TableRows:
    """Dicts of the rows after the header (or named by ``column_names``); ``rows`` are (fields, line) pairs."""
    if not rows:
        return TableRows([], [])
    header = list(column_names) if column_names else rows[0][0]
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:  # a row as a dict would keep the last of them silently
        raise BertpreError(f"{path}: the column{'s' if len(twice) > 1 else ''} {', '.join(map(repr, twice))} "
                           f"{'are' if len(twice) > 1 else 'is'} named twice in the header; give each column its own name")
    body = rows if column_names else rows[1:]
    table, lines = [], []
    for row, line in body:
        if not row:
            continue
        if len(row) != len(header):
            raise BertpreError(f"{path}: line {line} has {len(row)} fields, the header has {len(header)} "
                               f"({', '.join(header)})")
        table.append(dict(zip(header, row)))
        lines.append(line)
    return TableRows(table, lines)


def _first_bytes(path: str, opener: Any) -> bytes:
    try:
        with opener(path, "rb") as handle:
            return handle.read(4)
    except (OSError, EOFError, zlib.error):
        return b""


def _first_invalid_utf8(path: str, opener: Any) -> tuple[int, int]:
    """Line (from 1) and byte offset (from 0) of the first byte sequence that is not UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, line = 0, 1
    try:
        with opener(path, "rb") as handle:
            while True:
                chunk = handle.read(1 << 20)
                pending = len(decoder.getstate()[0])  # bytes of a character cut at the previous chunk's end
                try:
                    decoder.decode(chunk, final=not chunk)
                except UnicodeDecodeError as error:
                    position = error.start - pending
                    return line + chunk[:max(position, 0)].count(b"\n"), offset + position
                if not chunk:
                    return line, offset
                offset += len(chunk)
                line += chunk.count(b"\n")
    except (OSError, EOFError, zlib.error):  # a .gz cut short before the bad byte: where reading stopped
        return line, offset


def _read_hub_table(spec: str) -> list[dict[str, Any]]:
    return load_hub_dataset(spec, streaming=False).to_list()


@dataclass
class LabelledData:
    """Texts (and optional pairs) with labels: class ids, or floats for regression; ``lines`` are the
    rows' file lines (None for Parquet and hub datasets, whose rows are counted from 1)."""

    texts: list[str]
    pairs: Optional[list[str]]
    labels: Optional[list[Any]]
    lines: Optional[list[int]] = None

    def place(self, index: int) -> str:
        """Where row ``index`` (from 0) is, as the user finds it: ``line 12`` or ``row 11``."""
        return f"line {self.lines[index]}" if self.lines else f"row {index + 1}"

    def subset(self, keep: list[int]) -> "LabelledData":
        """The rows at the indices ``keep``, in that order."""
        return LabelledData([self.texts[i] for i in keep], [self.pairs[i] for i in keep] if self.pairs else None,
                            [self.labels[i] for i in keep] if self.labels is not None else None,
                            [self.lines[i] for i in keep] if self.lines else None)


def select_columns(rows: list[dict[str, Any]], text: str, pair: Optional[str], label: Optional[str],
                   source: str) -> LabelledData:
    """Pick the text, pair and label columns, naming the columns that exist when one is missing.

    Every row is checked: a row without one of the columns, a text that is a list or a mapping, or a
    missing label (null, empty, NaN) is refused in one line naming its line, instead of a null label
    silently becoming a class of its own.
    """
    if not rows:
        raise BertpreError(f"{source}: the split is empty")
    columns = list(rows[0])
    for role, column in (("text", text), ("pair", pair), ("label", label)):
        if column is not None and column not in rows[0]:
            raise BertpreError(f"{source}: no {role} column '{column}' (columns: {', '.join(map(str, columns))}); "
                               f"set --{role}-column")
    data = LabelledData([], [] if pair else None, [] if label else None, getattr(rows, "lines", None))
    for index, row in enumerate(rows):
        where = f"{source}: {data.place(index)}"
        data.texts.append(_text_cell(row, text, where))
        if pair:
            data.pairs.append(_text_cell(row, pair, where))
        if label:
            data.labels.append(_label_cell(row, label, where))
    return data


def _cell(row: dict[str, Any], column: str, where: str) -> Any:
    if column not in row:
        raise BertpreError(f"{where} has no column '{column}' (it has {', '.join(map(str, row))}); every row needs "
                           "the same columns")
    return row[column]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _text_cell(row: dict[str, Any], column: str, where: str) -> str:
    value = _cell(row, column, where)
    if _missing(value):
        return ""  # an empty text is still a row to classify (a blank CSV cell reads as "", pandas writes NaN)
    if isinstance(value, (list, tuple, dict, bytes)):
        raise BertpreError(f"{where}: column '{column}' holds a {type(value).__name__} ({str(value)[:40]}), not a text")
    return str(value)


def _label_cell(row: dict[str, Any], column: str, where: str) -> Any:
    value = _cell(row, column, where)
    if _missing(value) or (isinstance(value, str) and not value.strip()):
        raise BertpreError(f"{where} has no label in column '{column}' ({value!r}); label every row or leave the "
                           "row out")
    if isinstance(value, (list, tuple, dict, bytes)):
        raise BertpreError(f"{where}: column '{column}' holds a {type(value).__name__} ({str(value)[:40]}), not a "
                           "label (a class name, a class id or a number)")
    return value


def as_floats(data: LabelledData, source: str, column: str) -> list[float]:
    """Regression labels as finite floats; a value that is not one is refused naming its line."""
    floats = []
    for index, value in enumerate(data.labels or []):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise BertpreError(f"{source}: {data.place(index)} column '{column}' is {value!r}, not a number; a "
                               "regression task needs numeric labels") from None
        if not math.isfinite(number):
            raise BertpreError(f"{source}: {data.place(index)} column '{column}' is {value!r}; a regression label "
                               "must be a finite number")
        floats.append(number)
    return floats


class EncodedRows:
    """Tokenized texts (and pairs) with optional label ids, one dict per row for :func:`pad_examples`: a
    map-style dataset a torch ``DataLoader`` reads (no torch import here: reading tables, for decontamination
    too, needs none)."""

    def __init__(self, tokenizer: Any, data: LabelledData, max_length: int, label_ids: Optional[list[Any]]) -> None:
        # token types asked for: a tokenizer saved beside a ModernBERT leaves them out by default
        encoded = tokenizer(data.texts, data.pairs, truncation=True, max_length=max_length,
                            return_attention_mask=False, return_token_type_ids=True)
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
