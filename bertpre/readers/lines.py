"""The lines of a text or JSONL file (``.gz`` too): every line ending read alike, a bounded line length,
UTF-8 checked with the byte offset of a bad byte.

A plain-text line ends at LF, CRLF, a lone CR (classic Mac OS), NEL (U+0085) or the Unicode line and
paragraph separators (U+2028, U+2029): the same text saved with any of them reads as the same lines.
Form feed and vertical tab are not line endings: they mark pages inside prose (Project Gutenberg,
legal texts) and are whitespace within a line, as BERT's normaliser treats them. A JSONL line ends at
LF (CRLF too), as JSON Lines says; U+2028 inside a JSON string is text, never a line break.
"""

from __future__ import annotations

import gzip
import re
import zlib
from typing import IO, Iterable, Iterator, Literal, Optional

from bertpre.core.errors import BertpreError

MAX_LINE_BYTES = 256 * 2**20
"""Longest line read: a one-line JSON array of a whole corpus, or text without newlines, would otherwise be
read whole into memory (several times its size once decoded and parsed) before anything could be said."""

CHUNK_BYTES = 1 << 20
# The UTF-8 encodings of the line endings. UTF-8 is self-synchronising: these bytes never occur
# inside another character, so the raw bytes can be cut before they are decoded. A run of CRs is
# matched whole (each run once: linear however long); before an LF it is part of that one ending
# (CRLF, or CR CR LF from a file converted twice), alone each CR ends a line.
_TEXT_LINE_END = re.compile(rb"\r+\n?|\n|\xc2\x85|\xe2\x80[\xa8\xa9]")
_JSONL_LINE_END = re.compile(rb"\n")
# What a chunk may end with that begins a multi-byte line ending continued in the next chunk.
_PARTIAL_ENDINGS = (b"\xe2\x80", b"\xe2", b"\xc2")

LineEndings = Literal["text", "jsonl"]


def decoded_lines(path: str, errors: str, stats: Optional[object] = None, endings: LineEndings = "text") -> Iterator[str]:
    """Yield a file's lines as text without line endings, checking it is text (not binary, UTF-8).

    ``endings`` says what ends a line: ``text`` (every line ending, see the module's docstring) or
    ``jsonl`` (LF). With ``errors="strict"`` an undecodable line stops with the file and byte offset;
    with ``"replace"`` it is decoded with U+FFFD and counted in ``stats.replaced_lines``.
    """
    pattern = _TEXT_LINE_END if endings == "text" else _JSONL_LINE_END
    with _open_binary(path) as handle:
        for number, (raw, offset) in enumerate(_raw_lines(_chunks(handle, path), pattern, path), start=1):
            if number == 1:
                refuse_other_unicode(path, raw[:4])
                if b"\x00" in raw[:8192]:
                    raise BertpreError(f"{path}: looks like a binary file (NUL bytes), not text")
                if raw.startswith(b"\xef\xbb\xbf"):
                    raw, offset = raw[3:], offset + 3
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                if errors != "replace":
                    raise BertpreError(
                        f"{path}: byte offset {offset + error.start} is not valid UTF-8 "
                        "(convert the file to UTF-8, or pass --errors replace)") from None
                line = raw.decode("utf-8", errors="replace")
                if stats is not None:
                    stats.replaced_lines += 1  # type: ignore[attr-defined]
            yield line.replace("\r", "") if endings == "jsonl" else line


_OTHER_UNICODE = ((b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe\x00\x00", "UTF-32"), (b"\xfe\xff", "UTF-16"),
                  (b"\xff\xfe", "UTF-16"))


def refuse_other_unicode(path: str, start: bytes) -> None:
    """A file that starts with a UTF-16 or UTF-32 byte-order mark is said to be one (not "binary", not "invalid
    UTF-8 at byte 0"), with the command that converts it."""
    encoding = next((name for mark, name in _OTHER_UNICODE if start.startswith(mark)), None)
    if encoding:
        raise BertpreError(f"{path}: {encoding} text (it starts with a {encoding} byte-order mark); bertpre reads "
                           f"UTF-8: convert it with `iconv -f {encoding} -t UTF-8`")


def _open_binary(path: str) -> IO[bytes]:
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _chunks(handle: IO[bytes], path: str) -> Iterator[bytes]:
    try:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile, truncated or damaged streams
        raise BertpreError(f"{path}: not a valid gzip file ({error})") from None


class _Splitter:
    """Cuts a byte stream, chunk by chunk, into lines: each byte is looked at a bounded number of times, so a
    line of any length costs its length (the part of a line read so far is kept as pieces, never re-joined
    per chunk), and a run of CRs costs its length too."""

    def __init__(self, pattern: re.Pattern[bytes], path: str) -> None:
        self.pattern, self.path = pattern, path
        self.pieces: list[bytes] = []  # the line begun in earlier chunks
        self.size = 0
        self.line_start = 0  # file offset of the line's first byte
        self.number = 0  # lines ended so far
        self.open_crs = 0  # CRs that ended the previous chunk: one ending if an LF follows, else one each

    def feed(self, data: bytes, offset: int, final: bool) -> Iterator[tuple[bytes, int]]:
        """Lines ended in ``data`` (the stream's bytes from file offset ``offset``)."""
        start = 0
        if self.open_crs:
            lead = len(data) - len(data.lstrip(b"\r"))
            self.open_crs += lead
            if lead == len(data) and not final:
                return
            followed_by_lf = data[lead:lead + 1] == b"\n"
            yield from self._empty_lines(0 if followed_by_lf else self.open_crs - 1)
            start = lead + followed_by_lf
            self.open_crs = 0
            self.line_start = offset + start
        for match in self.pattern.finditer(data, start):
            yield self._end_line(data[start:match.start()])
            ending = match.group()
            if ending.startswith(b"\r") and not ending.endswith(b"\n"):
                if match.end() == len(data) and not final:  # the run may go on, into an LF, in the next chunk
                    self.open_crs = len(ending)
                    return
                yield from self._empty_lines(len(ending) - 1)
            start = match.end()
            self.line_start = offset + start
        if start < len(data):
            self.pieces.append(data[start:])
            self.size += len(data) - start
            _check_length(self.size, self.path, self.number + 1)
        if final and self.pieces:
            yield self._end_line(b"")

    def _end_line(self, tail: bytes) -> tuple[bytes, int]:
        line = b"".join([*self.pieces, tail]) if self.pieces else tail
        self.number += 1
        _check_length(len(line), self.path, self.number)
        self.pieces, self.size = [], 0
        return line, self.line_start

    def _empty_lines(self, count: int) -> Iterator[tuple[bytes, int]]:
        for _ in range(count):
            self.number += 1
            yield b"", self.line_start


def _raw_lines(chunks: Iterable[bytes], pattern: re.Pattern[bytes], path: str) -> Iterator[tuple[bytes, int]]:
    """(line without its ending, file offset of its first byte) for each line of the byte stream ``chunks``."""
    splitter = _Splitter(pattern, path)
    partial, offset = b"", 0
    for chunk in chunks:
        data = partial + chunk
        partial = next((ending for ending in _PARTIAL_ENDINGS if data.endswith(ending)), b"")
        if partial:
            data = data[:-len(partial)]
        yield from splitter.feed(data, offset, final=False)
        offset += len(data)
    yield from splitter.feed(partial, offset, final=True)


def _check_length(size: int, path: str, number: int) -> None:
    if size > MAX_LINE_BYTES:
        raise BertpreError(f"{path}: line {number} is longer than {MAX_LINE_BYTES:,} bytes; not line-oriented "
                           "text or JSONL (one record per line): split it into lines or records")
