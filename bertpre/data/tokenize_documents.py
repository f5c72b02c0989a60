"""Pass 1 of `bertpre prepare`: documents → the token ids of their sentences, one store fragment per task.

A task is one input file, read by the worker itself, or a batch of documents the main process read
(inputs that must be read in one place: de-duplication across files, ``--max-documents``, directories
of saved datasets, hub datasets, built-ins, and files too large for one task). Either way the worker
splits paragraphs into sentences, tokenizes them with `tokenizers` in large batches (no transformers
wrapper: the ids come straight from Rust) and writes them to a fragment of the token store
(``bertpre/data/token_store.py``). Fragments are joined in task order, so the documents keep the
order of a single reader whatever the number of workers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

import numpy as np

from bertpre.core.configs import PrepareConfig
from bertpre.core.seeding import stable_hash64
from bertpre.data.token_store import FragmentWriter
from bertpre.data.decontamination import ContaminationFilter
from bertpre.readers.corpus import CorpusStats, Document, read_documents
from bertpre.readers.sentences import split_sentences

CHARACTERS_PER_BATCH = 1_000_000
"""Text tokenized per `encode_batch` call: large enough that the call dominates, small enough that a worker's
memory stays a few tens of MB whatever the file size."""
CHARACTERS_PER_TASK = 500_000
"""Text the main process hands out per task when it reads the documents itself."""
LARGEST_FILE_TASK = 256 * 2**20
"""Files up to this size (on disk), and up to half a worker's share of the corpus, are read by a worker, each as
one task; larger ones by the main process, cut into tasks, so that one file never keeps the other workers idle."""


@dataclass(frozen=True)
class FileTask:
    """Read, split and tokenize one input file into ``fragment``."""

    source: str
    fragment: str


@dataclass(frozen=True)
class DocumentsTask:
    """Split and tokenize documents the main process read into ``fragment``: (paragraphs, already sentences),
    with what reading them counted."""

    documents: list[tuple[list[str], bool]]
    fragment: str
    replaced_lines: int = 0
    duplicate_lines: int = 0
    layouts: dict[str, str] = field(default_factory=dict)


@dataclass
class TaskReport:
    """What a task wrote and what its reading counted (for the summary)."""

    fragment: str
    read: int  # documents read
    documents: int  # of them written (documents without a single token are dropped)
    replaced_lines: int = 0
    duplicate_lines: int = 0
    layouts: dict[str, str] = field(default_factory=dict)
    contamination: dict[str, Any] = field(default_factory=dict)  # ContaminationFilter.new_tally(), filled


@dataclass(frozen=True)
class TokenizeSettings:
    """What every worker is given once: the config (as a dict, to pickle), the tokenizer as JSON, the id type."""

    config: dict[str, Any]
    tokenizer_json: str
    id_dtype: str
    contamination: Optional[ContaminationFilter] = None  # --decontaminate's index: documents it matches are dropped


_WORKER: dict[str, Any] = {}


def start_worker(settings: TokenizeSettings) -> None:
    """Set a worker up: its config and its own Rust tokenizer, single-threaded (one worker is one core)."""
    from tokenizers import Tokenizer

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    tokenizer = Tokenizer.from_str(settings.tokenizer_json)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    _WORKER.update(config=PrepareConfig(**settings.config), tokenizer=tokenizer, id_dtype=np.dtype(settings.id_dtype),
                   contamination=settings.contamination or ContaminationFilter())


def tokenize_task(task: Union[FileTask, DocumentsTask]) -> TaskReport:
    """Run one task in a worker set up by :func:`start_worker`."""
    stats = CorpusStats()
    if isinstance(task, FileTask):
        documents: Iterable[tuple[list[str], bool]] = (
            (document.paragraphs, document.sentences) for document in read_documents(_WORKER["config"], [task.source], stats))
    else:
        documents = task.documents
        stats = CorpusStats(documents=len(task.documents), replaced_lines=task.replaced_lines,
                            duplicate_lines=task.duplicate_lines, layouts=dict(task.layouts))
    contamination: ContaminationFilter = _WORKER["contamination"]
    tally = contamination.new_tally()
    documents = contamination.screened(documents, tally)  # on the documents' text, before anything is tokenized
    writer = FragmentWriter(Path(task.fragment), _WORKER["id_dtype"])
    try:
        for batch in _batches(documents, CHARACTERS_PER_BATCH):
            writer.append(*tokenize_batch(batch, _WORKER["tokenizer"], _WORKER["id_dtype"]))
    finally:
        writer.close()
    return TaskReport(task.fragment, stats.documents, writer.documents, stats.replaced_lines, stats.duplicate_lines,
                      dict(stats.layouts), tally)


def _batches(documents: Iterable[tuple[list[str], bool]], characters: int) -> Iterator[list[tuple[list[str], bool]]]:
    batch: list[tuple[list[str], bool]] = []
    size = 0
    for document in documents:
        batch.append(document)
        size += sum(map(len, document[0]))
        if size >= characters:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def tokenize_batch(documents: list[tuple[list[str], bool]], tokenizer, id_dtype: np.dtype  # noqa: ANN001
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Token ids of the documents' sentences, end to end; each kept sentence's length; each kept document's
    sentence count; each kept document's text key. Sentences without a token are dropped, then documents
    without a sentence."""
    sentences = [list(paragraphs) if given else [s for paragraph in paragraphs for s in split_sentences(paragraph)]
                 for paragraphs, given in documents]
    flat = list(chain.from_iterable(sentences))
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)  # fast: no character offsets
    ids = [encoding.ids for encoding in encode(flat, add_special_tokens=False)] if flat else []
    lengths = np.fromiter(map(len, ids), np.int64, len(ids))
    tokens = np.fromiter(chain.from_iterable(ids), id_dtype, int(lengths.sum()))
    owner = np.repeat(np.arange(len(documents)), [len(s) for s in sentences])
    kept = lengths > 0
    per_document = np.bincount(owner[kept], minlength=len(documents))
    has_text = per_document > 0
    keys = np.array([text_key(paragraphs) for (paragraphs, _), keep in zip(documents, has_text) if keep], np.int64)
    return tokens, lengths[kept], per_document[has_text], keys


def text_key(paragraphs: list[str]) -> int:
    """A hash of a document's text: where the file lies must not decide which split it lands in."""
    return stable_hash64("\n".join(paragraphs)) >> 1  # fits int64


def document_tasks(config: PrepareConfig, sources: list[str], workers: int,
                   fragments: Path) -> Iterator[Union[FileTask, DocumentsTask]]:
    """The tasks of pass 1, in document order. Files a worker can read whole become file tasks; the rest is
    read here and handed out in batches of documents."""
    numbers = iter(range(10**9))
    in_one_place = workers == 1 or config.deduplicate or config.max_documents is not None
    sizes = {source: _size_on_disk(source) for source in sources}
    largest = min(LARGEST_FILE_TASK, sum(size or 0 for size in sizes.values()) / (2 * workers))
    pending: list[str] = []
    for source in sources:
        if not in_one_place and sizes[source] is not None and sizes[source] <= largest:
            yield from _read_here(config, pending, fragments, numbers)
            pending = []
            yield FileTask(source, str(fragments / f"{next(numbers):09d}"))
        else:
            pending.append(source)
    yield from _read_here(config, pending, fragments, numbers)


def _size_on_disk(source: str) -> Optional[int]:
    """A file's size, a compressed one's as about what it holds; None for what is no file (hub, built-in, directory)."""
    if source.startswith(("hf:", "builtin:")) or not os.path.isfile(source):
        return None
    return os.path.getsize(source) * (4 if source.endswith(".gz") else 1)


def _read_here(config: PrepareConfig, sources: list[str], fragments: Path,
               numbers: Iterator[int]) -> Iterator[DocumentsTask]:
    if not sources:
        return
    stats = CorpusStats()
    documents: Iterator[Document] = read_documents(config, sources, stats)
    counted = CorpusStats()  # what the tasks handed out so far carry
    for batch in _batches(((d.paragraphs, d.sentences) for d in documents), CHARACTERS_PER_TASK):
        yield DocumentsTask(batch, str(fragments / f"{next(numbers):09d}"),
                            stats.replaced_lines - counted.replaced_lines, stats.duplicate_lines - counted.duplicate_lines,
                            {k: v for k, v in stats.layouts.items() if k not in counted.layouts})
        counted = CorpusStats(replaced_lines=stats.replaced_lines, duplicate_lines=stats.duplicate_lines,
                              layouts=dict(stats.layouts))


def add_report(stats: CorpusStats, report: TaskReport) -> None:
    """Count one task's documents and reading into ``stats`` (tasks come in input order, so do layouts)."""
    stats.documents += report.documents
    stats.replaced_lines += report.replaced_lines
    stats.duplicate_lines += report.duplicate_lines
    stats.layouts.update(report.layouts)
