"""MLM-only segments: each document cut at sentence ends into consecutive runs of whole sentences.

The counterpart of :mod:`bertpre.data.pairs` for ``prepare --examples segments``: the cut works on sentence
*lengths* and answers token *spans* of the document, so `bertpre prepare` decides every segment without
building a list of tokens. Nothing is random: a document is always cut the same way, and a segment holds
text of its own document only.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

SPECIAL_TOKENS = 2
"""A segment's [CLS] and [SEP]."""


class SegmentSpan(NamedTuple):
    """One segment as token positions ``[start, end)`` of its document."""

    start: int
    end: int


def document_segment_spans(lengths: Sequence[int], max_seq_length: int) -> list[SegmentSpan]:
    """Cut one document, given as the token count of each sentence, into segments of at most
    ``max_seq_length - 2`` tokens, in order, without overlap or gaps.

    Each segment is filled greedily with whole sentences: a sentence that does not fit in what is left
    of the current segment starts the next one. A sentence longer than a whole segment is cut into full
    segments, and what remains of it begins the next segment, which later sentences may join: no token
    is dropped (the pairs' truncation drops them, but there it makes room for segment B). Linear in the
    number of sentences and segments.
    """
    room = max_seq_length - SPECIAL_TOKENS
    spans: list[SegmentSpan] = []
    start = end = 0  # the current segment, [start, end)
    for length in lengths:
        if end > start and end - start + length > room:
            spans.append(SegmentSpan(start, end))
            start = end
        end += length
        while end - start > room:  # an overlong sentence: full segments of it
            spans.append(SegmentSpan(start, start + room))
            start += room
    if end > start:
        spans.append(SegmentSpan(start, end))
    return spans


def create_segments(document: Sequence[Sequence[int]], max_seq_length: int) -> list[list[int]]:
    """Cut one document (a list of tokenized sentences) into segments of token ids:
    :func:`document_segment_spans` on lists."""
    tokens = [token for sentence in document for token in sentence]
    return [tokens[start:end] for start, end in document_segment_spans([len(s) for s in document], max_seq_length)]
