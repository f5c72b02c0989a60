"""Next-sentence pairs (Devlin et al.'s ``create_pretraining_data.py``): a pure, seeded function per document.

The algorithm works on sentence *lengths* and answers token *spans*: a pair is two ranges of token
positions, one in its own document and one in the document B came from, so `bertpre prepare` decides
every pair without building a list of tokens, and cuts the ids out of its arrays afterwards.
:func:`create_next_sentence_pairs` is the same algorithm on lists of token ids.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import accumulate
from typing import Callable, NamedTuple, Sequence

from bertpre.core.errors import BertpreError
from bertpre.core.seeding import stable_hash64


@dataclass
class SentencePair:
    """One pretraining example before special tokens: segment A, segment B, and where B came from."""

    tokens_a: list[int]
    tokens_b: list[int]
    is_random_next: bool
    document: int
    b_document: int


class PairSpan(NamedTuple):
    """One pair as token positions: A is ``[a_start, a_end)`` of its own document, B ``[b_start, b_end)``
    of ``b_document`` (its own document unless B is a random next segment)."""

    a_start: int
    a_end: int
    b_document: int
    b_start: int
    b_end: int
    is_random_next: bool


def document_rng(seed: int, dupe_pass: int, document_index: int, shard: int = 0) -> random.Random:
    """The generator for one document's choices; independent of worker count and order."""
    return random.Random(stable_hash64(f"{seed}/{shard}/{dupe_pass}/{document_index}"))


def create_next_sentence_pairs(
    documents: Sequence[Sequence[Sequence[int]]], document_index: int, max_seq_length: int,
    short_seq_prob: float, rng: random.Random, random_next_prob: float = 0.5,
) -> list[SentencePair]:
    """Cut one document into (A, B) pairs of token ids: :func:`document_pair_spans` on lists.

    ``documents`` is every document of the split (random access, each a list of tokenized sentences).
    """
    if len(documents) < 2:
        raise BertpreError("next-sentence pairs need at least two documents (random next segments come "
                           "from other documents); add text or check document boundaries")
    document = documents[document_index]
    spans = document_pair_spans([len(sentence) for sentence in document], document_index, len(documents),
                                lambda other: [len(sentence) for sentence in documents[other]], max_seq_length,
                                short_seq_prob, rng, random_next_prob)
    flat = {document_index: [token for sentence in document for token in sentence]}
    pairs = []
    for span in spans:
        if span.b_document not in flat:
            flat[span.b_document] = [token for sentence in documents[span.b_document] for token in sentence]
        pairs.append(SentencePair(flat[document_index][span.a_start:span.a_end],
                                  flat[span.b_document][span.b_start:span.b_end], span.is_random_next,
                                  document_index, span.b_document))
    return pairs


def document_pair_spans(
    lengths: Sequence[int], document_index: int, document_count: int,
    lengths_of: Callable[[int], Sequence[int]], max_seq_length: int, short_seq_prob: float,
    rng: random.Random, random_next_prob: float = 0.5,
) -> list[PairSpan]:
    """Cut one document, given as the token count of each sentence, into pairs, as in BERT's reference
    ``create_instances_from_document``.

    ``document_count`` is the number of documents of the split and ``lengths_of(i)`` the sentence
    lengths of its document ``i`` (read only for random next segments). Sentences are gathered into
    a chunk until it reaches the document's target length (``max_seq_length - 3``, or with
    probability ``short_seq_prob`` a random shorter one). Segment A is a random number of the
    chunk's leading sentences; with probability ``random_next_prob`` segment B starts at a random
    sentence of a random *other* document and the unused sentences are put back, otherwise B is the
    rest of the chunk. The pair is then truncated from a randomly chosen end until it fits. Every
    chunk gives exactly one pair, whatever its coin says, so IsNext is 50% in expectation on any corpus.

    One deliberate difference from the reference, which forces a chunk of a single sentence to
    take a random B (IsNext falls to 46% on Wikipedia, lower on short documents): such a chunk
    keeps its coin. IsNext takes the true neighbour: the following sentence as B (it still starts
    the next chunk), or at the document's end the sentence itself as B after the sentences before
    it, filled back to the target length, as A. A document of a single sentence has no true
    neighbour and gives no pair (decided before any coin, so the balance holds).
    """
    if document_count < 2:
        raise BertpreError("next-sentence pairs need at least two documents (random next segments come "
                           "from other documents); add text or check document boundaries")
    max_num_tokens = max_seq_length - 3
    target_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_length = rng.randint(2, max_num_tokens)
    count = len(lengths)
    if count < 2:
        return []
    starts = [0, *accumulate(lengths)]  # token position of each sentence, and the document's end
    spans: list[PairSpan] = []
    first = 0  # the chunk's first sentence
    chunk_length = 0
    i = 0
    while i < count:
        chunk_length += lengths[i]
        if i == count - 1 or chunk_length >= target_length:
            sentences = i - first + 1
            is_random_next = rng.random() < random_next_prob
            a_sentences = 1 if sentences < 2 else rng.randint(1, sentences - 1)
            a_start, a_end = starts[first], starts[first + a_sentences]
            b_document = document_index
            if is_random_next:
                b_document = _random_other_document(document_count, document_index, rng)
                b_start, b_end = _random_continuation(lengths_of(b_document), target_length - (a_end - a_start), rng)
                i -= sentences - a_sentences  # put the unused sentences back
            elif sentences > 1:
                b_start, b_end = a_end, starts[i + 1]
            elif i + 1 < count:  # a lone sentence: its true B is the next one
                b_start, b_end = starts[i + 1], starts[i + 2]
            else:  # a lone last sentence: it is B, the sentences before it are A
                b_start, b_end = a_start, a_end
                a_start, a_end = _preceding_text(lengths, starts, i, target_length - (b_end - b_start)), a_start
            spans.append(_truncated(a_start, a_end, b_document, b_start, b_end, is_random_next, max_num_tokens, rng))
            first, chunk_length = i + 1, 0
        i += 1
    return spans


def _preceding_text(lengths: Sequence[int], starts: Sequence[int], end: int, target_length: int) -> int:
    """Where the sentences just before sentence ``end`` begin, taken backwards until they hold
    ``target_length`` tokens (at least one sentence)."""
    start = end - 1
    length = lengths[start]
    while start > 0 and length < target_length:
        start -= 1
        length += lengths[start]
    return starts[start]


def _random_other_document(count: int, current: int, rng: random.Random) -> int:
    other = rng.randint(0, count - 2)
    return other + 1 if other >= current else other


def _random_continuation(lengths: Sequence[int], target_length: int, rng: random.Random) -> tuple[int, int]:
    """Whole sentences from a random one on, until they hold ``target_length`` tokens or the document ends."""
    first = rng.randint(0, len(lengths) - 1)
    start = sum(lengths[:first])
    length = 0
    for index in range(first, len(lengths)):
        length += lengths[index]
        if length >= target_length:
            break
    return start, start + length


def _truncated(a_start: int, a_end: int, b_document: int, b_start: int, b_end: int, is_random_next: bool,
               max_num_tokens: int, rng: random.Random) -> PairSpan:
    while (a_end - a_start) + (b_end - b_start) > max_num_tokens:
        # Cutting the front sometimes as well as the back adds noise, as the reference does.
        if a_end - a_start > b_end - b_start:
            if rng.random() < 0.5:
                a_start += 1
            else:
                a_end -= 1
        elif rng.random() < 0.5:
            b_start += 1
        else:
            b_end -= 1
    return PairSpan(a_start, a_end, b_document, b_start, b_end, is_random_next)


def pair_to_features(pair: SentencePair, cls_id: int, sep_id: int) -> tuple[list[int], list[int]]:
    """``[CLS] A [SEP] B [SEP]`` token ids and their token types ``0…0 1…1``."""
    input_ids = [cls_id, *pair.tokens_a, sep_id, *pair.tokens_b, sep_id]
    token_type_ids = [0] * (len(pair.tokens_a) + 2) + [1] * (len(pair.tokens_b) + 1)
    return input_ids, token_type_ids
