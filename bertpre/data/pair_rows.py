"""Pass 3 of `bertpre prepare`: tokenized documents → next-sentence pairs (or MLM-only segments) as flat
arrays, one fragment per task.

A task is a run of consecutive documents of one split in one pass (``dupe_pass``). For each document
the pair algorithm (:func:`bertpre.data.pairs.document_pair_spans`) decides the pairs from sentence
lengths alone, with the document's own generator (seed, shard, pass, index in the split), so the pairs
do not depend on how documents are dealt to workers; the token ids are then cut from the store's
arrays. A fragment holds the pairs' ``[CLS] A [SEP] B [SEP]`` ids and their token types end to end
and, per pair, its length, the label and the two documents (``bertpre/data/pair_files.py`` writes them
as the split's Arrow files).

With ``--examples segments`` (:func:`segment_task`) a document is cut into ``[CLS] segment [SEP]`` rows by
:func:`bertpre.data.segments.document_segment_spans` instead, into fragments of the same columns: token
types all 0, the label :data:`NO_NEXT_SENTENCE_LABEL`, and the row's own document as ``b_document``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertpre.data.pairs import document_pair_spans, document_rng
from bertpre.data.segments import document_segment_spans
from bertpre.data.token_store import TokenStore

GROUP = 32
"""Documents per group: how many rows each group of 32 documents gave is reported, as `datasets.map` with
batches of 32 documents wrote them (``bertpre/data/pair_files.py`` lays the files out as it did)."""
VALUES, TYPES = "values.bin", "types.bin"  # per token: the ids, the token types
LENGTHS, LABELS, DOCUMENTS, B_DOCUMENTS = "lengths.bin", "labels.bin", "documents.bin", "b_documents.bin"
ROW_COLUMNS = {LENGTHS: np.int32, LABELS: np.int8, DOCUMENTS: np.int32, B_DOCUMENTS: np.int32}  # per pair
NO_NEXT_SENTENCE_LABEL = -100
"""The next-sentence label of every segment: none (-100 is the index cross-entropy ignores, so a segment
could never pass for IsNext or NotNext; `pretrain` refuses ``--objective mlm_nsp`` on segments anyway)."""


@dataclass(frozen=True)
class PairSettings:
    """What every worker is given once: where the documents are, the held-out documents, the pair options."""

    store: str
    id_dtype: str
    eval_documents: str  # a .npy file of the held-out documents' indices in the store, ascending
    max_seq_length: int
    short_seq_prob: float
    random_next_prob: float
    seed: int
    shard_index: int
    cls_id: int
    sep_id: int


@dataclass(frozen=True)
class PairTask:
    """Pairs of documents ``first`` … ``end - 1`` of ``split`` in pass ``dupe_pass``, into ``fragment``."""

    split: str
    dupe_pass: int
    first: int
    end: int
    fragment: str


@dataclass
class PairReport:
    """What a task wrote: pairs, their tokens (specials included), and pairs per group of documents."""

    fragment: str
    rows: int
    tokens: int
    group_rows: list[int]


class SplitDocuments:
    """The documents of one split as indices into the store: all but the held-out ones (train), or those (eval)."""

    def __init__(self, split: str, eval_documents: np.ndarray, store_documents: int) -> None:
        self.split = split
        self._eval = eval_documents
        self.count = len(eval_documents) if split == "eval" else store_documents - len(eval_documents)
        # train document k is store document k + (held-out documents before it)
        self._gaps = eval_documents - np.arange(len(eval_documents))
        self._eval_list, self._gaps_list = eval_documents.tolist(), self._gaps.tolist()  # for one at a time

    def store_index(self, indices: np.ndarray) -> np.ndarray:
        """The store's index of the split's documents ``indices``."""
        if self.split == "eval":
            return self._eval[indices]
        return indices + np.searchsorted(self._gaps, indices, side="right")

    def store_index_of(self, index: int) -> int:
        """The store's index of the split's document ``index`` (one: numpy's overhead would be most of it)."""
        if self.split == "eval":
            return self._eval_list[index]
        return index + bisect.bisect_right(self._gaps_list, index)


_WORKER: dict[str, Any] = {}


def start_worker(settings: PairSettings) -> None:
    """Set a worker up: the store opened, the held-out documents read."""
    close_worker()
    store = TokenStore(Path(settings.store), np.dtype(settings.id_dtype))
    eval_documents = np.load(settings.eval_documents)
    _WORKER.update(settings=settings, store=store, splits={
        split: SplitDocuments(split, eval_documents, store.document_count) for split in ("train", "eval")})


def close_worker() -> None:
    """Close what :func:`start_worker` opened (the one-worker run does this in the main process)."""
    if "store" in _WORKER:
        _WORKER["store"].close()
    _WORKER.clear()


def pair_task(task: PairTask) -> PairReport:
    """Run one task in a worker set up by :func:`start_worker`."""
    settings: PairSettings = _WORKER["settings"]
    store: TokenStore = _WORKER["store"]
    split: SplitDocuments = _WORKER["splits"][task.split]
    documents = _Documents(store, split, task.first, task.end)
    stream = settings.shard_index * 2 + (task.split == "eval")
    cls = np.array([settings.cls_id], store.id_dtype)
    sep = np.array([settings.sep_id], store.id_dtype)
    parts: list[np.ndarray] = []
    rows: dict[str, list[int]] = {name: [] for name in ROW_COLUMNS}
    segments: list[int] = []  # per pair: tokens of type 0 ([CLS] A [SEP]), then of type 1 (B [SEP])
    group_rows = [0] * -(-(task.end - task.first) // GROUP)
    for index in range(task.first, task.end):
        lengths, tokens = documents.own(index)
        rng = document_rng(settings.seed, task.dupe_pass, index, stream)
        spans = document_pair_spans(lengths, index, split.count, documents.lengths_of, settings.max_seq_length,
                                    settings.short_seq_prob, rng, settings.random_next_prob)
        for span in spans:
            b_tokens = (tokens[span.b_start:span.b_end] if span.b_document == index
                        else documents.segment_of(span.b_document, span.b_start, span.b_end))
            a_length, b_length = span.a_end - span.a_start, span.b_end - span.b_start
            parts += [cls, tokens[span.a_start:span.a_end], sep, b_tokens, sep]
            rows[LENGTHS].append(a_length + b_length + 3)
            segments += [a_length + 2, b_length + 1]
            # Label convention of BertForPreTraining: 0 = B is the continuation, 1 = B is random.
            rows[LABELS].append(int(span.is_random_next))
            rows[DOCUMENTS].append(index)
            rows[B_DOCUMENTS].append(span.b_document)
        group_rows[(index - task.first) // GROUP] += len(spans)
    values = np.concatenate(parts) if parts else np.zeros(0, store.id_dtype)
    types = np.repeat(np.tile(np.array([0, 1], np.uint8), len(segments) // 2), segments)
    return _write_fragment(task, values, types, rows, group_rows)


def segment_task(task: PairTask) -> PairReport:
    """Run one task of ``--examples segments`` in a worker set up by :func:`start_worker`: each document's
    ``[CLS] segment [SEP]`` rows, in order."""
    settings: PairSettings = _WORKER["settings"]
    store: TokenStore = _WORKER["store"]
    split: SplitDocuments = _WORKER["splits"][task.split]
    documents = _Documents(store, split, task.first, task.end)
    cls = np.array([settings.cls_id], store.id_dtype)
    sep = np.array([settings.sep_id], store.id_dtype)
    parts: list[np.ndarray] = []
    rows: dict[str, list[int]] = {name: [] for name in ROW_COLUMNS}
    group_rows = [0] * -(-(task.end - task.first) // GROUP)
    for index in range(task.first, task.end):
        lengths, tokens = documents.own(index)
        spans = document_segment_spans(lengths, settings.max_seq_length)
        for start, end in spans:
            parts += [cls, tokens[start:end], sep]
            rows[LENGTHS].append(end - start + 2)
        rows[LABELS] += [NO_NEXT_SENTENCE_LABEL] * len(spans)
        rows[DOCUMENTS] += [index] * len(spans)
        rows[B_DOCUMENTS] += [index] * len(spans)
        group_rows[(index - task.first) // GROUP] += len(spans)
    values = np.concatenate(parts) if parts else np.zeros(0, store.id_dtype)
    return _write_fragment(task, values, np.zeros(len(values), np.uint8), rows, group_rows)


def _write_fragment(task: PairTask, values: np.ndarray, types: np.ndarray, rows: dict[str, list[int]],
                    group_rows: list[int]) -> PairReport:
    """Write a task's rows into its fragment directory: token ids and types end to end, then each row column."""
    fragment = Path(task.fragment)
    fragment.mkdir(parents=True)
    values.tofile(fragment / VALUES)
    types.tofile(fragment / TYPES)
    for name, dtype in ROW_COLUMNS.items():
        np.asarray(rows[name], dtype).tofile(fragment / name)
    return PairReport(task.fragment, len(rows[LENGTHS]), len(values), group_rows)


class _Documents:
    """The documents a task pairs, and the other documents its random segments come from.

    A task's documents are read at once when they lie together in the store (the training split); the
    held-out ones, scattered through it, one by one.
    """

    def __init__(self, store: TokenStore, split: SplitDocuments, first: int, end: int) -> None:
        self._store, self._split = store, split
        self._first = first
        self._store_index = split.store_index(np.arange(first, end))
        span = int(self._store_index[-1] - self._store_index[0]) + 1
        self._together = span <= 2 * (end - first)
        if self._together:
            rows = store.document_rows(int(self._store_index[0]), int(self._store_index[-1]) + 1)
            self._sentence_starts = (rows["sentence"] - rows["sentence"][0]).tolist()
            self._token_starts = (rows["token"] - rows["token"][0]).tolist()
            self._lengths = store.sentence_lengths(int(rows["sentence"][0]), self._sentence_starts[-1])
            self._tokens = store.token_ids(int(rows["token"][0]), self._token_starts[-1])
        self._others: dict[int, tuple[list[int], int]] = {}  # random segments' documents: lengths, first token

    def own(self, index: int) -> tuple[list[int], np.ndarray]:
        """The sentence lengths and token ids of the split's document ``index`` (one of this task's)."""
        self._others.clear()
        store_index = int(self._store_index[index - self._first])
        if not self._together:
            begin, end = self._store.document_rows(store_index, store_index + 1)
            lengths = self._store.sentence_lengths(int(begin["sentence"]), int(end["sentence"] - begin["sentence"]))
            return lengths.tolist(), self._store.token_ids(int(begin["token"]), int(end["token"] - begin["token"]))
        local = store_index - int(self._store_index[0])
        s0, s1 = self._sentence_starts[local], self._sentence_starts[local + 1]
        return self._lengths[s0:s1].tolist(), self._tokens[self._token_starts[local]:self._token_starts[local + 1]]

    def lengths_of(self, index: int) -> list[int]:
        """The sentence lengths of the split's document ``index`` (a random segment's source)."""
        store_index = self._split.store_index_of(index)
        (first_sentence, first_token), (end_sentence, _) = self._store.document_rows(store_index, store_index + 1).tolist()
        lengths = self._store.sentence_lengths(first_sentence, end_sentence - first_sentence)
        self._others[index] = (lengths.tolist(), first_token)
        return self._others[index][0]

    def segment_of(self, index: int, start: int, end: int) -> np.ndarray:
        """Token ids ``start`` … ``end - 1`` of document ``index``, a random segment of the current document."""
        return self._store.token_ids(self._others[index][1] + start, end - start)
