"""Sentence segmentation: rules tuned for English prose, deterministic, and linear in the length of any text."""

from __future__ import annotations

import re

_ABBREVIATIONS = frozenset("""
mr mrs ms dr prof sr jr st vs etc e.g i.e cf al no nos fig figs vol vols ch p pp ed eds inc ltd co
corp dept univ jan feb mar apr jun jul aug sep sept oct nov dec mt ft gen col capt lt sgt cmdr adm
rev gov sen rep pres hon messrs mme mlle approx est ca c u.s u.k u.n a.m p.m b.c a.d op ser
""".split())
# A sentence ends at . ! ? (optionally closed by quotes or brackets) followed by space and a
# capital letter, digit or opening quote; abbreviations and initials are checked separately.
# Matching starts only at the first mark of a run and never gives characters back (possessive
# quantifiers): a run of n marks or spaces costs n steps once, not n steps from each of its n
# characters (a 5 MB line of dots took hours).
_SENTENCE_BOUNDARY = re.compile(r"(?<![.!?…])[.!?…]++[\"'”’)\]]*+\s++(?=[\"'“‘(\[]?[A-Z0-9À-Ý])")


def split_sentences(paragraph: str) -> list[str]:
    """Split a paragraph into sentences with rules tuned for English prose.

    Deterministic and linear in the paragraph's length (one regular expression pass; each candidate
    end looks back at its own last word only). Does not split after common abbreviations (``Dr.``,
    ``e.g.``, ``U.S.``) or single-letter initials (``J. R. R. Tolkien``).
    """
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_BOUNDARY.finditer(paragraph):
        if paragraph[match.start()] == "." and _is_abbreviation(_last_word(paragraph, start, match.start())):
            continue
        sentence = paragraph[start:match.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    tail = paragraph[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def _last_word(text: str, start: int, end: int) -> str:
    """The last whitespace-separated word of ``text[start:end]`` ('' if none), found by looking back from
    ``end``: the candidate ends that are abbreviations do not move ``start``, so splitting the whole slice
    at each of them would be quadratic on a line of ``Dr. X Dr. X …``."""
    stop = end
    while stop > start and text[stop - 1].isspace():
        stop -= 1
    begin = stop
    while begin > start and not text[begin - 1].isspace():
        begin -= 1
    return text[begin:stop]


def _is_abbreviation(word: str) -> bool:
    word = word.lstrip("(\"'“‘[").lower()
    return (len(word) == 1 and word.isalpha()) or word in _ABBREVIATIONS
