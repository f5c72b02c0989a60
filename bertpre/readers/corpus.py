"""Reading raw corpora into documents: text files, JSONL, Parquet, Hugging Face datasets, built-ins.

Everything streams: a corpus is an iterator of :class:`Document` (an id and its paragraphs), never
a list in memory. Problems with the input (a missing path, a binary file, undecodable bytes, a
missing column) raise :class:`~bertpre.core.config.BertpreError` with one line naming the file.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import itertools
import json
import os
import re
import sysconfig
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from bertpre.core.configs import BUILTIN_PYTHON_DOCS, CorpusConfig
from bertpre.core.errors import BertpreError
from bertpre.readers.input_paths import expand_name, files_below, refuse_unreadable_kind
from bertpre.readers.lines import decoded_lines
from bertpre.readers.sentences import split_sentences

TEXT_SUFFIXES = {".txt", ".text", ".raw", ".md", ".rst", ".tokens"}
JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
PARQUET_SUFFIXES = {".parquet"}
# `= Title =` and `= = Section = =` lines. Written so that no run of spaces or `=` is tried from each of its
# characters (the title ends at a non-space; the middle of a sub-heading is one greedy run): linear on a
# line of any length, where `(=\s*){2,}.*?(\s*=){2,}` took hours on a few kilobytes of `= = = …`.
_HEADING = re.compile(r"^\s*+=\s+([^=](?:.*?\S)?)\s++=\s*+$")
_SUBHEADING = re.compile(r"^\s*=\s*=.*=\s*=\s*$")
_CONTROL_ONLY = re.compile(r"^[\s\x00-\x1f\x7f-\x9f\u200b\ufeff]*$")


@dataclass
class Document:
    """One document: an id that says where it came from, and its paragraphs (or sentences) in order."""

    id: str
    paragraphs: list[str] = field(default_factory=list)
    sentences: bool = False  # each paragraph is already one sentence (sentence-per-line input)


@dataclass
class CorpusStats:
    """Counts gathered while reading, reported in the stage summaries."""

    documents: int = 0
    paragraphs: int = 0
    characters: int = 0
    replaced_lines: int = 0
    duplicate_lines: int = 0
    files: int = 0
    layouts: dict[str, str] = field(default_factory=dict)  # source → what was detected in it


# --------------------------------------------------------------------------------------------
# Resolving sources
# --------------------------------------------------------------------------------------------


def resolve_inputs(inputs: Iterable[str]) -> list[str]:
    """Expand globs and directories into a sorted, de-duplicated list of sources.

    Hub names (``hf:``), built-ins (``builtin:``) and ``load_from_disk`` directories stay as they
    are. A path that exists is read as named, never as a pattern (``bertpre/readers/input_paths.py``).
    A path that does not exist, a glob that matches nothing, a directory without text files, a named
    pipe, socket or device, or a symbolic link to nothing is an error naming it.
    """
    resolved: list[str] = []
    for spec in inputs:
        if spec.startswith(("hf:", "builtin:")):
            if spec.startswith("builtin:") and spec != BUILTIN_PYTHON_DOCS:
                raise BertpreError(f"{spec}: unknown built-in corpus (available: {BUILTIN_PYTHON_DOCS})")
            resolved.append(spec)
            continue
        matches = expand_name(spec)
        if matches is not None:
            resolved.extend(matches)
            continue
        refuse_unreadable_kind(spec)
        if os.path.isdir(spec):
            resolved.extend(_files_in_directory(spec))
        elif os.path.isfile(spec):
            resolved.append(spec)
        else:
            raise BertpreError(f"{spec}: no such file or directory")
    if not resolved:
        raise BertpreError("no inputs given: name text files, directories, globs or builtin:python-docs")
    return _distinct_files(resolved)


def _distinct_files(paths: list[str]) -> list[str]:
    """Each file once, however often it was named: a glob through a symlink back up the tree (or the same
    file named twice) would otherwise read one text many times over."""
    seen: set[str] = set()
    distinct = []
    for path in paths:
        key = path if path.startswith(("hf:", "builtin:")) else os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            distinct.append(path)
    return distinct


def _is_saved_dataset(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, name))
               for name in ("dataset_info.json", "state.json", "dataset_dict.json"))


def _files_in_directory(directory: str) -> list[str]:
    if _is_saved_dataset(directory):
        return [directory]
    known = TEXT_SUFFIXES | JSONL_SUFFIXES | PARQUET_SUFFIXES
    files = sorted(files_below(directory, lambda name: _base_suffix(name) in known))
    if not files:
        raise BertpreError(f"{directory}: directory has no text files "
                           f"(looked for {', '.join(sorted(known))}, optionally .gz)")
    return files


def _base_suffix(name: str) -> str:
    if name.endswith(".gz"):
        name = name[:-3]
    return os.path.splitext(name)[1].lower()


# --------------------------------------------------------------------------------------------
# Reading documents
# --------------------------------------------------------------------------------------------


def read_documents(config: CorpusConfig, sources: list[str] | None = None,
                   stats: CorpusStats | None = None) -> Iterator[Document]:
    """Stream the documents of ``config.inputs`` (or of already resolved ``sources``), cleaned.

    Lines are stripped of line-ending variants; empty and control-character-only lines are
    dropped; with ``config.deduplicate`` exact-duplicate lines are dropped. ``stats`` is filled in
    as a side effect for summaries (see :func:`warn_about_replaced_bytes`).
    """
    stats = stats if stats is not None else CorpusStats()
    sources = sources if sources is not None else resolve_inputs(config.inputs)
    seen: set[bytes] | None = set() if config.deduplicate else None
    emitted = 0
    for source in sources:
        stats.files += 1
        for document in _read_source(source, config, stats):
            document.paragraphs = _clean_paragraphs(document.paragraphs, seen, stats)
            if not document.paragraphs:
                continue
            stats.documents += 1
            stats.paragraphs += len(document.paragraphs)
            stats.characters += sum(len(p) for p in document.paragraphs)
            yield document
            emitted += 1
            if config.max_documents is not None and emitted >= config.max_documents:
                return


def warn_about_replaced_bytes(stats: CorpusStats) -> None:
    """Say how many lines had undecodable bytes replaced (``errors: replace``)."""
    if stats.replaced_lines:
        warnings.warn(f"{stats.replaced_lines} lines had undecodable bytes, replaced with U+FFFD "
                      "(errors=replace)", stacklevel=2)


def _clean_paragraphs(paragraphs: list[str], seen: set[bytes] | None, stats: CorpusStats) -> list[str]:
    kept = []
    for paragraph in paragraphs:
        paragraph = paragraph.strip()
        if _CONTROL_ONLY.match(paragraph):
            continue
        if seen is not None:
            digest = hashlib.blake2b(paragraph.encode("utf-8"), digest_size=8).digest()
            if digest in seen:
                stats.duplicate_lines += 1
                continue
            seen.add(digest)
        kept.append(paragraph)
    return kept


def _read_source(source: str, config: CorpusConfig, stats: CorpusStats) -> Iterator[Document]:
    if source == BUILTIN_PYTHON_DOCS:
        stats.layouts[source] = "documentation prose: a document per standard-library module"
        yield from python_docs_corpus()
    elif source.startswith("hf:"):
        yield from _read_hub_dataset(source, config, stats)
    elif os.path.isdir(source):
        yield from _read_dataset_records(_load_saved_dataset(source), source, config, stats)
    else:
        suffix = _base_suffix(source)
        if suffix in JSONL_SUFFIXES:
            yield from _read_jsonl(source, config, stats)
        elif suffix in PARQUET_SUFFIXES:
            yield from _read_parquet(source, config, stats)
        else:
            yield from _read_text_file(source, config, stats)


@dataclass(frozen=True)
class TextLayout:
    """How a plain-text file is laid out: what one line holds, and what separates documents."""

    lines: str  # "sentence", "paragraph" or "wrapped" (hard-wrapped prose: a paragraph is a blank-line block)
    documents: str  # "heading" (`= Title =` lines), "blank_line" or "file"

    def describe(self) -> str:
        """One line for the prepare summary."""
        lines = {"sentence": "one sentence per line", "paragraph": "one paragraph per line",
                 "wrapped": "hard-wrapped prose, lines joined into paragraphs at blank lines"}[self.lines]
        documents = {"heading": "a document per `= Title =` heading", "blank_line": "documents separated by blank lines",
                     "file": "one document per file"}[self.documents]
        return f"{lines}; {documents}"


_TERMINAL = re.compile(r"[.!?…:;][\"'”’)\]]*$")
_PROBE_LINES = 5000


def detect_text_layout(path: str, errors: str = "strict", probe_lines: int = _PROBE_LINES) -> TextLayout:
    """Look at the first lines of a text file and tell its layout.

    Hard-wrapped prose (books, speeches): most lines that continue into the next line end without
    closing punctuation, and lines are short. Otherwise a line is a sentence when nearly every
    line holds one sentence, else a paragraph. Documents follow `= Title =` headings when there
    are any; blank lines separate documents when they separate several multi-line blocks of whole
    sentences or paragraphs (the original BERT format); otherwise the file is one document.
    """
    lines = []
    for index, line in enumerate(decoded_lines(path, "replace" if errors == "replace" else "strict")):
        if index >= probe_lines:
            break
        lines.append(line.strip())
    has_headings = any(_HEADING.match(line) and not _SUBHEADING.match(line) for line in lines)
    blocks = _blocks(line for line in lines if not _HEADING.match(line) and not _SUBHEADING.match(line))
    line_kind = _line_kind(blocks)
    if has_headings:
        documents = "heading"
    elif line_kind != "wrapped" and sum(len(block) >= 2 for block in blocks) >= 3:
        documents = "blank_line"
    else:
        documents = "file"
    return TextLayout(line_kind, documents)


def _blocks(lines: Iterable[str]) -> list[list[str]]:
    blocks: list[list[str]] = [[]]
    for line in lines:
        if line:
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    return [block for block in blocks if block]


def _line_kind(blocks: list[list[str]]) -> str:
    continuing = [line for block in blocks for line in block[:-1]]
    lengths = sorted(len(line) for block in blocks for line in block)
    if len(continuing) >= 20 and lengths[int(0.9 * (len(lengths) - 1))] <= 150:
        open_ended = sum(not _TERMINAL.search(line) for line in continuing) / len(continuing)
        if open_ended >= 0.5:
            return "wrapped"
    content = [line for block in blocks for line in block]
    if not content:
        return "paragraph"
    several = sum(len(split_sentences(line)) > 1 for line in content) / len(content)
    return "sentence" if several <= 0.1 else "paragraph"


def text_layout(path: str, config: CorpusConfig) -> TextLayout:
    """The layout a text file is read with: detected, then whatever the config fixes."""
    detected = detect_text_layout(path, config.errors)
    lines = detected.lines if config.line_format == "auto" else config.line_format
    documents = detected.documents if config.document_boundary == "auto" else config.document_boundary
    return TextLayout(lines, documents)


def _read_text_file(path: str, config: CorpusConfig, stats: CorpusStats) -> Iterator[Document]:
    layout = text_layout(path, config)
    stats.layouts[path] = layout.describe()
    yield from _documents_of_lines(path, decoded_lines(path, config.errors, stats), layout)


def _documents_of_lines(path: str, lines: Iterable[str], layout: TextLayout) -> Iterator[Document]:
    """Cut lines into documents of paragraphs (or sentences) as ``layout`` says."""
    title: str | None = None
    paragraphs: list[str] = []
    block: list[str] = []
    index = 0

    def document_id() -> str:
        return {"heading": f"{path}#{title}", "blank_line": f"{path}#{index}", "file": path}[layout.documents]

    for line in lines:
        heading = _HEADING.match(line) if layout.documents == "heading" else None
        if heading and not _SUBHEADING.match(line):
            paragraphs += _block_paragraphs(block, layout)
            if paragraphs:
                yield Document(document_id(), paragraphs, layout.lines == "sentence")
            title, paragraphs, block = heading.group(1).strip(), [], []
        elif layout.documents == "heading" and _SUBHEADING.match(line):
            continue
        elif line.strip():
            block.append(line.strip())
        else:
            paragraphs += _block_paragraphs(block, layout)
            block = []
            if layout.documents == "blank_line" and paragraphs:
                yield Document(document_id(), paragraphs, layout.lines == "sentence")
                paragraphs, index = [], index + 1
    paragraphs += _block_paragraphs(block, layout)
    if paragraphs:
        yield Document(document_id(), paragraphs, layout.lines == "sentence")


def _block_paragraphs(block: list[str], layout: TextLayout) -> list[str]:
    if not block:
        return []
    return [" ".join(block)] if layout.lines == "wrapped" else list(block)


def _record_text(record: object, path: str, where: str, column: str) -> str:
    if not isinstance(record, dict):
        raise BertpreError(f"{path}: {where} is not a JSON object")
    if column not in record:
        keys = ", ".join(map(str, record)) or "none"
        raise BertpreError(f"{path}: {where} has no '{column}' column (columns: {keys}); "
                           "set --text-column")
    value = record[column]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BertpreError(f"{path}: {where} column '{column}' holds {type(value).__name__}, not text")
    return value


_TEXT_LINE_BREAK = re.compile(r"\r+\n?|[\n\x85\u2028\u2029]")  # as bertpre/readers/lines.py reads a text file


def _paragraphs_of(text: str) -> list[str]:
    return [line for line in _TEXT_LINE_BREAK.split(text) if line.strip()]


def _read_jsonl(path: str, config: CorpusConfig, stats: CorpusStats) -> Iterator[Document]:
    yield from _documents_of_rows(path, _jsonl_records(path, config, stats), None, config, stats)


def _jsonl_records(path: str, config: CorpusConfig, stats: CorpusStats) -> Iterator[tuple[str, dict]]:
    for number, line in enumerate(decoded_lines(path, config.errors, stats, endings="jsonl"), start=1):
        if not line.strip():
            continue
        yield f"line {number}", parse_json_line(line, path, number)


def parse_json_line(line: str, path: str, number: int) -> dict[str, Any]:
    """One JSONL line as a JSON object; anything else is refused naming the file and line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise BertpreError(f"{path}: line {number} is not valid JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise BertpreError(f"{path}: line {number} is not a JSON object")
    return record


def refuse_gzipped_parquet(path: str) -> None:
    """Parquet is read by seeking inside the file, which a gzip stream cannot do; it needs no gzip anyway."""
    if path.endswith(".gz"):
        raise BertpreError(f"{path}: a gzipped Parquet file; Parquet compresses its own columns: gunzip it and "
                           "pass the .parquet")


def _read_parquet(path: str, config: CorpusConfig, stats: CorpusStats) -> Iterator[Document]:
    import pyarrow.parquet as pq

    refuse_gzipped_parquet(path)
    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a corrupt file
        raise BertpreError(f"{path}: not a readable Parquet file ({error})") from None
    names = parquet.schema_arrow.names
    if config.text_column not in names:
        raise BertpreError(f"{path}: no '{config.text_column}' column (columns: {', '.join(names)}); "
                           "set --text-column")
    columns = [config.text_column] + [c for c in _document_column_candidates(config) if c in names]

    def records() -> Iterator[tuple[str, dict]]:
        row = 0
        for batch in parquet.iter_batches(columns=list(dict.fromkeys(columns)), batch_size=1024):
            for record in batch.to_pylist():
                yield f"row {row}", record
                row += 1

    yield from _documents_of_rows(path, records(), names, config, stats)


# ---- rows: each a document, or sentences grouped into documents ------------------------------

_PROBE_ROWS = 1000
ROWS_PER_RUN = 1000
"""Sentences per document when rows that are sentences carry no document boundary at all."""
_DOCUMENT_COLUMNS = ("document_id", "doc_id", "book_id", "article_id", "title")


def _document_column_candidates(config: CorpusConfig) -> tuple[str, ...]:
    return (config.document_column,) if config.document_column else _DOCUMENT_COLUMNS


def _documents_of_rows(name: str, records: Iterator[tuple[str, dict]], columns: list[str] | None,
                       config: CorpusConfig, stats: CorpusStats) -> Iterator[Document]:
    """Documents from table rows: a row each, or (rows that are sentences) grouped into documents."""
    probe = list(itertools.islice(records, _PROBE_ROWS))
    rows = ((where.split()[-1], _record_text(record, name, where, config.text_column), record)
            for where, record in itertools.chain(probe, records))
    columns = columns if columns is not None else list(probe[0][1]) if probe else []
    if config.document_column and config.document_column not in columns:
        raise BertpreError(f"{name}: no document column '{config.document_column}' (columns: "
                           f"{', '.join(map(str, columns))}); set --document-column")
    if not _rows_are_sentences(probe, name, config):
        stats.layouts[name] = "a document per row"
        for number, text, _ in rows:
            yield Document(f"{name}:{number}", _paragraphs_of(text))
        return
    column = next((c for c in _document_column_candidates(config) if c in columns), None)
    if column is not None:
        stats.layouts[name] = f"a sentence per row, grouped into documents by the '{column}' column"
        yield from _grouped_rows(name, rows, lambda record: record.get(column))
    elif any(not str(record.get(config.text_column) or "").strip() for _, record in probe):
        stats.layouts[name] = "a sentence per row, grouped into documents at empty rows"
        yield from _grouped_rows(name, rows, None)
    else:
        stats.layouts[name] = (f"a sentence per row without document boundaries (no document column, no empty "
                               f"rows): grouped in runs of {ROWS_PER_RUN:,} rows")
        yield from _grouped_rows(name, rows, None, run=ROWS_PER_RUN)


def _rows_are_sentences(probe: list[tuple[str, dict]], name: str, config: CorpusConfig) -> bool:
    if config.rows != "auto":
        return config.rows == "sentences"
    texts = [_record_text(record, name, where, config.text_column).strip() for where, record in probe]
    texts = [text for text in texts if text]
    if len(texts) < 20:
        return False
    one_sentence = sum("\n" not in text and len(split_sentences(text)) == 1 for text in texts)
    return one_sentence / len(texts) >= 0.9


def _grouped_rows(name: str, rows: Iterable[tuple[str, str, dict]], key: Any = None,
                  run: int | None = None) -> Iterator[Document]:
    """Consecutive sentence rows as documents: a new one where ``key(record)`` changes, at an empty
    row, or every ``run`` rows."""
    sentences: list[str] = []
    first, current = "", None
    for number, text, record in rows:
        text = text.strip()
        value = key(record) if key is not None else None
        boundary = not text or (key is not None and value != current) or (run is not None and len(sentences) >= run)
        if boundary and sentences:
            yield Document(f"{name}:{first}", sentences, sentences=True)
            sentences = []
        current = value
        if text:
            first = first if sentences else number
            sentences.append(text)
    if sentences:
        yield Document(f"{name}:{first}", sentences, sentences=True)


def _load_saved_dataset(path: str):  # noqa: ANN202 - datasets is imported lazily
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(path)
    except Exception as error:  # datasets raises several types for a partial or damaged directory
        reason = (str(error).splitlines() or [type(error).__name__])[0][:100]
        raise BertpreError(f"{path}: not a complete saved dataset ({reason}); copy it again or save it again "
                           "with save_to_disk") from None
    if isinstance(dataset, DatasetDict):
        split = "train" if "train" in dataset else next(iter(dataset))
        dataset = dataset[split]
    return dataset


def load_hub_dataset(spec: str, streaming: bool):  # noqa: ANN201 - a datasets (Iterable)Dataset
    """``hf:NAME[:CONFIG][@SPLIT]`` (split ``train`` by default) from the hub or its local cache."""
    from datasets import load_dataset

    name, _, split = spec[3:].partition("@")
    name, _, config_name = name.partition(":")
    try:
        return load_dataset(name, config_name or None, split=split or "train", streaming=streaming)
    except Exception as error:  # the hub client raises many types; the user needs the one line
        raise BertpreError(f"{spec}: could not load the dataset ({type(error).__name__}: "
                           f"{str(error).splitlines()[0] if str(error) else ''})") from None


def _read_hub_dataset(spec: str, config: CorpusConfig, stats: CorpusStats) -> Iterator[Document]:
    yield from _read_dataset_records(load_hub_dataset(spec, streaming=True), spec, config, stats)


def _read_dataset_records(dataset: Iterable[dict], name: str, config: CorpusConfig,
                          stats: CorpusStats) -> Iterator[Document]:
    features = getattr(dataset, "column_names", None)
    if features is not None and config.text_column not in features:
        raise BertpreError(f"{name}: no '{config.text_column}' column (columns: {', '.join(features)}); "
                           "set --text-column")
    records = ((f"record {index}", record) for index, record in enumerate(dataset))
    yield from _documents_of_rows(name, records, list(features) if features is not None else None, config, stats)


# --------------------------------------------------------------------------------------------
# The built-in corpus: documentation strings of the Python standard library
# --------------------------------------------------------------------------------------------

_CODE_HINTS = re.compile(r"(>>>|\.\.\. |::\s*$|^\s*[-=~^*+]{3,}\s*$|:param|:type|:return|:rtype|"
                         r"\bdef |\bclass |\w+\(.*\)\s*->|[{}\[\]<>|\\]{2,}|^\s*[-*+] |^\s*\d+\.\s)")


def python_docs_corpus(include_site_packages: bool = False) -> Iterator[Document]:
    """Documentation prose of the Python standard library, one document per module.

    Module, class and function docstrings are parsed with ``ast`` (nothing is imported or run)
    and filtered to prose paragraphs: no doctest or code blocks, no parameter tables or lists.
    Deterministic for a given Python version: modules are visited in sorted order.
    """
    for document_id, paragraphs in _harvest_python_docs(include_site_packages):
        yield Document(id=document_id, paragraphs=list(paragraphs))


@functools.lru_cache(maxsize=2)
def _harvest_python_docs(include_site_packages: bool) -> tuple[tuple[str, tuple[str, ...]], ...]:
    # Cached: stages read the corpus more than once and parsing the stdlib takes seconds; ~1 MB.
    roots = [Path(sysconfig.get_paths()["stdlib"])]
    if include_site_packages:
        roots.append(Path(sysconfig.get_paths()["purelib"]))
    harvested = []
    for root in roots:
        for path in _python_modules(root, skip_site_packages=not include_site_packages):
            paragraphs = tuple(_prose_paragraphs(path))
            if paragraphs:
                module = ".".join(path.relative_to(root).with_suffix("").parts)
                harvested.append((f"{BUILTIN_PYTHON_DOCS}:{module}", paragraphs))
    return tuple(harvested)


def _python_modules(root: Path, skip_site_packages: bool) -> list[Path]:
    skip = {"test", "tests", "idle_test", "__pycache__", "lib2to3", "turtledemo"}
    if skip_site_packages:
        skip |= {"site-packages", "dist-packages"}
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in skip and not d.startswith("."))
        found.extend(Path(directory) / f for f in files if f.endswith(".py"))
    return sorted(found)


def _prose_paragraphs(path: Path) -> Iterator[str]:
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, OSError):
        return
    nodes = [tree] + [n for n in ast.walk(tree)
                      if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    for node in nodes:
        docstring = ast.get_docstring(node, clean=True)
        if docstring:
            for block in re.split(r"\n\s*\n", docstring):
                if _is_prose(block):
                    yield " ".join(line.strip() for line in block.splitlines())


def _is_prose(block: str) -> bool:
    lines = block.splitlines()
    if any(line.startswith((" ", "\t")) for line in lines):  # indented: code or a table
        return False
    if _CODE_HINTS.search(block) or any(_CODE_HINTS.search(line) for line in lines):
        return False
    words = block.split()
    if len(words) < 8:
        return False
    letters = sum(ch.isalpha() or ch.isspace() for ch in block)
    if letters / len(block) < 0.85:
        return False
    return block.rstrip()[-1:] in ".!?:)\"'"


def iter_paragraph_batches(documents: Iterable[Document], batch_size: int = 1000) -> Iterator[list[str]]:
    """Batches of paragraph strings, the shape `tokenizers` trains from."""
    batch: list[str] = []
    for document in documents:
        batch.extend(document.paragraphs)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


__all__ = ["Document", "CorpusStats", "resolve_inputs", "read_documents", "decoded_lines",
           "python_docs_corpus", "iter_paragraph_batches", "BUILTIN_PYTHON_DOCS"]
