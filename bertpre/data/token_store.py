"""Tokenized documents on disk, between `prepare`'s passes: written in fragments, joined, read by document.

A store is a directory of flat binary arrays, in document order:

- ``tokens.bin``: every sentence's token ids, one after another (uint16 or int32, as the vocabulary needs);
- ``sentences.bin``: the length of each sentence (uint32);
- ``documents.bin``: for each document and one past the last, where its sentences and tokens begin
  (two int64 each);
- ``keys.bin``: each document's text hash (int64), which decides the held-out split.

Workers write fragments (the same files, a document's position counted from the fragment's start);
:class:`StoreJoiner` appends them in order. :class:`TokenStore` reads a document or a run of them
with a few ``pread`` calls: nothing is memory-mapped, so a process's resident memory stays the few
documents it works on, whatever the corpus size.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

TOKENS, SENTENCES, DOCUMENTS, KEYS = "tokens.bin", "sentences.bin", "documents.bin", "keys.bin"
_DOCUMENT_ROW = np.dtype([("sentence", "<i8"), ("token", "<i8")])


class FragmentWriter:
    """Appends tokenized documents to a fragment directory: sentence lengths, ids and a key per document."""

    def __init__(self, directory: Path, id_dtype: np.dtype) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.id_dtype = np.dtype(id_dtype)
        self._files = {name: open(directory / name, "wb") for name in (TOKENS, SENTENCES, DOCUMENTS, KEYS)}
        self.documents = 0

    def append(self, tokens: np.ndarray, sentence_lengths: np.ndarray, sentences_per_document: np.ndarray,
               keys: np.ndarray) -> None:
        """Documents in order: their ids end to end, each sentence's length, each document's sentence count."""
        token_counts = np.add.reduceat(sentence_lengths.astype(np.int64), _starts(sentences_per_document)) \
            if len(sentences_per_document) else np.zeros(0, np.int64)
        rows = np.empty(len(sentences_per_document), _DOCUMENT_ROW)
        rows["sentence"], rows["token"] = sentences_per_document, token_counts
        self._files[TOKENS].write(np.ascontiguousarray(tokens, self.id_dtype).tobytes())
        self._files[SENTENCES].write(np.ascontiguousarray(sentence_lengths, np.uint32).tobytes())
        self._files[DOCUMENTS].write(rows.tobytes())  # counts here; the joiner turns them into starts
        self._files[KEYS].write(np.ascontiguousarray(keys, "<i8").tobytes())
        self.documents += len(sentences_per_document)

    def close(self) -> None:
        """Flush and close the fragment's files."""
        for handle in self._files.values():
            handle.close()


def _starts(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts[:-1])]).astype(np.int64)


class StoreJoiner:
    """Builds a store in ``directory`` from fragments appended in document order (each is removed once joined)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        # unbuffered: the kernel appends fragments to these files directly (copy_file_range)
        self._files = {name: open(directory / name, "wb", buffering=0) for name in (TOKENS, SENTENCES, DOCUMENTS, KEYS)}
        self.documents = self.sentences = self.tokens = 0

    def append(self, fragment: Path) -> None:
        """Append one fragment's documents after those already joined, and delete the fragment."""
        for name in (TOKENS, SENTENCES, KEYS):
            with open(fragment / name, "rb") as source:
                _copy_file(source, self._files[name])
        counts = np.fromfile(fragment / DOCUMENTS, _DOCUMENT_ROW)
        rows = np.empty(len(counts), _DOCUMENT_ROW)
        rows["sentence"] = self.sentences + _starts(counts["sentence"]) if len(counts) else []
        rows["token"] = self.tokens + _starts(counts["token"]) if len(counts) else []
        self._files[DOCUMENTS].write(rows.tobytes())
        self.documents += len(counts)
        self.sentences += int(counts["sentence"].sum())
        self.tokens += int(counts["token"].sum())
        shutil.rmtree(fragment)

    def close(self) -> None:
        """Write the end row (one past the last document) and close the files."""
        end = np.array([(self.sentences, self.tokens)], _DOCUMENT_ROW)
        self._files[DOCUMENTS].write(end.tobytes())
        for handle in self._files.values():
            handle.close()


@contextmanager
def append_files(directory: Path, names: list[str]) -> Iterator[Callable[[Path], None]]:
    """A function that appends the files ``names`` of a fragment directory to those of ``directory``, in
    the kernel, and deletes the fragment."""
    files = {name: open(directory / name, "wb", buffering=0) for name in names}

    def append(fragment: Path) -> None:
        for name in names:
            with open(fragment / name, "rb") as source:
                _copy_file(source, files[name])
        shutil.rmtree(fragment)

    try:
        yield append
    finally:
        for handle in files.values():
            handle.close()


def _copy_file(source, destination) -> None:  # noqa: ANN001 - open binary files
    """Append ``source`` to ``destination`` in the kernel where it can (no bytes through Python)."""
    size = os.fstat(source.fileno()).st_size
    copied = 0
    if hasattr(os, "copy_file_range"):
        try:
            while copied < size:
                step = os.copy_file_range(source.fileno(), destination.fileno(), size - copied)
                if step == 0:
                    break
                copied += step
        except OSError:
            pass  # file systems without it: copy the rest by hand
    if copied < size:
        source.seek(copied)
        destination.seek(0, os.SEEK_END)
        shutil.copyfileobj(source, destination, 16 * 2**20)


class TokenStore:
    """Read access to a joined store: documents by index, their sentence lengths and token ids."""

    def __init__(self, directory: Path, id_dtype: np.dtype) -> None:
        self.directory = Path(directory)
        self.id_dtype = np.dtype(id_dtype)
        self._fds = {name: os.open(self.directory / name, os.O_RDONLY) for name in (TOKENS, SENTENCES, DOCUMENTS)}
        self.document_count = os.fstat(self._fds[DOCUMENTS]).st_size // _DOCUMENT_ROW.itemsize - 1

    def key_blocks(self, block: int = 2**20) -> Iterator[tuple[int, np.ndarray]]:
        """The documents' text hashes in order, a block at a time: (index of the block's first document, hashes)."""
        for first in range(0, self.document_count, block):
            count = min(block, self.document_count - first)
            yield first, np.fromfile(self.directory / KEYS, "<i8", count=count, offset=first * 8)

    def sentence_count_blocks(self, block: int = 2**20) -> Iterator[tuple[int, np.ndarray]]:
        """How many sentences each document has, a block at a time: (index of the block's first document, counts)."""
        for first in range(0, self.document_count, block):
            rows = self.document_rows(first, min(first + block, self.document_count))
            yield first, np.diff(rows["sentence"])

    def token_count(self) -> int:
        """Tokens of all documents."""
        return int(self.document_rows(self.document_count, self.document_count)["token"][0])

    def document_rows(self, first: int, end: int) -> np.ndarray:
        """Where documents ``first`` … ``end`` begin (``end`` included: it closes ``end - 1``)."""
        return self._read(DOCUMENTS, _DOCUMENT_ROW, first, end - first + 1)

    def sentence_lengths(self, first_sentence: int, count: int) -> np.ndarray:
        """The lengths of ``count`` sentences from the store's sentence ``first_sentence`` on."""
        return self._read(SENTENCES, np.dtype(np.uint32), first_sentence, count)

    def token_ids(self, first_token: int, count: int) -> np.ndarray:
        """``count`` token ids from the store's token ``first_token`` on."""
        return self._read(TOKENS, self.id_dtype, first_token, count)

    def _read(self, name: str, dtype: np.dtype, first: int, count: int) -> np.ndarray:
        size = count * dtype.itemsize
        data = os.pread(self._fds[name], size, first * dtype.itemsize) if size else b""
        if len(data) != size:
            raise OSError(f"{self.directory / name}: cut short (a scratch file of `bertpre prepare`)")
        return np.frombuffer(data, dtype)

    def close(self) -> None:
        """Close the store's files."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
