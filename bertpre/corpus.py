"""Reading raw corpora into documents: text files, JSONL, Parquet, Hugging Face datasets, built-ins.

Everything streams: a corpus is an iterator of :class:`Document` (an id and its paragraphs), never
a list in memory. Problems with the input (a missing path, a binary file, undecodable bytes, a
missing column) raise :class:`~bertpre.config.BertpreError` with one line naming the file.
"""

from __future__ import annotations

import ast
import functools
import glob
import gzip
import hashlib
import json
import os
import re
import sysconfig
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Iterator

from bertpre.configs import BUILTIN_PYTHON_DOCS, CorpusConfig
from bertpre.errors import BertpreError

TEXT_SUFFIXES = {".txt", ".text", ".raw", ".md", ".rst", ".tokens"}
JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
PARQUET_SUFFIXES = {".parquet"}
_HEADING = re.compile(r"^\s*=\s+([^=].*?)\s+=\s*$")
_SUBHEADING = re.compile(r"^\s*(=\s*){2,}.*?(\s*=){2,}\s*$")
_CONTROL_ONLY = re.compile(r"^[\s\x00-\x1f\x7f-\x9f\u200b\ufeff]*$")


@dataclass
class Document:
    """One document: an id that says where it came from, and its paragraphs (or sentences) in order."""

    id: str
    paragraphs: list[str] = field(default_factory=list)


@dataclass
class CorpusStats:
    """Counts gathered while reading, reported in the stage summaries."""

    documents: int = 0
    paragraphs: int = 0
    characters: int = 0
    replaced_lines: int = 0
    duplicate_lines: int = 0
    files: int = 0


# --------------------------------------------------------------------------------------------
# Resolving sources
# --------------------------------------------------------------------------------------------


def resolve_inputs(inputs: Iterable[str]) -> list[str]:
    """Expand globs and directories into a sorted, de-duplicated list of sources.

    Hub names (``hf:``), built-ins (``builtin:``) and ``load_from_disk`` directories stay as they
    are. A path that does not exist, a glob that matches nothing or a directory without text files
    is an error naming it.
    """
    resolved: list[str] = []
    for spec in inputs:
        if spec.startswith(("hf:", "builtin:")):
            if spec.startswith("builtin:") and spec != BUILTIN_PYTHON_DOCS:
                raise BertpreError(f"{spec}: unknown built-in corpus (available: {BUILTIN_PYTHON_DOCS})")
            resolved.append(spec)
        elif any(ch in spec for ch in "*?["):
            matches = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
            if not matches:
                raise BertpreError(f"{spec}: the pattern matches no file")
            resolved.extend(matches)
        elif os.path.isdir(spec):
            resolved.extend(_files_in_directory(spec))
        elif os.path.isfile(spec):
            resolved.append(spec)
        else:
            raise BertpreError(f"{spec}: no such file or directory")
    if not resolved:
        raise BertpreError("no inputs given: name text files, directories, globs or builtin:python-docs")
    return list(dict.fromkeys(resolved))


def _is_saved_dataset(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, name))
               for name in ("dataset_info.json", "state.json", "dataset_dict.json"))


def _files_in_directory(directory: str) -> list[str]:
    if _is_saved_dataset(directory):
        return [directory]
    known = TEXT_SUFFIXES | JSONL_SUFFIXES | PARQUET_SUFFIXES
    files = sorted(
        str(p) for p in Path(directory).rglob("*")
        if p.is_file() and not p.name.startswith(".") and _base_suffix(p.name) in known
    )
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
        yield from python_docs_corpus()
    elif source.startswith("hf:"):
        yield from _read_hub_dataset(source, config.text_column)
    elif os.path.isdir(source):
        yield from _read_dataset_records(_load_saved_dataset(source), source, config.text_column)
    else:
        suffix = _base_suffix(source)
        if suffix in JSONL_SUFFIXES:
            yield from _read_jsonl(source, config, stats)
        elif suffix in PARQUET_SUFFIXES:
            yield from _read_parquet(source, config.text_column)
        else:
            yield from _read_text_file(source, config, stats)


def _open_binary(path: str) -> IO[bytes]:
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def decoded_lines(path: str, errors: str, stats: CorpusStats | None = None) -> Iterator[str]:
    """Yield a file's lines as text without line endings, checking it is text (not binary, UTF-8).

    With ``errors="strict"`` an undecodable line stops with the file and byte offset; with
    ``"replace"`` it is decoded with U+FFFD and counted in ``stats.replaced_lines``.
    """
    with _open_binary(path) as handle:
        offset = 0
        first = True
        for raw in _checked_gzip_lines(handle, path):
            if first:
                if b"\x00" in raw[:8192]:
                    raise BertpreError(f"{path}: looks like a binary file (NUL bytes), not text")
                if raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                    offset += 3
                first = False
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                if errors != "replace":
                    raise BertpreError(
                        f"{path}: byte offset {offset + error.start} is not valid UTF-8 "
                        "(convert the file to UTF-8, or pass --errors replace)") from None
                line = raw.decode("utf-8", errors="replace")
                if stats is not None:
                    stats.replaced_lines += 1
            offset += len(raw)
            yield line.rstrip("\r\n").replace("\r", "")


def _checked_gzip_lines(handle: IO[bytes], path: str) -> Iterator[bytes]:
    try:
        yield from handle
    except (OSError, EOFError) as error:  # gzip.BadGzipFile and truncated streams
        raise BertpreError(f"{path}: not a valid gzip file ({error})") from None


def _read_text_file(path: str, config: CorpusConfig, stats: CorpusStats) -> Iterator[Document]:
    lines = decoded_lines(path, config.errors, stats)
    mode = config.document_boundary
    if mode == "auto":
        mode = "heading" if _has_headings(path, config.errors) else "blank_line"
    if mode == "file":
        yield Document(id=path, paragraphs=list(_join_wrapped_paragraphs(lines)))
    elif mode == "heading":
        yield from _split_at_headings(path, lines)
    else:
        yield from _split_at_blank_lines(path, lines)


def _has_headings(path: str, errors: str, probe_lines: int = 2000) -> bool:
    for i, line in enumerate(decoded_lines(path, "replace" if errors == "replace" else "strict")):
        if _HEADING.match(line) and not _SUBHEADING.match(line):
            return True
        if i >= probe_lines:
            break
    return False


def _split_at_blank_lines(path: str, lines: Iterable[str]) -> Iterator[Document]:
    paragraphs: list[str] = []
    index = 0
    for line in lines:
        if line.strip():
            paragraphs.append(line)
        elif paragraphs:
            yield Document(id=f"{path}#{index}", paragraphs=paragraphs)
            paragraphs, index = [], index + 1
    if paragraphs:
        yield Document(id=f"{path}#{index}", paragraphs=paragraphs)


def _split_at_headings(path: str, lines: Iterable[str]) -> Iterator[Document]:
    title, paragraphs = None, []
    for line in lines:
        heading = _HEADING.match(line)
        if heading and not _SUBHEADING.match(line):
            if paragraphs:
                yield Document(id=f"{path}#{title}", paragraphs=paragraphs)
            title, paragraphs = heading.group(1).strip(), []
        elif line.strip() and not _SUBHEADING.match(line):
            paragraphs.append(line)
    if paragraphs:
        yield Document(id=f"{path}#{title}", paragraphs=paragraphs)


def _join_wrapped_paragraphs(lines: Iterable[str]) -> Iterator[str]:
    """Join hard-wrapped lines (books, speeches) into paragraphs at blank lines."""
    buffer: list[str] = []
    for line in lines:
        if line.strip():
            buffer.append(line.strip())
        elif buffer:
            yield " ".join(buffer)
            buffer = []
    if buffer:
        yield " ".join(buffer)


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


def _paragraphs_of(text: str) -> list[str]:
    return [line for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if line.strip()]


def _read_jsonl(path: str, config: CorpusConfig, stats: CorpusStats) -> Iterator[Document]:
    for number, line in enumerate(decoded_lines(path, config.errors, stats), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise BertpreError(f"{path}: line {number} is not valid JSON ({error.msg})") from None
        text = _record_text(record, path, f"line {number}", config.text_column)
        yield Document(id=f"{path}:{number}", paragraphs=_paragraphs_of(text))


def _read_parquet(path: str, column: str) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a corrupt file
        raise BertpreError(f"{path}: not a readable Parquet file ({error})") from None
    names = parquet.schema_arrow.names
    if column not in names:
        raise BertpreError(f"{path}: no '{column}' column (columns: {', '.join(names)}); set --text-column")
    row = 0
    for batch in parquet.iter_batches(columns=[column], batch_size=1024):
        for text in batch.column(0).to_pylist():
            yield Document(id=f"{path}:{row}", paragraphs=_paragraphs_of(text or ""))
            row += 1


def _load_saved_dataset(path: str):  # noqa: ANN202 - datasets is imported lazily
    from datasets import DatasetDict, load_from_disk

    dataset = load_from_disk(path)
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


def _read_hub_dataset(spec: str, column: str) -> Iterator[Document]:
    yield from _read_dataset_records(load_hub_dataset(spec, streaming=True), spec, column)


def _read_dataset_records(dataset: Iterable[dict], name: str, column: str) -> Iterator[Document]:
    features = getattr(dataset, "column_names", None)
    if features is not None and column not in features:
        raise BertpreError(f"{name}: no '{column}' column (columns: {', '.join(features)}); set --text-column")
    for index, record in enumerate(dataset):
        text = _record_text(record, name, f"record {index}", column)
        yield Document(id=f"{name}:{index}", paragraphs=_paragraphs_of(text))


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
