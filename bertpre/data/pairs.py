"""Next-sentence pairs (Devlin et al.'s ``create_pretraining_data.py``): a pure, seeded function per document."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

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


def document_rng(seed: int, dupe_pass: int, document_index: int, shard: int = 0) -> random.Random:
    """The generator for one document's choices; independent of worker count and order."""
    return random.Random(stable_hash64(f"{seed}/{shard}/{dupe_pass}/{document_index}"))


def create_next_sentence_pairs(
    documents: Sequence[Sequence[Sequence[int]]], document_index: int, max_seq_length: int,
    short_seq_prob: float, rng: random.Random, random_next_prob: float = 0.5,
) -> list[SentencePair]:
    """Cut one document into (A, B) pairs, as in BERT's reference ``create_instances_from_document``.

    ``documents`` is every document of the split (random access, each a list of tokenized
    sentences). Sentences are gathered into a chunk until it reaches the document's target length
    (``max_seq_length - 3``, or with probability ``short_seq_prob`` a random shorter one). Segment A
    is a random number of the chunk's leading sentences; with probability ``random_next_prob``
    segment B starts at a random sentence of a random *other* document and the unused sentences
    are put back, otherwise B is the rest of the chunk. The pair is then truncated from a randomly
    chosen end until it fits. Every chunk gives exactly one pair, whatever its coin says, so IsNext
    is 50% in expectation on any corpus.

    One deliberate difference from the reference, which forces a chunk of a single sentence to
    take a random B (IsNext falls to 46% on Wikipedia, lower on short documents): such a chunk
    keeps its coin. IsNext takes the true neighbour: the following sentence as B (it still starts
    the next chunk), or at the document's end the sentence itself as B after the sentences before
    it, filled back to the target length, as A. A document of a single sentence has no true
    neighbour and gives no pair (decided before any coin, so the balance holds).
    """
    if len(documents) < 2:
        raise BertpreError("next-sentence pairs need at least two documents (random next segments come "
                           "from other documents); add text or check document boundaries")
    document = list(documents[document_index])
    max_num_tokens = max_seq_length - 3
    target_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_length = rng.randint(2, max_num_tokens)
    if len(document) < 2:
        return []
    pairs: list[SentencePair] = []
    chunk: list[Sequence[int]] = []
    chunk_length = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        chunk_length += len(document[i])
        if i == len(document) - 1 or chunk_length >= target_length:
            is_random_next = rng.random() < random_next_prob
            a_end = 1 if len(chunk) < 2 else rng.randint(1, len(chunk) - 1)
            tokens_a = [token for sentence in chunk[:a_end] for token in sentence]
            if is_random_next:
                b_document = _random_other_document(len(documents), document_index, rng)
                tokens_b = _random_continuation(documents[b_document], target_length - len(tokens_a), rng)
                i -= len(chunk) - a_end  # put the unused sentences back
            elif len(chunk) > 1:
                b_document = document_index
                tokens_b = [token for sentence in chunk[a_end:] for token in sentence]
            elif i + 1 < len(document):  # a lone sentence: its true B is the next one
                b_document = document_index
                tokens_b = list(document[i + 1])
            else:  # a lone last sentence: it is B, the sentences before it are A
                b_document = document_index
                tokens_b = tokens_a
                tokens_a = _preceding_text(document, i, target_length - len(tokens_b))
            _truncate_pair(tokens_a, tokens_b, max_num_tokens, rng)
            pairs.append(SentencePair(tokens_a, tokens_b, is_random_next, document_index, b_document))
            chunk, chunk_length = [], 0
        i += 1
    return pairs


def _preceding_text(document: Sequence[Sequence[int]], end: int, target_length: int) -> list[int]:
    """The sentences just before ``end``, taken backwards until they hold ``target_length`` tokens (at least one)."""
    start = end - 1
    length = len(document[start])
    while start > 0 and length < target_length:
        start -= 1
        length += len(document[start])
    return [token for sentence in document[start:end] for token in sentence]


def _random_other_document(count: int, current: int, rng: random.Random) -> int:
    other = rng.randint(0, count - 2)
    return other + 1 if other >= current else other


def _random_continuation(document: Sequence[Sequence[int]], target_length: int, rng: random.Random) -> list[int]:
    tokens: list[int] = []
    for index in range(rng.randint(0, len(document) - 1), len(document)):
        tokens.extend(document[index])  # sentence by sentence: a lazy document converts only these
        if len(tokens) >= target_length:
            break
    return tokens


def _truncate_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int, rng: random.Random) -> None:
    # The reference's choices, one token at a time (the same coins in the same order), but counted and cut
    # once at the end: deleting the first token of a list one by one is quadratic in a long sentence's
    # length (a 5 MB line without a sentence end stalled prepare).
    length = {"a": len(tokens_a), "b": len(tokens_b)}
    front = {"a": 0, "b": 0}
    while length["a"] + length["b"] > max_num_tokens:
        longer = "a" if length["a"] > length["b"] else "b"
        # Cutting the front sometimes as well as the back adds noise, as the reference does.
        if rng.random() < 0.5:
            front[longer] += 1
        length[longer] -= 1
    for tokens, side in ((tokens_a, "a"), (tokens_b, "b")):
        tokens[:] = tokens[front[side]:front[side] + length[side]]


def pair_to_features(pair: SentencePair, cls_id: int, sep_id: int) -> tuple[list[int], list[int]]:
    """``[CLS] A [SEP] B [SEP]`` token ids and their token types ``0…0 1…1``."""
    input_ids = [cls_id, *pair.tokens_a, sep_id, *pair.tokens_b, sep_id]
    token_type_ids = [0] * (len(pair.tokens_a) + 2) + [1] * (len(pair.tokens_b) + 1)
    return input_ids, token_type_ids
