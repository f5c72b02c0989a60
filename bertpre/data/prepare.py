"""Stage 2, `bertpre prepare`: raw corpora → tokenized next-sentence pairs, as sharded memory-mapped Arrow.

``prepare_pretraining_data`` runs in three passes, each spread over all cores with `datasets`
and each written to memory-mapped Arrow files, so memory stays bounded whatever the corpus size:

1. read documents, split paragraphs into sentences, tokenize them in batches;
2. hold out whole documents for evaluation;
3. create next-sentence pairs following Devlin et al.'s ``create_pretraining_data.py``.

Every random choice for a document comes from a generator seeded by (seed, pass, document index),
so the output is byte-identical for any number of worker processes. The output format is read by
``bertpre/data/dataset.py``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from bertpre.core.config import save_config
from bertpre.core.configs import PrepareConfig
from bertpre.readers.corpus import CorpusStats, read_documents, resolve_inputs, warn_about_replaced_bytes
from bertpre.data.dataset import token_id_type
from bertpre.data.metadata import CONFIG_FILE, TOKENIZER_DIR, ShardMetadata, TokenizerInfo
from bertpre.core.errors import BertpreError
from bertpre.core.io import atomic_directory, check_apart_from_inputs, check_writable_output, disk_errors_named
from bertpre.core.locking import output_lock
from bertpre.data.pairs import create_next_sentence_pairs, document_rng, pair_to_features
from bertpre.core.resolve import tokenizer_directory
from bertpre.core.seeding import stable_hash64
from bertpre.readers.sentences import split_sentences
from bertpre.tokenizer.files import copy_tokenizer_files, load_tokenizer, vocab_file_tokens, vocabulary_digest

# Documents held in memory between writes to disk: `datasets` defaults to 1,000 rows, which is a
# whole corpus of book-length documents; 64 keeps memory flat whatever the document length.
DOCUMENTS_PER_WRITE = 64


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
    single_sentence_documents: float = 0.0
    layouts: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def table(self) -> str:
        """A human-readable summary with the length histogram."""
        docs_per_second = self.documents / max(self.seconds, 1e-9)
        tokens_per_second = self.tokens / max(self.seconds, 1e-9)
        lines = [f"dataset          {self.output}", *self._layout_lines(),
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
        lines += [f"warning: {warning}" for warning in self.warnings]
        return "\n".join(lines)

    def _layout_lines(self, examples: int = 3) -> list[str]:
        """What was detected in the inputs: each layout with how many inputs have it and a few of them."""
        by_layout: dict[str, list[str]] = {}
        for source, layout in self.layouts.items():
            by_layout.setdefault(layout, []).append(Path(source).name or source)
        lines = []
        for layout, sources in sorted(by_layout.items(), key=lambda item: -len(item[1])):
            shown = ", ".join(sources[:examples]) + (f", … ({len(sources)} inputs)" if len(sources) > examples else "")
            lines.append(f"{'read as' if not lines else '':<16} {layout}: {shown}")
        return lines


def prepare_pretraining_data(config: PrepareConfig, show_progress: bool = True) -> PrepareSummary:
    """Turn ``config.inputs`` into train/eval next-sentence pairs saved under ``config.output``.

    The result is written to a temporary sibling directory and renamed into place at the end, so a
    failed or interrupted run never leaves a partial dataset where a complete one is expected; the
    output is locked meanwhile (one writer).
    """
    with output_lock(config.output):
        return _prepare(config, show_progress)


def _prepare(config: PrepareConfig, show_progress: bool) -> PrepareSummary:
    import datasets

    started = time.perf_counter()
    output = Path(config.output)
    config = dataclasses.replace(config, tokenizer=str(tokenizer_directory(config.tokenizer)))
    sources = _sources_of_this_shard(config)
    check_apart_from_inputs(output, {"--inputs": [*config.inputs, *sources], "--tokenizer": [config.tokenizer]})
    check_writable_output(output, config.overwrite, kind="prepared dataset")
    tokenizer_info = _check_tokenizer(config)
    workers = config.num_workers or os.cpu_count() or 1
    if not show_progress:
        datasets.disable_progress_bars()
    with disk_errors_named(output), atomic_directory(output, overwrite=config.overwrite) as staging:
        stats = CorpusStats()
        documents = _tokenized_documents(config, sources, staging, workers, stats, tokenizer_info.vocab_size)
        train_docs, eval_docs = _split_documents(documents, config.eval_fraction, staging)
        summary_parts = {}
        _refuse_if_no_pairs(config, train_docs)
        for split, docs in (("train", train_docs), ("eval", eval_docs)):
            if docs is None or not _pairable_documents(docs):
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


def _check_tokenizer(config: PrepareConfig) -> TokenizerInfo:
    tokenizer = load_tokenizer(config.tokenizer)
    vocab = tokenizer.get_vocab()
    vocab_txt = Path(config.tokenizer) / "vocab.txt"
    if vocab_txt.exists():
        if vocab_file_tokens(vocab_txt) != sorted(vocab, key=vocab.__getitem__):
            raise BertpreError(f"{vocab_txt}: does not match {config.tokenizer}/tokenizer.json "
                               "(mixed files from two tokenizers?); retrain or copy both together")
    model_max = getattr(tokenizer, "model_max_length", 512) or 512
    if config.max_seq_length > model_max:
        raise BertpreError(f"max_seq_length: {config.max_seq_length} exceeds the tokenizer's "
                           f"model_max_length {model_max} (the model's position embeddings)")
    digest = vocabulary_digest(sorted(vocab, key=vocab.__getitem__))
    return TokenizerInfo(path=str(Path(config.tokenizer).resolve()), vocab_size=len(tokenizer), vocab_sha256=digest,
                         cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id, pad_id=tokenizer.pad_token_id,
                         mask_id=tokenizer.mask_token_id)


def _sources_of_this_shard(config: PrepareConfig) -> list[str]:
    sources = resolve_inputs(config.inputs)
    index, count = config.shard_index_and_count()
    if count == 1:
        return sources
    if count > len(sources):
        raise BertpreError(f"shard: {count} shards but only {len(sources)} input files; use at most {len(sources)}")
    return sources[index::count]


# ---- pass 1: documents → tokenized sentences -------------------------------------------------


def _read_shard_documents(sources: list[str], config_dict: dict[str, Any]) -> Iterator[dict[str, Any]]:
    config = PrepareConfig(**config_dict)
    stats = CorpusStats()
    reported = (0, 0)
    described: set[str] = set()
    for document in read_documents(config, sources, stats):
        # Counts and layouts travel with the rows: this generator may run in another process.
        counts = (stats.replaced_lines, stats.duplicate_lines)
        layouts = [f"{source}\t{layout}" for source, layout in stats.layouts.items() if source not in described]
        described.update(stats.layouts)
        yield {"paragraphs": document.paragraphs, "sentences_given": document.sentences, "layouts": layouts,
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
    sentences_per_doc = [list(paragraphs) if given else [s for paragraph in paragraphs for s in split_sentences(paragraph)]
                         for paragraphs, given in zip(batch["paragraphs"], batch["sentences_given"])]
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
    return stable_hash64("\n".join(paragraphs)) >> 1  # fits int64, which Arrow stores without fuss


def _tokenized_documents(config: PrepareConfig, sources: list[str], staging: Path, workers: int,
                         stats: CorpusStats, vocab_size: int):  # noqa: ANN202 - datasets.Dataset
    import datasets

    id_type = token_id_type(vocab_size)
    # Reading runs in parallel over files; global de-duplication needs one reader to stay exact.
    read_workers = 1 if config.deduplicate else min(workers, len(sources))
    cache = str(staging / "hf-cache")
    config_dict = {k: v for k, v in vars(config).items()}
    features = datasets.Features({"paragraphs": datasets.Sequence(datasets.Value("string")),
                                  "sentences_given": datasets.Value("bool"),
                                  "layouts": datasets.Sequence(datasets.Value("string")),
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
    stats.layouts = dict(entry.split("\t", 1) for entries in raw["layouts"] for entry in entries)
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


# ---- pass 2: hold out whole documents --------------------------------------------------------


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


# ---- pass 3: pairs ---------------------------------------------------------------------------


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


def _create_pairs(documents, config: PrepareConfig, tokenizer_info: TokenizerInfo, path: Path,  # noqa: ANN001, ANN202
                  workers: int, split: str):
    import datasets

    if len(documents) < 2:
        raise BertpreError(f"{', '.join(config.inputs)}: only {len(documents)} document in the {split} split; "
                           "next-sentence pairs need at least two (random next segments come from other "
                           "documents); add text or check --document-boundary")
    id_type = token_id_type(tokenizer_info.vocab_size)
    shard_index, _ = config.shard_index_and_count()
    options = {"dupe_factor": config.dupe_factor, "seed": config.seed, "max_seq_length": config.max_seq_length,
               "short_seq_prob": config.short_seq_prob, "random_next_prob": config.random_next_prob,
               "cls_id": tokenizer_info.cls_id, "sep_id": tokenizer_info.sep_id,
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


# ---- summary and metadata --------------------------------------------------------------------


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
    summary = PrepareSummary(
        output=str(output), documents=len(documents), sentences=int(np.sum(sentence_lengths)),
        train_documents=len(train_docs), eval_documents=len(eval_docs) if eval_docs is not None else 0,
        train_pairs=len(pairs["train"]), eval_pairs=len(pairs["eval"]) if "eval" in pairs else 0,
        tokens=int(lengths.sum()), is_next_ratio=float((labels == 0).mean()) if len(labels) else 0.0,
        length_histogram=_length_histogram(lengths, config.max_seq_length),
        padding_fraction=float(1 - lengths.sum() / (len(lengths) * config.max_seq_length)) if len(lengths) else 0.0,
        max_seq_length=config.max_seq_length, seconds=seconds, workers=workers,
        replaced_lines=stats.replaced_lines, duplicate_lines=stats.duplicate_lines,
        single_sentence_documents=float(np.mean(sentence_lengths == 1)) if len(sentence_lengths) else 0.0,
        layouts=dict(stats.layouts))
    summary.warnings = _warnings(summary)
    return summary


SINGLE_SENTENCE_WARNING = 0.5
PADDING_WARNING = 0.2
_FIX_BOUNDARIES = ("check how the inputs were read (above) and set --document-boundary or --line-format for text "
                   "files, --rows sentences or --document-column for tables")


def _warnings(summary: PrepareSummary) -> list[str]:
    """What looks wrong with the documents, and what to do about it."""
    warnings = []
    if summary.single_sentence_documents > SINGLE_SENTENCE_WARNING:
        warnings.append(f"{summary.single_sentence_documents:.0%} of the documents are a single sentence: they give "
                        f"no next-sentence pairs; {_FIX_BOUNDARIES}")
    if summary.padding_fraction > PADDING_WARNING:
        warnings.append(f"{summary.padding_fraction:.0%} of every batch would be padding: documents look cut short; "
                        f"{_FIX_BOUNDARIES}, or lower --max-seq-length")
    return warnings


def _pairable_documents(documents) -> int:  # noqa: ANN001 - datasets.Dataset
    """How many documents have the two sentences a pair needs."""
    return int((_list_lengths(documents.data.column("sentences")) >= 2).sum())


def _refuse_if_no_pairs(config: PrepareConfig, documents) -> None:  # noqa: ANN001 - datasets.Dataset
    if not _pairable_documents(documents):
        raise BertpreError(f"{', '.join(config.inputs)}: no next-sentence pairs: each of the {len(documents):,} "
                           f"training documents is a single sentence; {_FIX_BOUNDARIES}")


def _list_lengths(column) -> np.ndarray:  # noqa: ANN001 - a pyarrow (chunked) list array
    import pyarrow.compute as pc

    return pc.list_value_length(column).to_numpy(zero_copy_only=False)


def _write_metadata(directory: Path, config: PrepareConfig, tokenizer_info: TokenizerInfo,
                    summary: PrepareSummary) -> None:
    ShardMetadata(directory, config.max_seq_length, tokenizer_info, config.shard, vars(summary)).write()
    save_config(config, directory / CONFIG_FILE)
    (directory / TOKENIZER_DIR).mkdir()
    copy_tokenizer_files(config.tokenizer, directory / TOKENIZER_DIR)
