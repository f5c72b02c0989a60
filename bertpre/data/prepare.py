"""Stage 2, `bertpre prepare`: raw corpora → tokenized next-sentence pairs (or MLM-only segments), as sharded
memory-mapped Arrow.

``prepare_pretraining_data`` runs in three passes over flat arrays on disk, so memory stays bounded
whatever the corpus size, with every core busy in the two long ones:

1. read documents, split paragraphs into sentences and tokenize them with `tokenizers` in large batches,
   a file or a batch of documents per task (``bertpre/data/tokenize_documents.py``), into a token
   store (``bertpre/data/token_store.py``);
2. hold out whole documents for evaluation, by a hash of their text;
3. create next-sentence pairs following Devlin et al.'s ``create_pretraining_data.py``, a run of
   documents per task (``bertpre/data/pair_rows.py``), and write each split's Arrow files
   (``bertpre/data/pair_files.py``); with ``--examples segments``, cut each document into MLM-only
   segments of whole sentences instead (``bertpre/data/segments.py``), in the same tasks and files.

Every random choice for a document comes from a generator seeded by (seed, shard, pass, document
index), and results are joined in task order, so the output is byte-identical for any number of
worker processes. The output format is read by ``bertpre/data/dataset.py``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from bertpre.core.config import save_config
from bertpre.core.configs import PrepareConfig, file_size_in_bytes
from bertpre.core.errors import BertpreError
from bertpre.core.io import atomic_directory, check_apart_from_inputs, check_writable_output, disk_errors_named
from bertpre.core.locking import output_lock
from bertpre.core.parallel import WorkerPool
from bertpre.core.resolve import tokenizer_directory
from bertpre.data import pair_files, pair_rows, tokenize_documents
from bertpre.data.dataset import token_id_type
from bertpre.data.decontamination import ContaminationFilter, describe_decontamination
from bertpre.data.metadata import CONFIG_FILE, TOKENIZER_DIR, ShardMetadata, TokenizerInfo
from bertpre.data.pair_files import SplitRows, write_split, write_split_descriptions
from bertpre.data.pair_rows import GROUP, PairReport, PairSettings, PairTask
from bertpre.data.token_store import StoreJoiner, TokenStore, append_files
from bertpre.readers.corpus import CorpusStats, resolve_inputs, warn_about_replaced_bytes
from bertpre.tokenizer.backend import BackendTokenizer, load_backend_tokenizer
from bertpre.tokenizer.files import copy_tokenizer_files, vocab_file_tokens, vocabulary_digest

TOKENS_PER_PAIR_TASK = 250_000
"""Documents are dealt to pass 3 in runs of about this many tokens (whole groups of 32 documents)."""


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
    corpus_tokens: int = 0  # of every sentence, before pairing (``tokens`` counts the pairs', specials included)
    decontamination: dict[str, Any] = field(default_factory=dict)  # ContaminationFilter.report(): what --decontaminate dropped
    examples: str = "pairs"  # PrepareConfig.examples; prepare.json records it beside the summary, not in it

    def table(self) -> str:
        """A human-readable summary with the length histogram."""
        docs_per_second = self.documents / max(self.seconds, 1e-9)
        tokens_per_second = self.tokens / max(self.seconds, 1e-9)
        kind = self.examples
        lines = [f"dataset          {self.output}", *self._layout_lines(),
            f"documents        {self.documents:,} ({self.train_documents:,} train, {self.eval_documents:,} eval)",
            f"sentences        {self.sentences:,}",
            f"{kind:<16} {self.train_pairs + self.eval_pairs:,} ({self.train_pairs:,} train, {self.eval_pairs:,} eval)",
            f"tokens           {self.tokens:,} in {kind} ({self.corpus_tokens:,} in the corpus)",
            *([f"IsNext ratio     {self.is_next_ratio:.3f}"] if kind == "pairs" else []),
            f"padding at {self.max_seq_length:<5} {self.padding_fraction:.1%}",
            f"wall time        {self.seconds:.1f} s with {self.workers} worker{'s' if self.workers != 1 else ''} "
            f"({docs_per_second:,.0f} docs/s, {tokens_per_second:,.0f} tokens/s, "
            f"{tokens_per_second / self.workers:,.0f} tokens/s per worker)",
        ]
        if self.duplicate_lines:
            lines.append(f"duplicates       {self.duplicate_lines:,} lines dropped")
        if self.replaced_lines:
            lines.append(f"replaced         {self.replaced_lines:,} lines had undecodable bytes")
        lines += describe_decontamination(self.decontamination)
        lines.append(f"{kind[:-1]} length (tokens incl. specials):")
        largest = max(self.length_histogram.values(), default=1) or 1
        for bucket, count in self.length_histogram.items():
            lines.append(f"  {bucket:>9}  {count:>9,}  {'#' * max(1 if count else 0, round(40 * count / largest))}")
        lines += [f"warning: {warning}" for warning in self.warnings]
        return "\n".join(lines)

    def record(self) -> dict[str, Any]:
        """The summary as prepare.json holds it: for segments, the counts named so (``train_segments``,
        ``eval_segments``) and no IsNext ratio. Pairs keep the keys they always had, so that the fingerprint
        of data prepared before segments existed is the same as of that data prepared again."""
        record = {name: value for name, value in vars(self).items() if name != "examples"}
        if self.examples == "segments":
            record = {SEGMENT_KEYS.get(name, name): value for name, value in record.items() if name != "is_next_ratio"}
        return record

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


SEGMENT_KEYS = {"train_pairs": "train_segments", "eval_pairs": "eval_segments"}
"""The summary's counts of rows, as prepare.json names them for segments."""


def prepare_pretraining_data(config: PrepareConfig, show_progress: bool = True) -> PrepareSummary:
    """Turn ``config.inputs`` into train/eval next-sentence pairs (or segments, ``config.examples``) saved under
    ``config.output``.

    The result is written to a temporary sibling directory and renamed into place at the end, so a
    failed or interrupted run never leaves a partial dataset where a complete one is expected; the
    output is locked meanwhile (one writer).
    """
    with output_lock(config.output):
        return _prepare(config, show_progress)


def _prepare(config: PrepareConfig, show_progress: bool) -> PrepareSummary:
    started = time.perf_counter()
    output = Path(config.output)
    config = dataclasses.replace(config, tokenizer=str(tokenizer_directory(config.tokenizer)))
    sources = _sources_of_this_shard(config)
    check_apart_from_inputs(output, {"--inputs": [*config.inputs, *sources], "--tokenizer": [config.tokenizer],
                                     "--decontaminate": list(config.decontaminate)})
    check_writable_output(output, config.overwrite, kind="prepared dataset")
    tokenizer, tokenizer_info = _check_tokenizer(config)
    contamination = ContaminationFilter.from_files(config.decontaminate)  # read and checked before the corpus
    workers = config.num_workers or os.cpu_count() or 1
    id_type = token_id_type(tokenizer_info.vocab_size)
    with disk_errors_named(output), atomic_directory(output, overwrite=config.overwrite) as staging:
        scratch = staging / "scratch"
        store, stats = _tokenized_documents(config, sources, scratch, workers, tokenizer, id_type, show_progress,
                                            contamination)
        try:
            eval_documents = _held_out_documents(store, config.eval_fraction)
            counts = _DocumentCounts.of(store, eval_documents)
            splits = {"train": store.document_count - len(eval_documents), "eval": len(eval_documents)}
            if config.examples == "pairs":
                _refuse_if_no_pairs(config, counts.pairable["train"], splits["train"])
            written = _pairs_of_each_split(config, store, eval_documents, counts, staging, tokenizer_info, workers,
                                           show_progress)
        finally:
            store.close()
        summary = _summarize(config, output, counts, splits, written, time.perf_counter() - started, workers, stats)
        summary.decontamination = contamination.report()
        _write_metadata(staging, config, tokenizer_info, summary)
        shutil.rmtree(scratch)
    summary.seconds = time.perf_counter() - started
    return summary


def _check_tokenizer(config: PrepareConfig) -> tuple[BackendTokenizer, TokenizerInfo]:
    tokenizer = load_backend_tokenizer(config.tokenizer)
    vocab = tokenizer.vocab
    vocab_txt = Path(config.tokenizer) / "vocab.txt"
    if vocab_txt.exists():
        if vocab_file_tokens(vocab_txt) != sorted(vocab, key=vocab.__getitem__):
            raise BertpreError(f"{vocab_txt}: does not match {config.tokenizer}/tokenizer.json "
                               "(mixed files from two tokenizers?); retrain or copy both together")
    for name in ("pad", "cls", "sep", "mask"):
        if tokenizer.special_ids[name] is None:
            raise BertpreError(f"{config.tokenizer}: tokenizer has no {name}_token; is it a BERT WordPiece tokenizer?")
    model_max = tokenizer.model_max_length or 512
    if config.max_seq_length > model_max:
        raise BertpreError(f"max_seq_length: {config.max_seq_length} exceeds the tokenizer's "
                           f"model_max_length {model_max} (the model's position embeddings)")
    digest = vocabulary_digest(sorted(vocab, key=vocab.__getitem__))
    ids = tokenizer.special_ids
    return tokenizer, TokenizerInfo(path=str(Path(config.tokenizer).resolve()), vocab_size=len(tokenizer),
                                    vocab_sha256=digest, cls_id=ids["cls"], sep_id=ids["sep"], pad_id=ids["pad"],
                                    mask_id=ids["mask"])


def _sources_of_this_shard(config: PrepareConfig) -> list[str]:
    sources = resolve_inputs(config.inputs)
    index, count = config.shard_index_and_count()
    if count == 1:
        return sources
    if count > len(sources):
        raise BertpreError(f"shard: {count} shards but only {len(sources)} input files; use at most {len(sources)}")
    return sources[index::count]


def _progress(items: Iterable, total: Optional[int], description: str, show: bool) -> Iterable:
    if not show:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc=description, unit=" tasks", leave=False)


# ---- pass 1: documents → tokenized sentences -------------------------------------------------


def _tokenized_documents(config: PrepareConfig, sources: list[str], scratch: Path, workers: int,
                         tokenizer: BackendTokenizer, id_type: str, show_progress: bool,
                         contamination: ContaminationFilter) -> tuple[TokenStore, CorpusStats]:
    settings = tokenize_documents.TokenizeSettings(config=dict(vars(config)), tokenizer_json=tokenizer.json,
                                                   id_dtype=id_type, contamination=contamination)
    stats = CorpusStats()
    joiner = StoreJoiner(scratch / "documents")
    read = 0
    tasks = tokenize_documents.document_tasks(config, sources, workers, scratch / "fragments")
    with WorkerPool(workers, tokenize_documents.start_worker, (settings,)) as pool:
        for report in _progress(pool.map_ordered(tokenize_documents.tokenize_task, tasks), None, "tokenizing",
                                show_progress):
            joiner.append(Path(report.fragment))
            tokenize_documents.add_report(stats, report)
            contamination.add(report.contamination)
            read += report.read
    joiner.close()
    if read == 0:
        raise BertpreError(f"{', '.join(config.inputs)}: the corpus is empty (no text after cleaning)")
    warn_about_replaced_bytes(stats)
    stats.documents = joiner.documents
    return TokenStore(scratch / "documents", np.dtype(id_type)), stats


# ---- pass 2: hold out whole documents --------------------------------------------------------


def _held_out_documents(store: TokenStore, eval_fraction: float) -> np.ndarray:
    """Pick eval documents by a hash of their text: those of the smallest hashes (ties: the earlier document);
    their indices in the store, ascending. Read a block at a time: only the chosen ones are held.

    Stable under worker counts, input order and the corpus's location: the same corpus read from
    another directory or node gives the same split (identical documents also land on the same side).
    """
    count = store.document_count
    if eval_fraction == 0 or count < 4:
        return np.zeros(0, np.int64)
    n_eval = min(count - 2, max(2, round(eval_fraction * count)))
    keys, indices = np.zeros(0, np.int64), np.zeros(0, np.int64)
    for first, block in store.key_blocks():
        keys = np.concatenate([keys, block])
        indices = np.concatenate([indices, np.arange(first, first + len(block))])
        smallest = np.lexsort((indices, keys))[:n_eval]  # as a stable sort of all keys would take them
        keys, indices = keys[smallest], indices[smallest]
    return np.sort(indices)


@dataclass
class _DocumentCounts:
    """Sentence counts of the documents, summed up: what the summary and the refusals need."""

    sentences: int
    single_sentence: int
    pairable: dict[str, int]  # documents with the two sentences a pair needs, per split
    tokens: int = 0

    @classmethod
    def of(cls, store: TokenStore, eval_documents: np.ndarray) -> "_DocumentCounts":
        sentences = single = 0
        pairable = {"train": 0, "eval": 0}
        for first, counts in store.sentence_count_blocks():
            is_eval = np.isin(np.arange(first, first + len(counts)), eval_documents)
            sentences += int(counts.sum())
            single += int((counts == 1).sum())
            pairable["train"] += int((counts[~is_eval] >= 2).sum())
            pairable["eval"] += int((counts[is_eval] >= 2).sum())
        return cls(sentences, single, pairable, store.token_count())


def _refuse_if_no_pairs(config: PrepareConfig, pairable: int, count: int) -> None:
    if not pairable:
        raise BertpreError(f"{', '.join(config.inputs)}: no next-sentence pairs: each of the {count:,} "
                           f"training documents is a single sentence; {_FIX_BOUNDARIES}")


def _refuse_too_few(config: PrepareConfig, count: int, split: str) -> None:
    if count < 2:
        raise BertpreError(f"{', '.join(config.inputs)}: only {count} document in the {split} split; "
                           "next-sentence pairs need at least two (random next segments come from other "
                           "documents); add text or check --document-boundary")


# ---- pass 3: pairs ---------------------------------------------------------------------------


def _pairs_of_each_split(config: PrepareConfig, store: TokenStore, eval_documents: np.ndarray,
                         counts: _DocumentCounts, staging: Path, tokenizer_info: TokenizerInfo, workers: int,
                         show_progress: bool) -> dict[str, SplitRows]:
    """Pass 3 for the training split and the held-out one (when it has documents to make examples of); their
    Arrow files."""
    scratch = staging / "scratch"
    id_type = token_id_type(tokenizer_info.vocab_size)
    np.save(scratch / "eval-documents.npy", eval_documents)
    settings = PairSettings(
        store=str(store.directory), id_dtype=id_type, eval_documents=str(scratch / "eval-documents.npy"),
        max_seq_length=config.max_seq_length, short_seq_prob=config.short_seq_prob,
        random_next_prob=config.random_next_prob, seed=config.seed, shard_index=config.shard_index_and_count()[0],
        cls_id=tokenizer_info.cls_id, sep_id=tokenizer_info.sep_id)
    splits = {"train": store.document_count - len(eval_documents), "eval": len(eval_documents)}
    written: dict[str, SplitRows] = {}
    import pyarrow  # noqa: F401 - once, here: forked workers that write files find it imported
    with WorkerPool(workers, pair_rows.start_worker, (settings,)) as pool:
        try:
            for split, count in splits.items():
                if config.examples == "pairs":
                    if not count or not counts.pairable[split]:
                        continue
                    _refuse_too_few(config, count, split)
                elif not count:
                    continue
                written[split] = _create_pairs(pool, store, split, count, config, scratch, id_type, show_progress)
                _write_split_files(pool, written[split], staging / split, config.max_shard_size, split,
                                   config.examples)
        finally:
            pair_rows.close_worker()  # the one-worker run opened the store in this process
    return written


def _pair_tasks(store: TokenStore, split: str, count: int, dupe_factor: int, fragments: Path) -> Iterator[PairTask]:
    mean_tokens = max(1.0, store.token_count() / max(1, store.document_count))
    per_task = GROUP * max(1, round(TOKENS_PER_PAIR_TASK / (GROUP * mean_tokens)))
    number = 0
    for dupe_pass in range(dupe_factor):
        for first in range(0, count, per_task):
            yield PairTask(split, dupe_pass, first, min(first + per_task, count), str(fragments / f"{number:09d}"))
            number += 1


def _create_pairs(pool: WorkerPool, store: TokenStore, split: str, count: int, config: PrepareConfig,
                  scratch: Path, id_type: str, show_progress: bool) -> SplitRows:
    directory = scratch / f"{split}-pairs"
    directory.mkdir()
    tasks = list(_pair_tasks(store, split, count, config.dupe_factor, scratch / f"{split}-fragments"))
    group_rows: list[list[int]] = [[] for _ in range(config.dupe_factor)]
    rows = tokens = 0
    task_function = pair_rows.segment_task if config.examples == "segments" else pair_rows.pair_task
    with append_files(directory, [pair_rows.VALUES, pair_rows.TYPES, *pair_rows.ROW_COLUMNS]) as append:
        reports: Iterable[PairReport] = pool.map_ordered(task_function, tasks)
        for task, report in zip(tasks, _progress(reports, len(tasks), f"{split} {config.examples}", show_progress)):
            append(Path(report.fragment))
            group_rows[task.dupe_pass] += report.group_rows
            rows += report.rows
            tokens += report.tokens
    return SplitRows(directory, id_type, rows, tokens, group_rows)


def _write_split_files(pool: WorkerPool, split_rows: SplitRows, output: Path, max_shard_size: str, split: str,
                       examples: str) -> None:
    output.mkdir()
    size = file_size_in_bytes(max_shard_size)
    shards = len(pair_files.layout(split_rows.rows, split_rows.nbytes(), size).shards)
    for _ in pool.map_ordered(_write_shard, [(split_rows, output, size, index) for index in range(shards)]):
        pass
    write_split_descriptions(split_rows, output, size, split, examples)


def _write_shard(arguments: tuple[SplitRows, Path, int, int]) -> Path:
    return write_split(*arguments)


# ---- summary and metadata --------------------------------------------------------------------


def _summarize(config: PrepareConfig, output: Path, counts: _DocumentCounts, splits: dict[str, int],
               written: dict[str, SplitRows], seconds: float, workers: int, stats: CorpusStats) -> PrepareSummary:
    documents = splits["train"] + splits["eval"]
    pairs = _PairCounts.of(written.values(), config.max_seq_length)
    summary = PrepareSummary(
        output=str(output), documents=documents, sentences=counts.sentences,
        train_documents=splits["train"], eval_documents=splits["eval"],
        train_pairs=written["train"].rows, eval_pairs=written["eval"].rows if "eval" in written else 0,
        tokens=pairs.tokens, is_next_ratio=pairs.is_next / pairs.rows if pairs.rows else 0.0,
        length_histogram=pairs.histogram,
        padding_fraction=float(1 - pairs.tokens / (pairs.rows * config.max_seq_length)) if pairs.rows else 0.0,
        max_seq_length=config.max_seq_length, seconds=seconds, workers=workers,
        replaced_lines=stats.replaced_lines, duplicate_lines=stats.duplicate_lines,
        single_sentence_documents=counts.single_sentence / documents if documents else 0.0,
        layouts=dict(stats.layouts), corpus_tokens=counts.tokens, examples=config.examples)
    summary.warnings = _warnings(summary)
    return summary


@dataclass
class _PairCounts:
    """Pairs, their tokens, IsNext ones and the length histogram, summed a block of pairs at a time."""

    rows: int
    tokens: int
    is_next: int
    histogram: dict[str, int]

    @classmethod
    def of(cls, splits: Iterable[SplitRows], max_seq_length: int, block: int = 2**22) -> "_PairCounts":
        edges = sorted({0, *[max_seq_length * k // 8 for k in range(1, 8)], max_seq_length})
        totals = cls(0, 0, 0, {f"{low + 1}-{high}": 0 for low, high in zip(edges[:-1], edges[1:])})
        for split_rows in splits:
            for first in range(0, split_rows.rows, block):
                count = min(block, split_rows.rows - first)
                lengths = np.fromfile(split_rows.directory / pair_rows.LENGTHS, np.int32, count, offset=first * 4)
                labels = np.fromfile(split_rows.directory / pair_rows.LABELS, np.int8, count, offset=first)
                totals.rows += count
                totals.tokens += int(lengths.sum(dtype=np.int64))
                totals.is_next += int((labels == 0).sum())
                for (low, high), bucket in zip(zip(edges[:-1], edges[1:]), totals.histogram):
                    totals.histogram[bucket] += int(((lengths > low) & (lengths <= high)).sum())
        return totals


SINGLE_SENTENCE_WARNING = 0.5
PADDING_WARNING = 0.2
_FIX_BOUNDARIES = ("check how the inputs were read (above) and set --document-boundary or --line-format for text "
                   "files, --rows sentences or --document-column for tables")


def _warnings(summary: PrepareSummary) -> list[str]:
    """What looks wrong with the documents, and what to do about it."""
    warnings = []
    if summary.examples == "pairs" and summary.single_sentence_documents > SINGLE_SENTENCE_WARNING:
        warnings.append(f"{summary.single_sentence_documents:.0%} of the documents are a single sentence: they give "
                        f"no next-sentence pairs; {_FIX_BOUNDARIES}")
    if summary.padding_fraction > PADDING_WARNING and summary.examples == "segments":
        warnings.append(f"{summary.padding_fraction:.0%} of every batch would be padding: the documents are shorter "
                        "than --max-seq-length; train with `bertpre pretrain --packing true` (several segments a row)")
    elif summary.padding_fraction > PADDING_WARNING:
        warnings.append(f"{summary.padding_fraction:.0%} of every batch would be padding: documents look cut short; "
                        f"{_FIX_BOUNDARIES}, or lower --max-seq-length")
    return warnings


def _write_metadata(directory: Path, config: PrepareConfig, tokenizer_info: TokenizerInfo,
                    summary: PrepareSummary) -> None:
    ShardMetadata(directory, config.max_seq_length, tokenizer_info, config.shard, summary.record(),
                  examples=config.examples).write()
    save_config(config, directory / CONFIG_FILE)
    (directory / TOKENIZER_DIR).mkdir()
    copy_tokenizer_files(config.tokenizer, directory / TOKENIZER_DIR)
