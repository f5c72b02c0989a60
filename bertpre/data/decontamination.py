"""Decontamination: pretraining documents that share a 13-word sequence with evaluation texts are dropped.

An evaluation set scores what a model learned from its training rows only if the model never read the
evaluation texts while pretraining. ``prepare --decontaminate FILES...`` indexes every 13-word sequence
(13-gram, as GPT-3's decontamination) of the texts in FILES and drops each pretraining document that
contains one; an evaluation text shorter than 13 words but of at least ``MIN_WORDS`` counts as one
sequence of its own length (a shorter one, "a great film .", turns up in many documents by chance).

Whole documents go, not only the sentence that matched: a document that quotes an evaluation text is
most often its source (the review a snippet was cut from), and its other sentences carry the same
opinion in other words; dropping the sentence alone would leave the rest of the source in.

Both sides are normalised alike (:func:`normalized_words`): lowercase, accents stripped,
Penn-Treebank clitics joined back to their word ("does n't" → "doesn't", as GLUE's tokenized texts
split them), apostrophes removed, every other non-alphanumeric character a word boundary, so raw and
tokenized copies of a sentence give the same words. Sequences are compared by a 64-bit hash of their
words' ids (a false match needs a hash collision: about one in 10^12 for a corpus of a billion words
against a million evaluation sequences).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from bertpre.core.errors import BertpreError
from bertpre.readers.tables import read_table

NGRAM = 13
MIN_WORDS = 8
_NOT_A_TEXT = 2  # a cell of one or two words is a label, an id or a name, not a text to look for
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # an odd 64-bit constant: the polynomial hash's base

_PTB_BRACKETS = re.compile(r"-[lr][rsc]b-")  # -lrb- -rrb- -lsb- … : Penn Treebank's brackets
_SPLIT_CLITIC = re.compile(r"\s+(?=(?:n't|'s|'re|'ve|'ll|'d|'m)\b)")
_APOSTROPHES = re.compile(r"['`\u2019]")
_NOT_A_WORD = re.compile(r"[\W_]+")


def normalized_words(text: str) -> list[str]:
    """The words of ``text`` as both sides of decontamination compare them (see the module's docstring)."""
    text = unicodedata.normalize("NFKD", text.lower().replace("\u2019", "'"))
    text = "".join(character for character in text if not unicodedata.combining(character))
    text = _SPLIT_CLITIC.sub("", _PTB_BRACKETS.sub(" ", text))
    return _NOT_A_WORD.sub(" ", _APOSTROPHES.sub("", text)).split()


@dataclass
class EvaluationFile:
    """One file's part of the index: its sequences' hashes and how many of its texts could be checked."""

    path: str
    hashes: np.ndarray  # sorted, unique
    texts: int = 0  # cells of three words or more
    too_short: int = 0  # texts of fewer than MIN_WORDS words: never checked
    dropped_documents: int = 0  # pretraining documents that share a sequence with this file


@dataclass
class ContaminationFilter:
    """The evaluation texts' sequences, and what dropping the documents that share one removed."""

    files: list[EvaluationFile] = field(default_factory=list)
    vocabulary: dict[str, int] = field(default_factory=dict)  # the evaluation texts' words → id (from 1)
    lengths: tuple[int, ...] = ()  # sequence lengths to look for: NGRAM and the short texts' own
    documents: int = 0
    dropped_documents: int = 0
    words: int = 0
    dropped_words: int = 0

    @classmethod
    def from_files(cls, paths: Iterable[str]) -> "ContaminationFilter":
        """Index every string cell (and the header row: a file without one loses no row) of each table."""
        index = cls()
        lengths: set[int] = set()
        for path in paths:
            hashes, texts, too_short = [], 0, 0
            for text in _texts_of_table(path):
                ids = np.array([index.vocabulary.setdefault(w, len(index.vocabulary) + 1)
                                for w in normalized_words(text)], dtype=np.uint64)
                if len(ids) <= _NOT_A_TEXT:
                    continue
                texts += 1
                if len(ids) < MIN_WORDS:
                    too_short += 1
                    continue
                length = min(len(ids), NGRAM)
                lengths.add(length)
                hashes.append(_sequence_hashes(ids, length))
            if not hashes:
                raise BertpreError(f"decontaminate: {path} has no text of {MIN_WORDS} words or more to check the "
                                   "corpus against; name the evaluation files themselves (GLUE TSVs, CSV, JSONL, "
                                   "Parquet)")
            index.files.append(EvaluationFile(path, np.unique(np.concatenate(hashes)), texts, too_short))
        index.lengths = tuple(sorted(lengths))
        return index

    def matching_files(self, text: str) -> tuple[list[int], int]:
        """The indices of the files ``text`` shares a sequence with, and its number of words."""
        words = normalized_words(text)
        ids = np.array([self.vocabulary.get(w, 0) for w in words], dtype=np.uint64)
        hashes = np.concatenate([_sequence_hashes(ids, length) for length in self.lengths])
        return [i for i, file in enumerate(self.files) if _any_in(hashes, file.hashes)], len(words)

    def screened(self, documents: Iterable[tuple[list[str], bool]], tally: dict[str, Any]
                 ) -> Iterator[tuple[list[str], bool]]:
        """``documents`` ((paragraphs, given as sentences) pairs, as prepare's workers read them) without those
        that share a sequence with an evaluation file; what was checked and dropped is added to ``tally``
        (:meth:`new_tally`), which a worker sends back for :meth:`add`."""
        for document in documents:
            if not self.files:
                yield document
                continue
            files, words = self.matching_files(" ".join(document[0]))
            tally["documents"] += 1
            tally["words"] += words
            if files:
                tally["dropped_documents"] += 1
                tally["dropped_words"] += words
                for i in files:
                    tally["files"][i] += 1
            else:
                yield document

    def new_tally(self) -> dict[str, Any]:
        """Empty counts for :meth:`screened`."""
        return {"documents": 0, "dropped_documents": 0, "words": 0, "dropped_words": 0,
                "files": [0] * len(self.files)}

    def add(self, tally: dict[str, Any]) -> None:
        """Count a worker's :meth:`screened` tally into this filter's report."""
        self.documents += tally["documents"]
        self.dropped_documents += tally["dropped_documents"]
        self.words += tally["words"]
        self.dropped_words += tally["dropped_words"]
        for file, dropped in zip(self.files, tally["files"]):
            file.dropped_documents += dropped

    def report(self) -> dict[str, Any]:
        """What was dropped, per evaluation file, as the prepare summary and ``prepare.json`` keep it."""
        if not self.files:
            return {}
        return {"ngram": NGRAM, "min_words": MIN_WORDS, "documents": self.documents,
                "dropped_documents": self.dropped_documents, "words": self.words, "dropped_words": self.dropped_words,
                "files": [{"path": f.path, "texts": f.texts, "too_short": f.too_short,
                           "dropped_documents": f.dropped_documents} for f in self.files]}


def describe_decontamination(report: dict[str, Any]) -> list[str]:
    """The summary's lines for a decontamination report (none without one)."""
    if not report:
        return []
    share = report["dropped_words"] / max(report["words"], 1)
    lines = [f"decontaminated   {report['dropped_documents']:,} of {report['documents']:,} documents dropped "
             f"({share:.1%} of the words), sharing a {report['ngram']}-word sequence (or a shorter text whole) with"]
    for file in report["files"]:
        unchecked = f", {file['too_short']:,} under {report['min_words']} words not checked" if file["too_short"] else ""
        plural = "s" if file["dropped_documents"] != 1 else ""
        lines.append(f"{'':<16} {Path(file['path']).name}: {file['dropped_documents']:,} document{plural} "
                     f"({file['texts']:,} texts{unchecked})")
    return lines


def _texts_of_table(path: str) -> Iterable[str]:
    rows = read_table(path)
    if rows:
        yield from (str(name) for name in rows[0])  # the header, or the first row of a file without one
    for row in rows:
        yield from _strings_in(row)


def _strings_in(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings_in(item)


def _sequence_hashes(ids: np.ndarray, length: int) -> np.ndarray:
    """A hash of every ``length`` consecutive word ids that holds no unknown word (id 0)."""
    count = len(ids) - length + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    hashes = np.full(count, length, dtype=np.uint64)  # the length is part of the hash
    for offset in range(length):
        hashes = hashes * _MULTIPLIER + ids[offset:offset + count]
    unknown = np.convolve((ids == 0).astype(np.int64), np.ones(length, dtype=np.int64), mode="valid")
    return hashes[unknown == 0]


def _any_in(hashes: np.ndarray, sorted_hashes: np.ndarray) -> bool:
    if not len(hashes):
        return False
    positions = np.searchsorted(sorted_hashes, hashes).clip(max=len(sorted_hashes) - 1)
    return bool((sorted_hashes[positions] == hashes).any())
