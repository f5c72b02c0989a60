"""Stage 2: raw corpora → next-sentence pairs on disk; and the masking collator that training uses.

``prepare_pretraining_data`` runs in three passes, each spread over all cores with `datasets`
and each written to memory-mapped Arrow files, so memory stays bounded whatever the corpus size:

1. read documents, split paragraphs into sentences, tokenize them in batches;
2. hold out whole documents for evaluation;
3. create next-sentence pairs following Devlin et al.'s ``create_pretraining_data.py``.

Every random choice for a document comes from a generator seeded by (seed, pass, document index),
so the output is byte-identical for any number of worker processes.

The reading side (``PretrainingData``) and the collator need only pyarrow and torch, so GPU
machines without `datasets` can train.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from bertpre.config import SPECIAL_TOKENS, BertpreError, PrepareConfig, save_config
from bertpre.corpus import CorpusStats, read_documents, resolve_inputs, warn_about_replaced_bytes
from bertpre.io import atomic_directory, check_writable_output

DATA_FORMAT_VERSION = 1
IGNORE_INDEX = -100
# Documents held in memory between writes to disk: `datasets` defaults to 1,000 rows, which is a
# whole corpus of book-length documents; 64 keeps memory flat whatever the document length.
DOCUMENTS_PER_WRITE = 64
_METADATA = "prepare.json"

# --------------------------------------------------------------------------------------------
# Sentence segmentation
# --------------------------------------------------------------------------------------------

_ABBREVIATIONS = frozenset("""
mr mrs ms dr prof sr jr st vs etc e.g i.e cf al no nos fig figs vol vols ch p pp ed eds inc ltd co
corp dept univ jan feb mar apr jun jul aug sep sept oct nov dec mt ft gen col capt lt sgt cmdr adm
rev gov sen rep pres hon messrs mme mlle approx est ca c u.s u.k u.n a.m p.m b.c a.d op ser
""".split())
# A sentence ends at . ! ? (optionally closed by quotes or brackets) followed by space and a
# capital letter, digit or opening quote; abbreviations and initials are checked separately.
_SENTENCE_BOUNDARY = re.compile(r"[.!?…]+[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9À-Ý])")


def split_sentences(paragraph: str) -> list[str]:
    """Split a paragraph into sentences with rules tuned for English prose.

    Deterministic and fast (one regular expression pass). Does not split after common
    abbreviations (``Dr.``, ``e.g.``, ``U.S.``) or single-letter initials (``J. R. R. Tolkien``).
    """
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_BOUNDARY.finditer(paragraph):
        if _ends_with_abbreviation(paragraph[start:match.start() + 1]):
            continue
        sentence = paragraph[start:match.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    tail = paragraph[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def _ends_with_abbreviation(text: str) -> bool:
    if not text.endswith("."):
        return False
    words = text[:-1].split()
    if not words:
        return False
    word = words[-1].lstrip("(\"'“‘[").lower()
    return (len(word) == 1 and word.isalpha()) or word in _ABBREVIATIONS


# --------------------------------------------------------------------------------------------
# Next-sentence pairs (Devlin et al., create_pretraining_data.py)
# --------------------------------------------------------------------------------------------


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
    return random.Random(_hash64(f"{seed}/{shard}/{dupe_pass}/{document_index}"))


def _hash64(text: str) -> int:
    """A 64-bit hash of ``text``, the same in every process and on every machine (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def create_next_sentence_pairs(
    documents: Sequence[Sequence[Sequence[int]]], document_index: int, max_seq_length: int,
    short_seq_prob: float, rng: random.Random, random_next_prob: float = 0.5,
) -> list[SentencePair]:
    """Cut one document into (A, B) pairs, as in BERT's reference ``create_instances_from_document``.

    ``documents`` is every document of the split (random access, each a list of tokenized
    sentences). Segment A is a random number of leading sentences of a chunk that fills a target
    length (``max_seq_length - 3``, shorter with probability ``short_seq_prob``); with
    probability ``random_next_prob`` segment B starts at a random sentence of a random *other*
    document and the unused sentences are put back, otherwise B is the rest of the chunk. The pair
    is then truncated from a randomly chosen end until it fits. One deliberate difference: a chunk
    of a single sentence takes the following sentence as its true B, or is left out at the end of
    the document (the reference forces a random B there, which biases IsNext below 50%).
    """
    if len(documents) < 2:
        raise BertpreError("next-sentence pairs need at least two documents (random next segments come "
                           "from other documents); add text or check document boundaries")
    document = list(documents[document_index])
    max_num_tokens = max_seq_length - 3
    target_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_length = rng.randint(2, max_num_tokens)
    pairs: list[SentencePair] = []
    chunk: list[Sequence[int]] = []
    chunk_length = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        chunk_length += len(document[i])
        if i == len(document) - 1 or chunk_length >= target_length:
            is_random_next = rng.random() < random_next_prob
            if len(chunk) == 1 and not is_random_next:
                # The reference always pairs a lone sentence with a random B, which skews IsNext
                # below 50%. Here its true B is the next sentence; at the end of the document
                # there is none, and the sentence is left out rather than forced to be random.
                if i + 1 >= len(document):
                    break
                i += 1
                chunk.append(document[i])
            a_end = 1 if len(chunk) < 2 else rng.randint(1, len(chunk) - 1)
            tokens_a = [token for sentence in chunk[:a_end] for token in sentence]
            if is_random_next:
                is_random_next = True
                b_document = _random_other_document(len(documents), document_index, rng)
                tokens_b = _random_continuation(documents[b_document], target_length - len(tokens_a), rng)
                i -= len(chunk) - a_end  # put the unused sentences back
            else:
                b_document = document_index
                tokens_b = [token for sentence in chunk[a_end:] for token in sentence]
            _truncate_pair(tokens_a, tokens_b, max_num_tokens, rng)
            if tokens_a and tokens_b:
                pairs.append(SentencePair(tokens_a, tokens_b, is_random_next, document_index, b_document))
            chunk, chunk_length = [], 0
        i += 1
    return pairs


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
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        # Cutting the front sometimes as well as the back adds noise, as the reference does.
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def pair_to_features(pair: SentencePair, cls_id: int, sep_id: int) -> tuple[list[int], list[int]]:
    """``[CLS] A [SEP] B [SEP]`` token ids and their token types ``0…0 1…1``."""
    input_ids = [cls_id, *pair.tokens_a, sep_id, *pair.tokens_b, sep_id]
    token_type_ids = [0] * (len(pair.tokens_a) + 2) + [1] * (len(pair.tokens_b) + 1)
    return input_ids, token_type_ids


# --------------------------------------------------------------------------------------------
# prepare: corpus → sharded Arrow dataset
# --------------------------------------------------------------------------------------------


@dataclass
class PrepareSummary:
    """What `prepare_pretraining_data` produced, printed at the end of `bertpre prepare`."""

    output: str
    documents: int
    sentences: int
    train_documents: int
    eval_documents: int
    train_pairs: int
    eval_pairs: int
    tokens: int
    is_next_ratio: float
    length_histogram: dict[str, int]
    padding_fraction: float
    max_seq_length: int
    seconds: float
    workers: int
    replaced_lines: int = 0
    duplicate_lines: int = 0

    def table(self) -> str:
        """A human-readable summary with the length histogram."""
        docs_per_second = self.documents / max(self.seconds, 1e-9)
        tokens_per_second = self.tokens / max(self.seconds, 1e-9)
        lines = [
            f"dataset          {self.output}",
            f"documents        {self.documents:,} ({self.train_documents:,} train, {self.eval_documents:,} eval)",
            f"sentences        {self.sentences:,}",
            f"pairs            {self.train_pairs + self.eval_pairs:,} ({self.train_pairs:,} train, {self.eval_pairs:,} eval)",
            f"tokens           {self.tokens:,}",
            f"IsNext ratio     {self.is_next_ratio:.3f}",
            f"padding at {self.max_seq_length:<5} {self.padding_fraction:.1%}",
            f"wall time        {self.seconds:.1f} s with {self.workers} worker{'s' if self.workers != 1 else ''} "
            f"({docs_per_second:,.0f} docs/s, {tokens_per_second:,.0f} tokens/s, "
            f"{tokens_per_second / self.workers:,.0f} tokens/s per worker)",
        ]
        if self.duplicate_lines:
            lines.append(f"duplicates       {self.duplicate_lines:,} lines dropped")
        if self.replaced_lines:
            lines.append(f"replaced         {self.replaced_lines:,} lines had undecodable bytes")
        lines.append("pair length (tokens incl. specials):")
        largest = max(self.length_histogram.values(), default=1) or 1
        for bucket, count in self.length_histogram.items():
            lines.append(f"  {bucket:>9}  {count:>9,}  {'#' * max(1 if count else 0, round(40 * count / largest))}")
        return "\n".join(lines)


def prepare_pretraining_data(config: PrepareConfig, show_progress: bool = True) -> PrepareSummary:
    """Turn ``config.inputs`` into train/eval next-sentence pairs saved under ``config.output``.

    The result is written to a temporary sibling directory and renamed into place at the end, so a
    failed or interrupted run never leaves a partial dataset where a complete one is expected.
    """
    import datasets

    started = time.perf_counter()
    output = Path(config.output)
    check_writable_output(output, config.overwrite)
    tokenizer_info = _check_tokenizer(config)
    sources = _sources_of_this_shard(config)
    workers = config.num_workers or os.cpu_count() or 1
    if not show_progress:
        datasets.disable_progress_bars()
    with atomic_directory(output, overwrite=config.overwrite) as staging:
        stats = CorpusStats()
        documents = _tokenized_documents(config, sources, staging, workers, stats, tokenizer_info["vocab_size"])
        train_docs, eval_docs = _split_documents(documents, config.eval_fraction, staging)
        summary_parts = {}
        for split, docs in (("train", train_docs), ("eval", eval_docs)):
            if docs is None:
                continue
            pairs = _create_pairs(docs, config, tokenizer_info, staging / f"{split}-pairs", workers, split)
            # One writer: the number of shards then follows the data size alone, never the worker count.
            pairs.save_to_disk(str(staging / split), max_shard_size=config.max_shard_size)
            summary_parts[split] = pairs
        summary = _summarize(config, output, documents, train_docs, eval_docs, summary_parts,
                             time.perf_counter() - started, workers, stats)
        _write_metadata(staging, config, tokenizer_info, summary)
        for scratch in ("documents", "train-docs", "eval-docs", "train-pairs", "eval-pairs", "hf-cache"):
            shutil.rmtree(staging / scratch, ignore_errors=True)
    summary.seconds = time.perf_counter() - started
    return summary


def _check_tokenizer(config: PrepareConfig) -> dict[str, Any]:
    from bertpre.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(config.tokenizer)
    vocab = tokenizer.get_vocab()
    vocab_txt = Path(config.tokenizer) / "vocab.txt"
    if vocab_txt.exists():
        listed = vocab_txt.read_text(encoding="utf-8").split("\n")
        if listed and listed[-1] == "":
            listed.pop()
        by_id = sorted(vocab, key=vocab.__getitem__)
        if listed != by_id:
            raise BertpreError(f"{vocab_txt}: does not match {config.tokenizer}/tokenizer.json "
                               "(mixed files from two tokenizers?); retrain or copy both together")
    ids = {token: vocab.get(token) for token in SPECIAL_TOKENS}
    if [ids[token] for token in SPECIAL_TOKENS] != list(range(len(SPECIAL_TOKENS))):
        raise BertpreError(f"{config.tokenizer}: special tokens have ids {ids}, expected [PAD]=0 … [MASK]=4 "
                           "(train it with `bertpre tokenizer train`)")
    model_max = getattr(tokenizer, "model_max_length", 512) or 512
    if config.max_seq_length > model_max:
        raise BertpreError(f"max_seq_length: {config.max_seq_length} exceeds the tokenizer's "
                           f"model_max_length {model_max} (the model's position embeddings)")
    digest = hashlib.sha256("\n".join(sorted(vocab, key=vocab.__getitem__)).encode()).hexdigest()[:16]
    return {"path": str(Path(config.tokenizer).resolve()), "vocab_size": len(tokenizer),
            "vocab_sha256": digest, "cls_id": tokenizer.cls_token_id, "sep_id": tokenizer.sep_token_id}


def _sources_of_this_shard(config: PrepareConfig) -> list[str]:
    sources = resolve_inputs(config.inputs)
    index, count = config.shard_index_and_count()
    if count == 1:
        return sources
    if count > len(sources):
        raise BertpreError(f"shard: {count} shards but only {len(sources)} input files; use at most {len(sources)}")
    return sources[index::count]


# ---- pass 1: documents → tokenized sentences ------------------------------------------------


def _read_shard_documents(sources: list[str], config_dict: dict[str, Any]) -> Iterator[dict[str, Any]]:
    config = PrepareConfig(**config_dict)
    stats = CorpusStats()
    reported = (0, 0)
    for document in read_documents(config, sources, stats):
        # Counts travel with the rows: this generator may run in another process.
        counts = (stats.replaced_lines, stats.duplicate_lines)
        yield {"paragraphs": document.paragraphs,
               "replaced_lines": counts[0] - reported[0], "duplicate_lines": counts[1] - reported[1]}
        reported = counts


def _user_error_inside(error: BaseException) -> BertpreError | None:
    """The BertpreError that a `datasets` worker raised, if the chain of causes holds one."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, BertpreError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


_TOKENIZER_CACHE: dict[str, Any] = {}


def _worker_tokenizer(path: str):  # noqa: ANN202 - a transformers tokenizer, one per process
    if path not in _TOKENIZER_CACHE:
        from transformers import AutoTokenizer

        _TOKENIZER_CACHE[path] = AutoTokenizer.from_pretrained(path)
    return _TOKENIZER_CACHE[path]


def _tokenize_documents(batch: dict[str, list], tokenizer_path: str) -> dict[str, list]:
    tokenizer = _worker_tokenizer(tokenizer_path)
    sentences_per_doc = [[s for paragraph in paragraphs for s in split_sentences(paragraph)]
                         for paragraphs in batch["paragraphs"]]
    flat = [sentence for sentences in sentences_per_doc for sentence in sentences]
    encoded = tokenizer(flat, add_special_tokens=False, return_attention_mask=False,
                        return_token_type_ids=False, verbose=False)["input_ids"] if flat else []
    tokenized, position = [], 0
    for sentences in sentences_per_doc:
        ids = [ids for ids in encoded[position:position + len(sentences)] if ids]
        position += len(sentences)
        tokenized.append(ids)
    return {"text_key": [_text_key(paragraphs) for paragraphs in batch["paragraphs"]], "sentences": tokenized}


def _text_key(paragraphs: list[str]) -> int:
    """A hash of a document's text: where the file lies must not decide which split it lands in."""
    return _hash64("\n".join(paragraphs)) >> 1  # fits int64, which Arrow stores without fuss


def _tokenized_documents(config: PrepareConfig, sources: list[str], staging: Path, workers: int,
                         stats: CorpusStats, vocab_size: int):  # noqa: ANN202 - datasets.Dataset
    import datasets

    id_type = "uint16" if vocab_size <= 65536 else "int32"
    # Reading runs in parallel over files; global de-duplication needs one reader to stay exact.
    read_workers = 1 if config.deduplicate else min(workers, len(sources))
    cache = str(staging / "hf-cache")
    config_dict = {k: v for k, v in vars(config).items()}
    features = datasets.Features({"paragraphs": datasets.Sequence(datasets.Value("string")),
                                  "replaced_lines": datasets.Value("int64"),
                                  "duplicate_lines": datasets.Value("int64")})
    try:
        raw = datasets.Dataset.from_generator(
            _read_shard_documents, features=features, cache_dir=cache,
            gen_kwargs={"sources": sources, "config_dict": config_dict},
            num_proc=read_workers if read_workers > 1 else None, split="train", writer_batch_size=DOCUMENTS_PER_WRITE)
    except Exception as error:  # datasets wraps what the reader raised
        user_error = _user_error_inside(error)
        if user_error is not None:
            raise user_error from None
        if "corresponds to no data" not in str(error):  # what `datasets` says for zero rows
            raise
        raw = []
    if len(raw) == 0:
        raise BertpreError(f"{', '.join(config.inputs)}: the corpus is empty (no text after cleaning)")
    if config.max_documents is not None and len(raw) > config.max_documents:
        raw = raw.select(range(config.max_documents))
    stats.replaced_lines = int(sum(raw["replaced_lines"]))
    stats.duplicate_lines = int(sum(raw["duplicate_lines"]))
    warn_about_replaced_bytes(stats)
    tokenized = raw.map(
        _tokenize_documents, batched=True, batch_size=DOCUMENTS_PER_WRITE, writer_batch_size=DOCUMENTS_PER_WRITE,
        num_proc=workers if workers > 1 else None,
        remove_columns=raw.column_names, fn_kwargs={"tokenizer_path": str(Path(config.tokenizer).resolve())},
        features=datasets.Features({"text_key": datasets.Value("int64"),
                                    "sentences": datasets.Sequence(datasets.Sequence(datasets.Value(id_type)))}),
        desc="tokenizing")
    tokenized = tokenized.filter(lambda batch: [len(s) > 0 for s in batch["sentences"]], batched=True,
                                 num_proc=workers if workers > 1 else None, desc="dropping empty documents")
    tokenized.save_to_disk(str(staging / "documents"))
    stats.documents = len(tokenized)
    return datasets.load_from_disk(str(staging / "documents"))


# ---- pass 2: hold out whole documents -------------------------------------------------------


def _split_documents(documents, eval_fraction: float, staging: Path):  # noqa: ANN001, ANN202
    """Pick eval documents by a hash of their text.

    Stable under worker counts, input order and the corpus's location: the same corpus read from
    another directory or node gives the same split (identical documents also land on the same side).
    """
    import datasets

    count = len(documents)
    if eval_fraction == 0 or count < 4:
        return documents, None
    n_eval = min(count - 2, max(2, round(eval_fraction * count)))
    keys = np.asarray(documents.data.column("text_key").to_numpy())
    order = np.argsort(keys, kind="stable")
    is_eval = np.zeros(count, dtype=bool)
    is_eval[order[:n_eval]] = True
    train = documents.select(np.flatnonzero(~is_eval))
    evaluation = documents.select(np.flatnonzero(is_eval))
    train.save_to_disk(str(staging / "train-docs"))
    evaluation.save_to_disk(str(staging / "eval-docs"))
    return datasets.load_from_disk(str(staging / "train-docs")), datasets.load_from_disk(str(staging / "eval-docs"))


# ---- pass 3: pairs --------------------------------------------------------------------------


class _LazyDocument(Sequence):
    """One memory-mapped document; a sentence becomes a Python list only when it is read."""

    def __init__(self, sentences) -> None:  # noqa: ANN001 - a pyarrow list array
        self._sentences = sentences

    def __len__(self) -> int:
        return len(self._sentences)

    def __getitem__(self, index: int) -> list[int]:  # type: ignore[override]
        return self._sentences[index].values.to_numpy(zero_copy_only=False).tolist()


class _LazySentences(Sequence):
    """Random access to the sentences of memory-mapped documents, without loading them all."""

    def __init__(self, documents) -> None:  # noqa: ANN001 - datasets.Dataset
        self._column = documents.data.column("sentences")

    def __len__(self) -> int:
        return len(self._column)

    def __getitem__(self, index: int) -> Sequence[Sequence[int]]:  # type: ignore[override]
        return _LazyDocument(self._column[index].values)


def _pairs_for_documents(batch: dict[str, list], indices: list[int], documents, options: dict[str, Any]) -> dict[str, list]:  # noqa: ANN001,E501
    corpus = _LazySentences(documents)
    columns: dict[str, list] = {"input_ids": [], "token_type_ids": [], "next_sentence_label": [],
                                "document": [], "b_document": []}
    for index in indices:
        rng = document_rng(options["seed"], options["dupe_pass"], index, options["stream"])
        for pair in create_next_sentence_pairs(corpus, index, options["max_seq_length"],
                                               options["short_seq_prob"], rng, options["random_next_prob"]):
            input_ids, token_type_ids = pair_to_features(pair, options["cls_id"], options["sep_id"])
            columns["input_ids"].append(input_ids)
            columns["token_type_ids"].append(token_type_ids)
            # Label convention of BertForPreTraining: 0 = B is the continuation, 1 = B is random.
            columns["next_sentence_label"].append(int(pair.is_random_next))
            columns["document"].append(pair.document)
            columns["b_document"].append(pair.b_document)
    return columns


def _create_pairs(documents, config: PrepareConfig, tokenizer_info: dict[str, Any], path: Path,  # noqa: ANN001, ANN202
                  workers: int, split: str):
    import datasets

    if len(documents) < 2:
        raise BertpreError(f"{', '.join(config.inputs)}: only {len(documents)} document in the {split} split; "
                           "next-sentence pairs need at least two (random next segments come from other "
                           "documents); add text or check --document-boundary")
    id_type = "uint16" if tokenizer_info["vocab_size"] <= 65536 else "int32"
    shard_index, _ = config.shard_index_and_count()
    options = {"dupe_factor": config.dupe_factor, "seed": config.seed, "max_seq_length": config.max_seq_length,
               "short_seq_prob": config.short_seq_prob, "random_next_prob": config.random_next_prob,
               "cls_id": tokenizer_info["cls_id"], "sep_id": tokenizer_info["sep_id"],
               "stream": shard_index * 2 + (split == "eval")}
    features = datasets.Features({
        "input_ids": datasets.Sequence(datasets.Value(id_type)),
        "token_type_ids": datasets.Sequence(datasets.Value("uint8")),
        "next_sentence_label": datasets.Value("int8"),
        "document": datasets.Value("int32"),
        "b_document": datasets.Value("int32"),
    })
    passes = [documents.map(
        _pairs_for_documents, batched=True, batch_size=32, with_indices=True,
        num_proc=workers if workers > 1 and len(documents) >= workers else None,
        remove_columns=documents.column_names, features=features,
        fn_kwargs={"documents": documents, "options": {**options, "dupe_pass": dupe_pass}},
        desc=f"{split} pairs, pass {dupe_pass + 1}/{config.dupe_factor}")
        for dupe_pass in range(config.dupe_factor)]
    pairs = datasets.concatenate_datasets(passes) if len(passes) > 1 else passes[0]
    pairs.save_to_disk(str(path))
    return datasets.load_from_disk(str(path))


# ---- summary and metadata -------------------------------------------------------------------


def _length_histogram(lengths: np.ndarray, max_seq_length: int) -> dict[str, int]:
    edges = sorted({0, *[max_seq_length * k // 8 for k in range(1, 8)], max_seq_length})
    histogram = {}
    for low, high in zip(edges[:-1], edges[1:]):
        histogram[f"{low + 1}-{high}"] = int(((lengths > low) & (lengths <= high)).sum())
    return histogram


def _summarize(config: PrepareConfig, output: Path, documents, train_docs, eval_docs,  # noqa: ANN001
               pairs: dict[str, Any], seconds: float, workers: int, stats: CorpusStats) -> PrepareSummary:
    lengths = np.concatenate([np.asarray(_list_lengths(p.data.column("input_ids"))) for p in pairs.values()])
    labels = np.concatenate([np.asarray(p.data.column("next_sentence_label").to_numpy()) for p in pairs.values()])
    sentence_lengths = _list_lengths(documents.data.column("sentences"))
    return PrepareSummary(
        output=str(output), documents=len(documents), sentences=int(np.sum(sentence_lengths)),
        train_documents=len(train_docs), eval_documents=len(eval_docs) if eval_docs is not None else 0,
        train_pairs=len(pairs["train"]), eval_pairs=len(pairs["eval"]) if "eval" in pairs else 0,
        tokens=int(lengths.sum()), is_next_ratio=float((labels == 0).mean()) if len(labels) else 0.0,
        length_histogram=_length_histogram(lengths, config.max_seq_length),
        padding_fraction=float(1 - lengths.sum() / (len(lengths) * config.max_seq_length)) if len(lengths) else 0.0,
        max_seq_length=config.max_seq_length, seconds=seconds, workers=workers,
        replaced_lines=stats.replaced_lines, duplicate_lines=stats.duplicate_lines)


def _list_lengths(column) -> np.ndarray:  # noqa: ANN001 - a pyarrow (chunked) list array
    import pyarrow.compute as pc

    return pc.list_value_length(column).to_numpy(zero_copy_only=False)


def _write_metadata(directory: Path, config: PrepareConfig, tokenizer_info: dict[str, Any],
                    summary: PrepareSummary) -> None:
    metadata = {"format_version": DATA_FORMAT_VERSION, "max_seq_length": config.max_seq_length,
                "tokenizer": tokenizer_info, "shard": config.shard, "summary": vars(summary)}
    (directory / _METADATA).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    save_config(config, directory / "prepare.yaml")
    tokenizer_copy = directory / "tokenizer"
    tokenizer_copy.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        source = Path(config.tokenizer) / name
        if source.exists():
            shutil.copy2(source, tokenizer_copy / name)


# --------------------------------------------------------------------------------------------
# Reading prepared data for training (pyarrow only)
# --------------------------------------------------------------------------------------------


class PretrainingData:
    """Prepared pairs of one split, memory-mapped from every shard under a `prepare` output.

    ``path`` is one `bertpre prepare` output, or a directory of several (from ``--shard i/N``
    runs); they are read as one dataset, in sorted order.
    """

    def __init__(self, path: str | Path, split: str = "train") -> None:
        self.path = Path(path)
        self.split = split
        self.metadata = read_data_metadata(self.path)
        self._open()

    def __getstate__(self) -> dict[str, Any]:
        # Data-loading workers reopen the memory map instead of receiving a pickled copy of the data.
        return {"path": self.path, "split": self.split, "metadata": self.metadata}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    def _open(self) -> None:
        import pyarrow as pa

        split = self.split
        tables = []
        for root in self.metadata["roots"]:
            split_dir = Path(root) / split
            files = sorted(split_dir.glob("data-*.arrow"))
            if not files:
                raise BertpreError(f"{split_dir}: no prepared {split} data (run `bertpre prepare`)")
            for file in files:
                with pa.memory_map(str(file)) as source:
                    tables.append(pa.ipc.open_stream(source).read_all())
        self.table = pa.concat_tables(tables).combine_chunks() if len(tables) > 1 else tables[0]
        self._offsets, self._values = _list_buffers(self.table.column("input_ids"))
        self._type_offsets, self._type_values = _list_buffers(self.table.column("token_type_ids"))
        self._nsp = self.table.column("next_sentence_label").to_numpy()

    @property
    def max_seq_length(self) -> int:
        """The length the pairs were prepared for."""
        return int(self.metadata["max_seq_length"])

    def __len__(self) -> int:
        return self.table.num_rows

    def lengths(self) -> np.ndarray:
        """Length of every example (tokens including specials)."""
        return np.diff(self._offsets)

    def example(self, index: int) -> dict[str, np.ndarray]:
        """One example as numpy arrays: ``input_ids``, ``token_type_ids``, ``next_sentence_label``."""
        start, end = self._offsets[index], self._offsets[index + 1]
        type_start = self._type_offsets[index]
        return {"input_ids": self._values[start:end],
                "token_type_ids": self._type_values[type_start:type_start + end - start],
                "next_sentence_label": self._nsp[index]}


def _list_buffers(column) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    array = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    offsets = array.offsets.to_numpy()
    values = array.values.to_numpy()
    return offsets, values


def read_data_metadata(path: str | Path) -> dict[str, Any]:
    """Metadata of a prepared dataset (or of several shards under one directory), checked to agree."""
    path = Path(path)
    if (path / _METADATA).exists():
        roots = [path]
    else:
        roots = sorted(p.parent for p in path.glob(f"*/{_METADATA}"))
    if not roots:
        raise BertpreError(f"{path}: not a prepared dataset (no {_METADATA}); run `bertpre prepare` first")
    metas = [json.loads((root / _METADATA).read_text(encoding="utf-8")) for root in roots]
    first = metas[0]
    for root, meta in zip(roots[1:], metas[1:]):
        if meta["tokenizer"]["vocab_sha256"] != first["tokenizer"]["vocab_sha256"]:
            raise BertpreError(f"{root}: prepared with a different tokenizer than {roots[0]}")
        if meta["max_seq_length"] != first["max_seq_length"]:
            raise BertpreError(f"{root}: max_seq_length {meta['max_seq_length']} differs from "
                               f"{first['max_seq_length']} in {roots[0]}")
    return {**first, "roots": [str(r) for r in roots]}


# --------------------------------------------------------------------------------------------
# Masking
# --------------------------------------------------------------------------------------------


@dataclass
class MaskingCollator:
    """Pads examples into a batch and masks it for MLM: dynamic, seeded, optionally whole-word.

    Of the non-special tokens, ``mlm_probability`` are chosen (per word with ``whole_word``); of
    those 80% become ``[MASK]``, 10% a random token, 10% stay. The batch holds the dense
    ``labels`` (-100 where nothing is predicted) and the compact form: ``masked_positions``
    (flat indices into batch × sequence) and ``masked_labels``. Sequences are padded to the
    longest in the batch, rounded up to ``pad_to_multiple_of``.
    """

    vocab_size: int
    mask_token_id: int = 4
    pad_token_id: int = 0
    num_special_tokens: int = len(SPECIAL_TOKENS)
    mlm_probability: float = 0.15
    whole_word: bool = False
    pad_to_multiple_of: int = 8
    continuation: Any = field(default=None, repr=False)  # bool tensor: vocab id → starts with "##"

    @classmethod
    def from_tokenizer(cls, tokenizer, **kwargs: Any) -> "MaskingCollator":  # noqa: ANN001
        """Ids and the ``##`` continuation table from a BERT tokenizer."""
        import torch

        vocab = tokenizer.get_vocab()
        continuation = torch.zeros(len(tokenizer), dtype=torch.bool)
        for token, index in vocab.items():
            if token.startswith("##") and index < len(continuation):
                continuation[index] = True
        specials = max(tokenizer.all_special_ids) + 1
        return cls(vocab_size=len(tokenizer), mask_token_id=tokenizer.mask_token_id,
                   pad_token_id=tokenizer.pad_token_id, num_special_tokens=specials,
                   continuation=continuation, **kwargs)

    def __call__(self, examples: Sequence[dict[str, Any]], generator: Any = None) -> dict[str, Any]:
        """Pad and mask ``examples`` with ``generator`` (a seeded ``torch.Generator``)."""
        batch = self.pad(examples)
        batch.update(self.mask(batch["input_ids"], generator))
        return batch

    def pad(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Stack examples into right-padded tensors (no masking)."""
        import torch

        longest = max(len(e["input_ids"]) for e in examples)
        length = int(math.ceil(longest / self.pad_to_multiple_of) * self.pad_to_multiple_of)
        input_ids = torch.full((len(examples), length), self.pad_token_id, dtype=torch.long)
        token_type_ids = torch.zeros((len(examples), length), dtype=torch.long)
        attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example["input_ids"])
            input_ids[row, :n] = torch.as_tensor(np.asarray(example["input_ids"], dtype=np.int64))
            token_type_ids[row, :n] = torch.as_tensor(np.asarray(example["token_type_ids"], dtype=np.int64))
            attention_mask[row, :n] = 1
        labels = torch.as_tensor([int(e["next_sentence_label"]) for e in examples], dtype=torch.long)
        return {"input_ids": input_ids, "token_type_ids": token_type_ids,
                "attention_mask": attention_mask, "next_sentence_label": labels}

    def mask(self, input_ids: Any, generator: Any = None) -> dict[str, Any]:
        """Choose and corrupt positions of ``input_ids`` (changed in place); return the labels."""
        import torch

        original = input_ids.clone()
        candidates = input_ids >= self.num_special_tokens
        if self.whole_word:
            chosen = self._choose_whole_words(input_ids, candidates, generator)
        else:
            draws = torch.rand(input_ids.shape, generator=generator)
            chosen = candidates & (draws < self.mlm_probability)
        action = torch.rand(input_ids.shape, generator=generator)
        random_tokens = torch.randint(self.num_special_tokens, self.vocab_size, input_ids.shape, generator=generator)
        replace_with_mask = chosen & (action < 0.8)
        replace_with_random = chosen & (action >= 0.8) & (action < 0.9)
        input_ids[replace_with_mask] = self.mask_token_id
        input_ids[replace_with_random] = random_tokens[replace_with_random]
        labels = torch.where(chosen, original, torch.full_like(original, IGNORE_INDEX))
        masked_positions = torch.nonzero(chosen.flatten(), as_tuple=False).flatten()
        return {"labels": labels, "masked_positions": masked_positions,
                "masked_labels": original.flatten()[masked_positions]}

    def _choose_whole_words(self, input_ids: Any, candidates: Any, generator: Any) -> Any:
        import torch

        if self.continuation is None:
            raise BertpreError("whole-word masking needs the tokenizer's vocabulary; build the collator "
                               "with MaskingCollator.from_tokenizer")
        is_continuation = self.continuation[input_ids.clamp(max=len(self.continuation) - 1)] & candidates
        follows_candidate = torch.zeros_like(candidates)
        follows_candidate[:, 1:] = candidates[:, :-1]
        # A "##" piece right after [SEP] or at a truncated start begins its own word.
        word_start = candidates & (~is_continuation | ~follows_candidate)
        # A word id per token: the running count of word starts; continuation pieces share it.
        word_ids = torch.cumsum(word_start.long().flatten(), 0).view_as(input_ids)
        word_draws = torch.rand(int(word_ids.max().item()) + 1, generator=generator)
        chosen_words = word_draws < self.mlm_probability
        return candidates & chosen_words[word_ids] & (word_ids > 0)
