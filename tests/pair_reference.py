"""Comparing bertpre's next-sentence pairs with google-research/bert's reference algorithm.

The corpora are the reference's own input format (one sentence per line, a blank line between
documents), built from ../shared/data with bertpre's sentence splitter, so both sides read the same
sentences. Both sides run with ``short_seq_prob`` 0 and 1: the reference draws one target length
per *document*, so on a corpus of ~100 long documents its statistics swing by ±10% from seed to
seed; the two extremes, over 20 passes (dupe_factor), are stable to a few tenths of a percent, and the default (0.1) is their exact
mixture (counts and token sums are sums over documents: E = 0.9·E[p=0] + 0.1·E[p=1]).

`jobs/reference_pair_stats.py` runs the reference and writes tests/assets/reference_pair_stats.json;
`tests/test_pairs_reference.py` runs bertpre on the same corpora and compares.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from bertpre.readers.sentences import split_sentences

MAX_SEQ_LENGTH = 128
DUPE_FACTOR = 20
SEED = 12345
SHORT_SEQ_PROB = 0.1
_TITLE = re.compile(r"^= .+ =$")


def wikipedia_documents(path: Path) -> list[list[str]]:
    """The 106 Wikipedia articles: a document per `= Title =` (title dropped), each line a paragraph."""
    documents: list[list[str]] = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        line = line.strip()
        if _TITLE.match(line):
            documents.append([])
        elif line and documents:
            documents[-1].extend(split_sentences(line))
    return documents


def speech_documents(directory: Path) -> list[list[str]]:
    """One document per file (sorted by name); blank-line blocks joined into paragraphs."""
    documents = []
    for path in sorted(directory.glob("*.txt")):
        blocks = re.split(r"\n\s*\n", path.read_text(encoding="utf-8"))
        paragraphs = [" ".join(line.strip() for line in block.split("\n") if line.strip()) for block in blocks]
        documents.append([s for paragraph in paragraphs if paragraph for s in split_sentences(paragraph)])
    return documents


def write_sentence_per_line(documents: Iterable[list[str]], path: Path) -> Path:
    """The original BERT input format: one sentence per line, a blank line between documents."""
    path.write_text("\n".join("\n".join(document) + "\n" for document in documents if document), encoding="utf-8")
    return path


def build_corpora(shared_data: Path, directory: Path) -> dict[str, Path]:
    """The two comparison corpora, written under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    return {
        "wikipedia": write_sentence_per_line(
            wikipedia_documents(shared_data / "pretrain" / "wikipedia_samples" / "enwiki_gensim_106docs.txt"),
            directory / "wikipedia_sentences.txt"),
        "inaugural": write_sentence_per_line(speech_documents(shared_data / "pretrain" / "inaugural"),
                                             directory / "inaugural_sentences.txt"),
    }


def pair_statistics(lengths: list[int], is_next: list[bool]) -> dict[str, float]:
    """Counts that add up over documents: instances, tokens (with specials), full-length ones, IsNext ones."""
    return {"instances": len(lengths), "tokens": sum(lengths),
            "full_length": sum(length == MAX_SEQ_LENGTH for length in lengths), "is_next": sum(is_next)}


def mixture(at_zero: dict[str, float], at_one: dict[str, float], short_seq_prob: float = SHORT_SEQ_PROB) -> dict[str, float]:
    """Expected statistics at ``short_seq_prob`` from those at 0 and 1, as the ratios that are compared."""
    total = {key: (1 - short_seq_prob) * at_zero[key] + short_seq_prob * at_one[key] for key in at_zero}
    return {"instances": total["instances"], "mean_length": total["tokens"] / total["instances"],
            "full_length_fraction": total["full_length"] / total["instances"],
            "is_next_fraction": total["is_next"] / total["instances"]}
