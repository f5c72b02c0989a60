"""Typed configs for every pipeline stage: one dataclass per command, validated on construction.

The YAML files under ``configs/`` are instances of these classes; ``bertpre/core/config.py`` loads
them (and command-line overrides) strictly.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Optional

from bertpre.core.config import group, option
from bertpre.core.errors import ConfigError
from bertpre.core.glue_tasks import GLUE_TASKS

BUILTIN_PYTHON_DOCS = "builtin:python-docs"
"""The corpus that needs no download: documentation prose of the Python standard library."""

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
"""BERT's special tokens, in the order of their fixed ids: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4."""


def _require_positive(config: Any, *names: str) -> None:
    for name in names:
        if not getattr(config, name) > 0:
            raise ConfigError(f"{name}: must be positive, got {getattr(config, name)}")


SEED_LIMIT = 2**63
"""Seeds are 0 … 2^63 − 1: numpy takes no negative seed, torch none of 64 bits or more."""


def _check_seeds(*seeds: int) -> None:
    for seed in seeds:
        if not 0 <= seed < SEED_LIMIT:
            raise ConfigError(f"seed: {seed} is outside 0 … 2^63 − 1; use a non-negative seed such as 42")


def _require_not_negative(config: Any, *names: str) -> None:
    for name in names:
        if not getattr(config, name) >= 0:
            raise ConfigError(f"{name}: must be 0 or more, got {getattr(config, name)}")


_LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")
_LANGUAGE_CODE = re.compile(r"^([a-z]{2,3}([-_][A-Za-z0-9]{2,8})*|multilingual)$")


def _check_card_metadata(config: Any) -> None:
    """`license` and `language` are written to a model card's metadata: they must be hub identifiers."""
    if config.license is not None and not _LICENSE_ID.match(config.license):
        raise ConfigError(f"license: {config.license!r} is not a Hugging Face license identifier; use one such as "
                          "apache-2.0, mit, cc-by-4.0, or `other`")
    bad = [code for code in config.language if not _LANGUAGE_CODE.match(code)]
    if bad:
        raise ConfigError(f"language: {bad} are not ISO 639 language codes; use codes such as en, de, zh, or "
                          "`multilingual`")


TRACKERS: tuple[str, ...] = ("tensorboard", "wandb", "trackio", "mlflow", "comet_ml", "aim", "clearml", "dvclive",
                             "swanlab")
"""Accelerate's experiment trackers (``accelerate.tracking.LOGGER_TYPE_TO_CLASS``), for ``report_to``."""

_ATTENTION_HELP = ("Attention kernel: sdpa (every device; the reference), flex (flex attention's block masks; "
                   "trains on GPUs, CPU inference only), varlen (CUDA's variable-length kernel on the real tokens, no "
                   "padding anywhere; needs attention dropout 0), or auto: varlen on a GPU when the model has no "
                   "attention dropout, else sdpa.")
_PRECISION_HELP = ("unset: what `accelerate launch` was configured with (its --config_file or `accelerate config`), "
                   "else bf16; CPU runs use fp32 unless this option says bf16.")
_REPORT_TO_HELP = (f"Where metrics go besides metrics.jsonl: {', '.join(TRACKERS)} (several may be given), `all` "
                   "(every one installed) or `none`.")
_RUN_NAME_HELP = "Name of the run in the trackers that name runs [the output directory's name]."
_PROJECT_HELP = "Project (wandb, trackio, comet_ml, swanlab, clearml) or experiment (mlflow) the run is filed under."


def _check_report_to(config: Any) -> None:
    """``report_to``: known tracker names, ``all`` or ``none`` alone; commas separate names too (`a,b`)."""
    names = [name.strip().lower() for item in config.report_to for name in str(item).split(",") if name.strip()]
    for name in names:
        if name not in (*TRACKERS, "all", "none"):
            close = difflib.get_close_matches(name, TRACKERS, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(f"report_to: unknown tracker {name!r}; {hint}choose from {', '.join(TRACKERS)}, "
                              "all or none")
    if "none" in names and len(names) > 1:
        raise ConfigError(f"report_to: `none` cannot be combined with other trackers, got {names}")
    config.report_to = names


# --------------------------------------------------------------------------------------------
# Stage configs
# --------------------------------------------------------------------------------------------


@dataclass
class CorpusConfig:
    """Where raw text comes from and how it is cleaned; shared by `tokenizer` and `prepare`."""

    inputs: list[str] = option([], "Text sources: files, globs, directories, JSONL/Parquet (text and JSONL may be .gz), "
                               "`hf:NAME[:CONFIG][@SPLIT]` hub datasets, `load_from_disk` directories, "
                               "or `builtin:python-docs`.")
    text_column: str = option("text", "Column holding the text in JSONL, Parquet and datasets inputs.")
    document_boundary: Literal["auto", "blank_line", "heading", "file"] = option(
        "auto", "How plain-text files split into documents: `blank_line` (original BERT format), "
        "`heading` (`= Title =` lines), `file` (one document per file), `auto` (detected per file: "
        "headings if it has them, blank lines if they separate several multi-line blocks of whole "
        "sentences or paragraphs, else the file).")
    line_format: Literal["auto", "sentence", "paragraph", "wrapped"] = option(
        "auto", "What a line of a plain-text file holds: `sentence` (original BERT format), `paragraph`, "
        "`wrapped` (hard-wrapped prose: the lines of a blank-line block form one paragraph), `auto` "
        "(detected per file from its first 5,000 lines).")
    rows: Literal["auto", "documents", "sentences"] = option(
        "auto", "What a JSONL, Parquet or datasets row holds: `documents`, or `sentences` (rows are grouped "
        "into documents by document_column, else up to an empty row, else in runs of 1,000); `auto`: "
        "sentences when nearly all of the first 1,000 rows are one sentence.")
    document_column: Optional[str] = option(
        None, "Column naming the document of each row, for rows that are sentences [auto: the first of "
        "document_id, doc_id, book_id, article_id, title that exists].")
    errors: Literal["strict", "replace"] = option(
        "strict", "Undecodable bytes: `strict` stops with the file and byte offset; `replace` "
        "substitutes U+FFFD and reports a count.")
    deduplicate: bool = option(False, "Drop exact-duplicate lines (a known cause of MLM loss stalls).")
    max_documents: Optional[int] = option(None, "Stop after this many documents (all when unset).")

    def __post_init__(self) -> None:
        if self.max_documents is not None and self.max_documents < 1:
            raise ConfigError("max_documents: must be at least 1 (or unset for all documents)")


@dataclass
class TokenizerConfig(CorpusConfig):
    """`bertpre tokenizer train`: a WordPiece vocabulary trained from scratch."""

    output: str = option("runs/tokenizer", "Directory to write the tokenizer to.")
    vocab_size: int = option(30522, "Vocabulary size, special tokens included (BERT: 30,522).")
    min_frequency: int = option(2, "Minimum count for a piece to enter the vocabulary.")
    lowercase: bool = option(True, "Lowercase the text (uncased model).")
    strip_accents: Optional[bool] = option(
        None, "Strip accents; unset follows BERT's convention (strip when lowercasing).")
    limit_alphabet: int = option(1000, "Most single characters kept in the initial alphabet.")
    extra_special_tokens: list[str] = option([], "Special tokens added after the five BERT ones.")
    overwrite: bool = option(False, "Replace a non-empty output directory.")

    @property
    def accents_stripped(self) -> bool:
        """Whether accents are stripped: as set, or BERT's convention (strip when lowercasing)."""
        return self.lowercase if self.strip_accents is None else self.strip_accents

    def __post_init__(self) -> None:
        super().__post_init__()
        specials = len(SPECIAL_TOKENS) + len(self.extra_special_tokens)
        if self.vocab_size <= specials:
            raise ConfigError(f"vocab_size: {self.vocab_size} leaves no room beyond the {specials} "
                              "special tokens; use at least a few hundred")
        if self.min_frequency < 1:
            raise ConfigError("min_frequency: must be at least 1")
        if self.limit_alphabet < 1:
            raise ConfigError("limit_alphabet: must be at least 1")
        clash = set(self.extra_special_tokens) & set(SPECIAL_TOKENS)
        if clash:
            raise ConfigError(f"extra_special_tokens: {sorted(clash)} are already BERT's special tokens")


@dataclass
class PrepareConfig(CorpusConfig):
    """`bertpre prepare`: next-sentence pairs (or MLM-only segments), tokenized, as sharded memory-mapped Arrow data."""

    tokenizer: str = option("tokenizer", "Tokenizer directory (from `bertpre tokenizer train`) or Hugging Face Hub id; "
                            "`tokenizer` is the default uncased WordPiece shipped with bertpre.")
    output: str = option("runs/data", "Directory to write the prepared dataset to.")
    examples: Literal["pairs", "segments"] = option(
        "pairs", "What each example is: `pairs`, BERT's next-sentence pairs ([CLS] A [SEP] B [SEP], B from another "
        "document at random_next_prob, an IsNext label); or `segments`, MLM-only: each document cut at sentence ends "
        "into consecutive [CLS] segment [SEP] of whole sentences up to max_seq_length, nothing from another document, "
        "token types 0 and no next-sentence label (for `pretrain --objective mlm`, best with `--packing true`).")
    max_seq_length: int = option(128, "Length of a pair with its [CLS] and two [SEP] tokens (of a segment with its "
                                 "[CLS] and [SEP]).")
    short_seq_prob: float = option(0.1, "Pairs: probability of a shorter random target length (BERT: 0.1); "
                                   "segments ignore it (each is filled as far as whole sentences allow).")
    random_next_prob: float = option(0.5, "Pairs: probability that segment B comes from another document.")
    dupe_factor: int = option(1, "Passes over the corpus, each with different random pair choices (segments: 1 "
                              "only, as every pass would cut them the same way).")
    seed: int = option(12345, "Seed of every random choice; same input + seed → same bytes.")
    eval_fraction: float = option(0.01, "Fraction of documents held out for evaluation (at least 2 "
                                  "documents when non-zero).")
    num_workers: int = option(0, "Processes for reading, tokenizing and pairing; 0 = all cores.")
    shard: Optional[str] = option(None, "Prepare slice `i/N` of the input files (0-based), for many "
                                  "machines in parallel; write each to its own output.")
    max_shard_size: str = option("500MB", "Largest Arrow file written per split.")
    decontaminate: list[str] = option([], "Evaluation files (GLUE TSVs, CSV, JSONL, Parquet, hf:NAME@SPLIT): drop "
                                      "every document that shares a 13-word sequence with one of their texts (every "
                                      "string cell; texts of 8-12 words count whole), compared lowercased, without "
                                      "accents, punctuation or Penn-Treebank token splits.")
    overwrite: bool = option(False, "Replace an existing prepared dataset.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 8 <= self.max_seq_length <= 8192:
            raise ConfigError(f"max_seq_length: {self.max_seq_length} is outside 8…8192")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise ConfigError(f"short_seq_prob: must be in [0, 1], got {self.short_seq_prob}")
        for name in ("random_next_prob", "eval_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name}: must be in [0, 1), got {getattr(self, name)}")
        if self.dupe_factor < 1:
            raise ConfigError("dupe_factor: must be at least 1")
        if self.examples == "segments" and self.dupe_factor > 1:
            raise ConfigError(f"dupe_factor: {self.dupe_factor} with examples segments would only repeat them (a "
                              "document is cut the same way on every pass, and masking is drawn afresh at every "
                              "step); pass --dupe-factor 1 and train for more steps instead")
        _check_seeds(self.seed)
        if self.num_workers < 0:
            raise ConfigError("num_workers: must be 0 (all cores) or more")
        if self.shard is not None:
            self.shard_index_and_count()
        file_size_in_bytes(self.max_shard_size)

    def shard_index_and_count(self) -> tuple[int, int]:
        """``(i, N)`` from ``shard: i/N``; ``(0, 1)`` when unsharded."""
        if self.shard is None:
            return 0, 1
        try:
            index, count = (int(part) for part in self.shard.split("/"))
        except ValueError:
            raise ConfigError(f"shard: expected i/N such as 3/16, got {self.shard!r}") from None
        if not 0 <= index < count:
            raise ConfigError(f"shard: index {index} is outside 0…{count - 1}")
        return index, count


_SIZE_UNITS = {"PIB": 2**50, "TIB": 2**40, "GIB": 2**30, "MIB": 2**20, "KIB": 2**10,
               "PB": 10**15, "TB": 10**12, "GB": 10**9, "MB": 10**6, "KB": 10**3}


def file_size_in_bytes(size: str | int) -> int:
    """``500MB`` as 500,000,000, ``1GiB`` as 2**30 (and ``8Mb`` as bits), as `datasets` reads ``max_shard_size``."""
    if isinstance(size, int):
        return size
    text = str(size).strip()
    for unit, factor in _SIZE_UNITS.items():
        if text.upper().endswith(unit) and text[:-len(unit)].strip().isdigit() and int(text[:-len(unit)]) > 0:
            value = int(text[:-len(unit)]) * factor
            return value // 8 if len(unit) == 2 and text.endswith("b") else value
    raise ConfigError(f"max_shard_size: {size!r} is not a size; use a number with a unit, such as 500MB or 1GiB")


MODEL_SIZES: dict[str, dict[str, Any]] = {
    # name: BERT's standard shapes (Devlin et al. 2018; Turc et al. 2019); configs/model/*.yaml match.
    "tiny": {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 512},
    "mini": {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024},
    "small": {"num_hidden_layers": 4, "hidden_size": 512, "num_attention_heads": 8, "intermediate_size": 2048},
    "medium": {"num_hidden_layers": 8, "hidden_size": 512, "num_attention_heads": 8, "intermediate_size": 2048},
    "base": {"num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072},
    "large": {"num_hidden_layers": 24, "hidden_size": 1024, "num_attention_heads": 16, "intermediate_size": 4096},
    # ModernBERT (Warner et al. 2024): base is ModernBERT-base's shape; the smaller ones keep its recipe (no
    # dropout, LayerNorm ε 1e-5, a global layer every third, a GeGLU feed-forward 1.5 × hidden wide), with
    # about BERT-tiny/mini/small's parameters in the layers. configs/model/modernbert-*.yaml match.
    **{f"modernbert-{size}": {"architecture": "modernbert", "num_hidden_layers": layers, "hidden_size": hidden,
                              "num_attention_heads": heads, "intermediate_size": intermediate,
                              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "layer_norm_eps": 1e-5,
                              "max_position_embeddings": 8192}
       for size, layers, hidden, heads, intermediate in (("tiny", 4, 128, 2, 192), ("mini", 6, 256, 4, 384),
                                                         ("small", 10, 512, 8, 768), ("base", 22, 768, 12, 1152))},
}


@dataclass
class ModelConfig:
    """The encoder's shape; the same fields as `transformers.BertConfig`, with BERT's defaults."""

    vocab_size: int = option(30522, "Vocabulary size; must equal the tokenizer's.")
    hidden_size: int = option(768, "Width of the hidden states.")
    num_hidden_layers: int = option(12, "Number of encoder layers.")
    num_attention_heads: int = option(12, "Attention heads per layer; must divide hidden_size.")
    intermediate_size: int = option(3072, "Width of the feed-forward layer (BERT: 4 × hidden).")
    hidden_act: Literal["gelu", "gelu_new", "relu"] = option("gelu", "Feed-forward activation.")
    hidden_dropout_prob: float = option(0.1, "Dropout on embeddings and residual branches.")
    attention_probs_dropout_prob: float = option(0.1, "Dropout on attention probabilities.")
    max_position_embeddings: int = option(512, "Longest sequence the position embeddings cover.")
    type_vocab_size: int = option(2, "Number of token types (segments A and B).")
    initializer_range: float = option(0.02, "Std of the normal initialisation.")
    layer_norm_eps: float = option(1e-12, "LayerNorm epsilon.")
    pad_token_id: int = option(0, "Id of [PAD].")
    architecture: Literal["bert", "modernbert"] = option(
        "bert", "The encoder: bert (post-LayerNorm, learned positions, GELU feed-forward), or modernbert (pre-LayerNorm "
        "without biases, rotary positions, GeGLU, local and global attention; masked-LM only).")
    local_attention: int = option(128, "ModernBERT: the window of its local layers, in tokens (a token sees "
                                  "local_attention / 2 on either side).")
    global_attention_every: int = option(3, "ModernBERT: every n-th layer attends globally, from the first.")
    global_rope_theta: float = option(160000.0, "ModernBERT: rotary base of the global layers.")
    local_rope_theta: float = option(10000.0, "ModernBERT: rotary base of the local layers.")

    MODERNBERT_ONLY: ClassVar[tuple[str, ...]] = ("local_attention", "global_attention_every", "global_rope_theta",
                                                   "local_rope_theta")
    """Fields that mean nothing to BERT (left out of its config.json)."""

    @classmethod
    def of_size(cls, size: str, **overrides: Any) -> "ModelConfig":
        """BERT's defaults with the shape of a standard size (tiny … large, modernbert-tiny … base) and any
        overrides."""
        if size not in MODEL_SIZES:
            raise ConfigError(f"model size {size!r} is not one of {', '.join(MODEL_SIZES)}")
        return cls(**{**MODEL_SIZES[size], **overrides})

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be a positive integer, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size: {self.hidden_size} is not divisible by "
                              f"num_attention_heads={self.num_attention_heads}")
        if self.vocab_size < len(SPECIAL_TOKENS):
            raise ConfigError(f"vocab_size: {self.vocab_size} is smaller than the "
                              f"{len(SPECIAL_TOKENS)} special tokens")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name}: must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"pad_token_id: {self.pad_token_id} is outside the vocabulary")
        _require_positive(self, "initializer_range", "layer_norm_eps")
        if self.architecture == "modernbert":
            if (self.hidden_size // self.num_attention_heads) % 2:
                raise ConfigError(f"hidden_size: rotary positions need an even head size, got "
                                  f"{self.hidden_size // self.num_attention_heads}")
            if self.local_attention < 2 or self.local_attention % 2:
                raise ConfigError(f"local_attention: must be an even window of 2 or more, got {self.local_attention}")
            _require_positive(self, "global_attention_every", "global_rope_theta", "local_rope_theta")


@dataclass
class BatchOptions:
    """`pretrain` batches: sizes, length bucketing and loading workers."""

    global_batch_size: int = option(256, "Sequences per optimizer step, over all processes and micro-steps.")
    per_device_batch_size: int = option(32, "Sequences per forward pass on one device.")
    bucket_by_length: bool = option(False, "Sort each step's sequences by length before cutting micro-batches: "
                                    "less padding with gradient accumulation or several processes.")
    num_workers: int = option(2, "Data-loading worker processes per device.")
    batch_warmup_steps: int = option(0, "Batch-size warm-up (ModernBERT): over this many steps the batch grows "
                                     "linearly from batch_warmup_start of global_batch_size to all of it, in whole "
                                     "micro-steps (so it needs gradient accumulation); no sequence is skipped.")
    batch_warmup_start: float = option(0.25, "The share of global_batch_size the first step of a batch-size warm-up "
                                       "reads.")

    def __post_init__(self) -> None:
        if self.batch_warmup_steps < 0:
            raise ConfigError(f"batch_warmup_steps: must be 0 or more, got {self.batch_warmup_steps}")
        if not 0.0 < self.batch_warmup_start <= 1.0:
            raise ConfigError(f"batch_warmup_start: must be in (0, 1], got {self.batch_warmup_start}")
        for name in ("global_batch_size", "per_device_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers: must be 0 or more, got {self.num_workers}")
        if self.global_batch_size % self.per_device_batch_size:
            raise ConfigError(f"global_batch_size: {self.global_batch_size} is not a multiple of "
                              f"per_device_batch_size={self.per_device_batch_size}")


@dataclass
class MaskingOptions:
    """`pretrain` masked-LM corruption."""

    mlm_probability: float = option(0.15, "Fraction of tokens chosen for masked-LM (MosaicBERT: 0.3).")
    whole_word_mask: bool = option(False, "Mask all pieces of a word together.")
    eval_mlm_probability: float = option(0.15, "Fraction of tokens masked in held-out evaluation, whatever the "
                                         "training rate: runs that train at different rates report comparable "
                                         "masked-LM accuracy (BERT's 15%).")
    mlm_probability_end: Optional[float] = option(None, "A masking-rate schedule: the rate moves linearly from "
                                                  "mlm_probability to this over mlm_probability_steps (e.g. 0.3 → "
                                                  "0.15, mmBERT), then stays.")
    mlm_probability_steps: Optional[int] = option(None, "Steps over which the masking rate moves to "
                                                  "mlm_probability_end [the run's max_steps or schedule_steps].")

    def __post_init__(self) -> None:
        for name in ("mlm_probability", "eval_mlm_probability"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ConfigError(f"{name}: must be in (0, 1), got {getattr(self, name)}")
        if self.mlm_probability_end is not None and not 0.0 < self.mlm_probability_end < 1.0:
            raise ConfigError(f"mlm_probability_end: must be in (0, 1), got {self.mlm_probability_end}")
        if self.mlm_probability_steps is not None and self.mlm_probability_steps < 1:
            raise ConfigError(f"mlm_probability_steps: must be at least 1, got {self.mlm_probability_steps}")


@dataclass
class OptimizationOptions:
    """`pretrain` optimizer."""

    optimizer: Literal["adamw", "lamb"] = option("adamw", "AdamW (fused, on CUDA and the CPU) or LAMB (large batches).")
    learning_rate: float = option(1e-4, "Peak learning rate.")
    weight_decay: float = option(0.01, "Decoupled weight decay; never on biases and LayerNorm.")
    adam_beta1: float = option(0.9, "First-moment decay.")
    adam_beta2: float = option(0.999, "Second-moment decay.")
    adam_epsilon: float = option(1e-6, "Denominator epsilon.")
    max_grad_norm: float = option(1.0, "Clip the global gradient norm to this (0 = no clipping).")
    embedding_lr_scale: float = option(1.0, "Learning rate of the token embeddings (and so the tied masked-LM decoder) "
                                       "as a multiple of learning_rate; 0 freezes them, e.g. to keep the word vectors "
                                       "of embedding_init while the layers train.")

    def __post_init__(self) -> None:
        _require_positive(self, "learning_rate", "adam_epsilon")
        _require_not_negative(self, "weight_decay", "max_grad_norm", "embedding_lr_scale")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name}: must be in [0, 1), got {getattr(self, name)}")


@dataclass
class ScheduleOptions:
    """`pretrain` learning-rate schedule and budgets."""

    lr_schedule: Literal["linear", "cosine", "constant", "wsd"] = option(
        "linear", "Decay after warm-up: linear, cosine, constant, or wsd (warm-up, stable, decay: the peak rate held, "
        "then decay_shape over the run's last decay_fraction or decay_steps).")
    decay_fraction: float = option(0.1, "wsd: the share of the schedule spent decaying (its steps, or its token or "
                                   "time budget).")
    decay_steps: Optional[int] = option(None, "wsd on steps: the decay's length in steps instead of decay_fraction. "
                                        "Resuming a stable-phase checkpoint with --max-steps N+D --decay-steps D "
                                        "decays it over D steps from there.")
    decay_shape: Literal["1-sqrt", "linear", "cosine"] = option("1-sqrt", "wsd: the shape of the decay (1-sqrt: "
                                                                 "slow, then fast; Hägele et al. 2024).")
    warmup_steps: int = option(10000, "Linear warm-up steps (BERT: 10,000).")
    max_steps: Optional[int] = option(None, "Stop after this many optimizer steps.")
    max_tokens: Optional[int] = option(None, "Stop after this many tokens (padding excluded, all processes). "
                                       "Without max_steps it is the schedule's length too: after warm-up the "
                                       "learning rate decays with the share of the token budget spent, so a run "
                                       "is the same experiment on any hardware and any batch composition.")
    max_minutes: Optional[float] = option(None, "Stop (with a checkpoint) after this much wall time. Alone (no "
                                          "max_steps or max_tokens) it is the schedule's length too: the learning "
                                          "rate decays with the share of the time budget spent (a different "
                                          "experiment on every machine: prefer max_tokens).")
    schedule_steps: Optional[int] = option(None, "Length of the learning-rate schedule, when it should differ "
                                           "from max_steps (a run done in chunks: stop at max_steps, resume "
                                           "later with a larger one).")

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps: must be 0 or more, got {self.warmup_steps}")
        if self.max_steps is None and self.max_tokens is None and self.max_minutes is None:
            raise ConfigError("max_steps: set max_steps, max_tokens or max_minutes (the learning-rate schedule needs "
                              "a length)")
        for name in ("max_tokens", "max_minutes", "schedule_steps"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name}: must be positive, got {value}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError("max_steps: must be at least 1")
        if not 0.0 < self.decay_fraction <= 1.0:
            raise ConfigError(f"decay_fraction: must be in (0, 1], got {self.decay_fraction}")
        if self.decay_steps is not None:
            if self.decay_steps < 1:
                raise ConfigError(f"decay_steps: must be at least 1, got {self.decay_steps}")
            if self.lr_schedule != "wsd":
                raise ConfigError(f"decay_steps: applies to lr_schedule wsd, not {self.lr_schedule}")
            if self.max_steps is None and self.schedule_steps is None:
                raise ConfigError("decay_steps: counts steps, and this run's schedule follows its token or time budget; "
                                  "use decay_fraction, or give max_steps")

    def decay(self) -> Any:
        """The schedule after warm-up as ``bertpre.training.optim.Decay`` takes it (name, fraction, shape, steps)."""
        return {"schedule": self.lr_schedule, "fraction": self.decay_fraction, "shape": self.decay_shape,
                "steps": self.decay_steps}


@dataclass
class LoggingOptions:
    """`pretrain` metrics and evaluation."""

    log_every: int = option(10, "Steps between metrics.jsonl / tracker lines.")
    eval_every: int = option(500, "Steps between evaluations on the held-out split (0 = only at the end).")
    eval_batches: int = option(50, "Largest number of batches per evaluation.")
    report_to: list[str] = option(["tensorboard"], _REPORT_TO_HELP)
    run_name: Optional[str] = option(None, _RUN_NAME_HELP)
    project: str = option("bertpre", _PROJECT_HELP)

    def __post_init__(self) -> None:
        _check_report_to(self)
        if self.log_every < 1:
            raise ConfigError(f"log_every: must be at least 1, got {self.log_every}")
        for name in ("eval_every", "eval_batches"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be 0 or more, got {getattr(self, name)}")


@dataclass
class CheckpointOptions:
    """`pretrain` checkpoints and resuming."""

    checkpoint_every: int = option(1000, "Steps between checkpoints (0 = only at the end).")
    keep_checkpoints: int = option(3, "Newest checkpoints kept; older ones are deleted.")
    resume: str = option("auto", "`auto`: continue from the newest complete checkpoint if any; `never`: "
                         "start fresh; or the path of a checkpoint directory.")
    overwrite: bool = option(False, "With resume: never, delete an existing run in the output directory.")

    def __post_init__(self) -> None:
        if self.keep_checkpoints < 1:
            raise ConfigError(f"keep_checkpoints: must be at least 1, got {self.keep_checkpoints}")
        if self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every: must be 0 or more, got {self.checkpoint_every}")


@dataclass
class RuntimeOptions:
    """`pretrain` devices, precision and speed switches."""

    mixed_precision: Optional[Literal["no", "bf16", "fp16"]] = option(
        None, "bf16 autocast, fp16 with loss scaling, or fp32 (`no`); " + _PRECISION_HELP)
    compile: bool = option(False, "torch.compile the model (in place: checkpoints keep plain parameter names).")
    unpad_inputs: bool = option(False, "Skip padding outside attention: embeddings, projections, feed-forward "
                                "and LayerNorms run on the real tokens only (same result; faster when "
                                "batches hold padding).")
    packing: bool = option(False, "Pack whole sequences side by side into rows of max_seq_length slots, each "
                           "attending only to itself (positions restart, NSP at each [CLS]): a step reads "
                           "global_batch_size rows, so more sequences and (almost) no padding.")
    attention: Literal["auto", "sdpa", "flex", "varlen"] = option("auto", _ATTENTION_HELP)
    masked_last_layer: bool = option(False, "Run the last layer only at the masked positions and [CLS] "
                                     "(MosaicBERT's saving; the same loss).")
    max_nonfinite_steps: int = option(20, "Consecutive non-finite steps tolerated before the run stops.")
    cpu: bool = option(False, "Train on the CPU even when a GPU is present.")

    def __post_init__(self) -> None:
        if self.max_nonfinite_steps < 1:
            raise ConfigError(f"max_nonfinite_steps: must be at least 1, got {self.max_nonfinite_steps}")


@dataclass
class PretrainConfig:
    """`bertpre pretrain`: masked-LM + next-sentence pretraining with Hugging Face Accelerate.

    Options are grouped (``batches``, ``masking``, ``optimization``, ``schedule``, ``logging``,
    ``checkpointing``, ``runtime``); every grouped option may also be written flat, as on the command
    line (``--learning-rate``) and in YAML (``learning_rate: 1e-4``).
    """

    data: str = option("runs/data", "Prepared dataset (from `bertpre prepare`), or a directory of shards.")
    output: str = option("runs/pretrain", "Run directory: checkpoints, metrics.jsonl, TensorBoard logs.")
    model: ModelConfig = option(ModelConfig(), "Model shape; a mapping, a YAML file, or a size shipped with bertpre "
                                "(tiny, mini, small, medium, base, large: configs/model/NAME.yaml).")
    seed: int = option(42, "Seed of initialisation, data order, masking and dropout.")
    objective: Literal["mlm_nsp", "mlm"] = option("mlm_nsp", "Masked-LM + next-sentence prediction (BERT), or masked-LM "
                                                  "only (RoBERTa, cramming, ModernBERT: no NSP head, no pooler; "
                                                  "exported as BertForMaskedLM).")
    init_from: Optional[str] = option(None, "Start from these weights instead of random ones: any Hugging Face BERT "
                                      "directory or Hub id (continued pretraining; its config replaces `model`) or a "
                                      "bertpre checkpoint (a new phase). Optimizer, schedule and step count start anew.")
    embedding_init: Literal["random", "cooccurrence"] = option(
        "random", "Token embeddings to start from: random (BERT's), or cooccurrence: word vectors from the training "
        "data (PPMI + SVD of tokens within embedding_window of each other; seconds, counted in the time budget), "
        "which gives a short run meaningful embeddings from step 1.")
    embedding_window: int = option(5, "Co-occurrence window of embedding_init: cooccurrence, in tokens (narrower: "
                                   "more syntactic neighbours, wider: more topical ones).")
    mlm_bias_init: Literal["zeros", "unigram"] = option(
        "zeros", "Bias of the masked-LM output to start from: zeros (BERT's), or unigram: the log-frequencies of the "
        "training tokens, so the model predicts unigram statistics from step 1 and its hidden states need not "
        "collapse onto the frequent tokens' direction to learn them.")
    batches: BatchOptions = group(BatchOptions, "Batch sizes, length bucketing, loading workers.")
    masking: MaskingOptions = group(MaskingOptions, "Masked-LM corruption.")
    optimization: OptimizationOptions = group(OptimizationOptions, "Optimizer and its hyper-parameters.")
    schedule: ScheduleOptions = group(ScheduleOptions, "Learning-rate schedule and budgets.")
    logging: LoggingOptions = group(LoggingOptions, "Metrics and evaluation.")
    checkpointing: CheckpointOptions = group(CheckpointOptions, "Checkpoints and resuming.")
    runtime: RuntimeOptions = group(RuntimeOptions, "Devices, precision and speed switches.")

    def __post_init__(self) -> None:
        _require_positive(self, "embedding_window")
        _check_seeds(self.seed)
        if self.init_from and self.embedding_init != "random":
            raise ConfigError(f"embedding_init: {self.embedding_init} would overwrite the embeddings that init_from "
                              f"{self.init_from} brings; use one or the other")
        if self.init_from and self.mlm_bias_init != "zeros":
            raise ConfigError(f"mlm_bias_init: {self.mlm_bias_init} would overwrite the masked-LM head that init_from "
                              f"{self.init_from} brings; use one or the other")


@dataclass
class ExportConfig:
    """`bertpre export`: a pretraining checkpoint → a Hugging Face BERT directory."""

    checkpoint: str = option("runs/pretrain", "A pretraining run directory or one of its checkpoint directories.")
    step: str = option("latest", "Which checkpoint of a run: `latest` or a step number.")
    output: str = option("runs/export", "Directory to write the Hugging Face model to.")
    tokenizer: Optional[str] = option(None, "Tokenizer directory or Hub id; default: the one the run's data was "
                                      "prepared with.")
    license: Optional[str] = option(None, "License of the model for the card's metadata, a Hugging Face identifier "
                                    "(apache-2.0, mit, cc-by-4.0, other …); left out when unset.")
    language: list[str] = option([], "Languages of the model for the card's metadata (ISO 639 codes: en, de …); "
                                 "left out when unset.")
    overwrite: bool = option(False, "Replace a non-empty output directory.")

    def __post_init__(self) -> None:
        if self.step != "latest" and not self.step.isdigit():
            raise ConfigError(f"step: expected `latest` or a step number, got {self.step!r}")
        _check_card_metadata(self)


_METRICS = ("accuracy", "f1", "matthews_correlation", "pearson", "spearman")
_REGRESSION_METRICS = ("pearson", "spearman")


@dataclass
class FinetuneConfig:
    """`bertpre finetune`: a classification or regression head on a BERT model."""

    model: str = option("", "Exported bertpre model, any Hugging Face BERT directory, or a Hub id (bert-base-uncased).")
    task: Optional[str] = option(None, "GLUE preset (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli): "
                                 "files, columns, labels and metrics.")
    data_dir: str = option("glue", "Directory holding the GLUE task folders (SST-2/, MRPC/, …) for --task.")
    train_file: Optional[str] = option(None, "Training data: .csv, .tsv, .jsonl (.gz ok), .parquet or hf:NAME@SPLIT.")
    eval_file: Optional[str] = option(None, "Evaluation data, same formats.")
    text_column: Optional[str] = option(None, "Column with the (first) sentence [preset or `text`].")
    text_pair_column: Optional[str] = option(None, "Column with the second sentence of a pair.")
    label_column: Optional[str] = option(None, "Column with the label [preset or `label`].")
    column_names: list[str] = option([], "Column names for files without a header row.")
    problem: Literal["auto", "classification", "regression"] = option(
        "auto", "Classification (cross-entropy) or regression (MSE, one output); auto follows the preset.")
    metrics: list[str] = option([], "Metrics to report (accuracy, f1, matthews_correlation, pearson, spearman).")
    metric: Optional[str] = option(None, "Metric that picks the best epoch [the first of metrics].")
    choose_epoch_on: Literal["selection", "last", "eval"] = option(
        "selection", "Which rows choose the epoch to keep: `selection`, a slice held out from the training rows "
        "(selection_fraction; the evaluation set then only scores), `last` (the last epoch), or `eval`, the "
        "evaluation set itself (optimistic: it picks and scores on the same rows; for reproducing old figures).")
    selection_fraction: float = option(0.1, "Share of the training rows held out to choose the epoch on (seeded, "
                                       "stratified by label for classification), with choose_epoch_on: selection.")
    max_seq_length: int = option(128, "Longest tokenized input; longer ones are truncated.")
    per_device_batch_size: int = option(32, "Examples per forward pass on one device.")
    gradient_accumulation_steps: int = option(1, "Micro-batches per optimizer step.")
    learning_rate: float = option(5e-5, "Peak learning rate (AdamW).")
    weight_decay: float = option(0.01, "Weight decay, not on biases and LayerNorm.")
    warmup_fraction: float = option(0.1, "Fraction of the steps spent in linear warm-up.")
    epochs: int = option(3, "Passes over the training data.")
    max_train_samples: Optional[int] = option(None, "Train on a seeded random subset of this many rows.")
    early_stopping_patience: Optional[int] = option(None, "Stop after this many epochs without a better metric.")
    seed: int = option(0, "Seed of initialisation, shuffling and dropout.")
    seeds: list[int] = option([], "Fine-tune once per seed and report the mean and spread (outputs under seed-N/); "
                              "empty: `seed` once, or with compare_random_init the five seeds from `seed` on (what a "
                              "usable interval needs).")
    init: Literal["pretrained", "random"] = option("pretrained", "Start from the model's weights, or from BERT's random "
                                                   "initialisation of the same architecture (a baseline).")
    compare_random_init: bool = option(False, "Did pretraining pay? Also fine-tune the same architecture from random "
                                       "initialisation with identical settings and seeds; report both, the per-seed "
                                       "differences and the gain with its 95% interval over seeds and evaluation rows.")
    mixed_precision: Optional[Literal["no", "bf16", "fp16"]] = option(
        None, "Mixed precision: bf16, fp16 or `no` (fp32); " + _PRECISION_HELP)
    report_to: list[str] = option(["tensorboard"], _REPORT_TO_HELP)
    run_name: Optional[str] = option(None, _RUN_NAME_HELP)
    project: str = option("bertpre", _PROJECT_HELP)
    packing: bool = option(True, "Pack each batch's rows side by side into as few rows as they fit (each attends "
                           "only to itself, classified at its own [CLS]): the same examples per step, (almost) no "
                           "padding.")
    attention: Literal["auto", "sdpa", "flex", "varlen"] = option("auto", _ATTENTION_HELP)
    compile: bool = option(False, "torch.compile the model (in place; the export is the eager model's).")
    unpad_inputs: bool = option(False, "Skip padding outside attention (same result; faster on batches "
                                "padded to their longest example).")
    cpu: bool = option(False, "Train on the CPU even when a GPU is present.")
    output: str = option("runs/finetune", "Directory for the classifier (model/), metrics and logs.")
    license: Optional[str] = option(None, "License of the classifier for its card's metadata, a Hugging Face "
                                    "identifier (apache-2.0, mit, other …) [the base model card's].")
    language: list[str] = option([], "Languages of the classifier for its card's metadata (ISO 639 codes) "
                                 "[the base model card's].")
    overwrite: bool = option(False, "Replace a non-empty output directory.")

    def __post_init__(self) -> None:
        _check_report_to(self)
        _check_seeds(self.seed, *self.seeds)
        for name in ("max_seq_length", "per_device_batch_size", "gradient_accumulation_steps", "epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1")
        unknown = [m for m in self.metrics + ([self.metric] if self.metric else []) if m not in _METRICS]
        if unknown:
            raise ConfigError(f"metrics: unknown {unknown} (known: {', '.join(_METRICS)})")
        if self.metric and self.metrics and self.metric not in self.metrics:
            raise ConfigError(f"metric: {self.metric} is not among metrics {self.metrics}; add it there")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError("warmup_fraction: must be in [0, 1)")
        if not 0 < self.selection_fraction < 1:
            raise ConfigError(f"selection_fraction: must be in (0, 1), got {self.selection_fraction} (to train on every "
                              "row, choose the epoch with --choose-epoch-on last)")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ConfigError("max_train_samples: must be at least 1 (leave it unset to train on every row)")
        self._check_problem_fits_metrics()
        _require_positive(self, "learning_rate")
        _require_not_negative(self, "weight_decay")
        _check_card_metadata(self)


    def _check_problem_fits_metrics(self) -> None:
        """A regression scored by accuracy, or a GLUE classification task run as a regression, means nothing."""
        preset = GLUE_TASKS.get(self.task) if self.task else None
        if preset is not None and self.problem != "auto" and (self.problem == "regression") != preset.regression:
            kind = "regression" if preset.regression else "classification"
            raise ConfigError(f"problem: {self.task} is a {kind} task; leave --problem at auto for a GLUE task")
        # auto without a preset means classification, as _resolve_task reads it
        regression = self.problem == "regression" or (self.problem == "auto" and preset is not None and preset.regression)
        chosen = self.metrics + ([self.metric] if self.metric else [])
        misfits = [m for m in chosen if (m in _REGRESSION_METRICS) != regression]
        if misfits:
            kind = "regression" if regression else "classification"
            fitting = [m for m in _METRICS if (m in _REGRESSION_METRICS) == regression]
            hint = "" if regression or self.task else "; for numeric scores pass --problem regression"
            raise ConfigError(f"metrics: {', '.join(misfits)} does not apply to a {kind} task (use "
                              f"{', '.join(fitting)}){hint}")


_GLUE_FILES = "glue reads each task's train.tsv and dev file from --data-dir (DATA_DIR/SST-2/train.tsv, …)"
_GLUE_PRESET = "glue takes each task's columns, labels and problem from its GLUE preset"


@dataclass
class GlueConfig(FinetuneConfig):
    """`bertpre glue`: fine-tune and evaluate one model on several GLUE tasks.

    Every `finetune` option applies to each task, except the ones that describe a single task's
    data, which are refused (and hidden from ``--help``): see ``refused_options``.
    """

    tasks: list[str] = option(["cola", "sst2", "mrpc"], "GLUE tasks to run: cola, sst2, mrpc, qqp, stsb, mnli, "
                              "qnli, rte, wnli.")

    refused_options: ClassVar[dict[str, str]] = {
        "task": "glue runs the tasks named by --tasks (e.g. --tasks sst2 mrpc)",
        "train_file": _GLUE_FILES, "eval_file": _GLUE_FILES,
        "text_column": _GLUE_PRESET, "text_pair_column": _GLUE_PRESET, "label_column": _GLUE_PRESET,
        "column_names": _GLUE_PRESET, "problem": _GLUE_PRESET,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        defaults = FinetuneConfig()
        for name, why in self.refused_options.items():
            if getattr(self, name) != getattr(defaults, name):
                raise ConfigError(f"{name}: is for `bertpre finetune` (one task), not `bertpre glue`; {why}")
        self._check_tasks()

    def _check_problem_fits_metrics(self) -> None:
        """Each task of --tasks has its own kind: `_check_tasks` checks the metrics against every one."""

    def _check_tasks(self) -> None:
        unknown = [name for name in self.tasks if name not in GLUE_TASKS]
        if unknown:
            raise ConfigError(f"tasks: unknown {unknown} (known: {', '.join(GLUE_TASKS)})")
        if not self.tasks:
            raise ConfigError("tasks: name at least one GLUE task")
        twice = sorted({name for name in self.tasks if self.tasks.count(name) > 1})
        if twice:
            raise ConfigError(f"tasks: {twice} given twice")
        for key, chosen in (("metrics", self.metrics), ("metric", [self.metric] if self.metric else [])):
            for name in self.tasks:
                preset = GLUE_TASKS[name]
                misfits = [m for m in chosen if (m in _REGRESSION_METRICS) != preset.regression]
                if misfits:
                    kind = "regression" if preset.regression else "classification"
                    raise ConfigError(f"{key}: {', '.join(misfits)} does not apply to {name}, a {kind} task (its "
                                      f"metrics: {', '.join(preset.metrics)}); leave --{key} unset (each task's own) or "
                                      "pick what suits every task of --tasks")


@dataclass
class CompareConfig:
    """`bertpre compare`: two fine-tuning recipes' saved runs against each other, paired by seed."""

    runs: list[str] = option([], "Two `bertpre finetune` outputs, A then B, scored on the same evaluation rows: each a "
                             "run directory or a directory of seed-N/ runs (OUTPUT/pretrained of --seeds, OUTPUT/random "
                             "of --compare-random-init).")
    names: list[str] = option([], "Names of A and B in the table [the directories' names].")
    metric: Optional[str] = option(None, "Metric to compare [the first the runs report].")
    output: Optional[str] = option(None, "Also write the comparison to this JSON file.")

    def __post_init__(self) -> None:
        if len(self.runs) != 2:
            raise ConfigError(f"runs: give two fine-tuning outputs to compare (A then B), got {len(self.runs)}")
        if self.names and len(self.names) != 2:
            raise ConfigError(f"names: give one name for each of the two runs, got {len(self.names)}")
        if self.metric and self.metric not in _METRICS:
            raise ConfigError(f"metric: unknown {self.metric!r} (known: {', '.join(_METRICS)})")


@dataclass
class PredictConfig:
    """`bertpre predict`: run an exported classifier over a file."""

    model: str = option("", "Exported classifier directory (from `bertpre finetune`) or Hub id of a BERT classifier.")
    input: str = option("", "Rows to classify: .csv, .tsv, .jsonl, .parquet or hf:NAME@SPLIT.")
    output: str = option("predictions.jsonl", "One JSON line per row: label, label_id, score.")
    text_column: str = option("text", "Column with the (first) sentence.")
    text_pair_column: Optional[str] = option(None, "Column with the second sentence of a pair.")
    label_column: Optional[str] = option(None, "Column with gold labels: metrics are computed when given.")
    column_names: list[str] = option([], "Column names for files without a header row.")
    max_seq_length: int = option(128, "Longest tokenized input.")
    batch_size: int = option(64, "Rows per forward pass.")
    packing: bool = option(True, "Pack each batch's rows side by side (each attends only to itself): the same "
                           "predictions, (almost) no padding.")
    attention: Literal["auto", "sdpa", "flex", "varlen"] = option("auto", _ATTENTION_HELP)
    cpu: bool = option(False, "Predict on the CPU even when a GPU is present.")
    overwrite: bool = option(False, "Replace an existing output file.")

    def __post_init__(self) -> None:
        for name in ("max_seq_length", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1")


@dataclass
class BenchConfig:
    """`bertpre bench`: training-step throughput of our model against transformers' BertForPreTraining."""

    model_size: str = option("base", f"Model size: {', '.join(MODEL_SIZES)}.")
    seq_length: int = option(128, "Tokens per sequence (synthetic batches).")
    batch_size: int = option(256, "Sequences per step.")
    steps: int = option(30, "Timed steps.")
    warmup_steps: int = option(5, "Untimed steps first (allocator, kernels, compilation).")
    mlm_probability: float = option(0.15, "Fraction of tokens with an MLM label.")
    bf16: bool = option(True, "bf16 autocast on GPU (CPU runs are fp32).")
    compile: bool = option(False, "Also time our model under torch.compile.")
    compile_reference: bool = option(False, "Also time the reference under torch.compile.")
    unpad: bool = option(True, "Also time our model with unpad_inputs (padding skipped outside attention).")
    curve_steps: int = option(0, "Instead of timing: train every model this many steps from the same weights "
                              "on the same distinct real batches (needs --data) and compare the loss curves.")
    learning_rate: float = option(5e-4, "Peak learning rate of the loss-curve comparison (AdamW, 10% warm-up, "
                                  "linear decay).")
    data: Optional[str] = option(None, "Prepared dataset: time real variable-length batches instead of synthetic.")
    packing: bool = option(True, "With --data: also time our model on the same sequences packed into rows of the "
                           "prepared length (non-padding tokens/s compare).")
    masked_last_layer: bool = option(True, "With --data: also time packing with the last layer at masked positions "
                                     "and [CLS] only.")
    workload: Literal["pretrain", "finetune"] = option(
        "pretrain", "What to time: pretraining steps (against BertForPreTraining), or a whole fine-tuning run "
        "(against a plain transformers loop; needs --model, --train-file, --eval-file).")
    model: Optional[str] = option(None, "Fine-tuning: the model directory (or Hub id) both sides start from.")
    train_file: Optional[str] = option(None, "Fine-tuning: training rows (.csv, .tsv, .jsonl, .parquet).")
    eval_file: Optional[str] = option(None, "Fine-tuning: evaluation rows, scored by accuracy.")
    text_column: str = option("text", "Fine-tuning: column of the (first) sentence.")
    text_pair_column: Optional[str] = option(None, "Fine-tuning: column of the second sentence of a pair.")
    label_column: str = option("label", "Fine-tuning: column of the label.")
    max_train_samples: Optional[int] = option(None, "Fine-tuning: a seeded subset of this many training rows.")
    epochs: int = option(1, "Fine-tuning: epochs.")
    finetune_batch_size: int = option(32, "Fine-tuning: examples per step.")
    finetune_learning_rate: float = option(5e-5, "Fine-tuning: peak learning rate (AdamW, 10% warm-up, linear decay).")
    finetune_max_length: int = option(128, "Fine-tuning: longest tokenized input.")
    finetune_variants: list[str] = option(["padded", "packed"], "Fine-tuning: bertpre's configurations to time "
                                          "(padded, packed, packed-bf16, packed-compile).")
    cpu: bool = option(False, "Run on the CPU (a smoke test; no timing claims).")
    json: bool = option(False, "Print JSON instead of the table.")
    save_json: Optional[str] = option(None, "Also write the JSON report to this file.")

    def __post_init__(self) -> None:
        if self.seq_length < 4:  # [CLS] a [SEP] b [SEP]: shorter leaves nothing to mask
            raise ConfigError(f"seq_length: {self.seq_length} is too short; use 4 or more")
        if self.model_size not in MODEL_SIZES:
            raise ConfigError(f"model_size: {self.model_size!r} is not one of {', '.join(MODEL_SIZES)}")
        for name in ("seq_length", "batch_size", "steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1")
        if self.seq_length > 512:
            raise ConfigError("seq_length: BERT's position embeddings cover 512 tokens")
        if self.curve_steps < 0:
            raise ConfigError("curve_steps: must be 0 (timing) or a number of steps")
        if self.curve_steps and not self.data:
            raise ConfigError("curve_steps: the loss-curve comparison trains on real text; give --data")
        if 0 < self.curve_steps < 12:  # its noise is the scatter about a moving mean of curve_steps // 6 steps
            raise ConfigError(f"curve_steps: {self.curve_steps} is too few to tell a difference from noise; use 12 or more")
        _require_positive(self, "learning_rate")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ConfigError(f"mlm_probability: must be in (0, 1), got {self.mlm_probability}")


@dataclass
class QuickstartConfig:
    """`bertpre quickstart`: every stage, small and offline."""

    output: str = option("runs/quickstart", "Directory for everything the run produces.")
    inputs: list[str] = option([BUILTIN_PYTHON_DOCS], "Corpus (see `tokenizer train --inputs`); the classifier "
                               "task is the package (built-in corpus) or the file a paragraph comes from.")
    vocab_size: int = option(8000, "Vocabulary size of the quickstart tokenizer.")
    max_seq_length: int = option(128, "Length of the next-sentence pairs.")
    model_size: str = option("tiny", f"Model size: {', '.join(MODEL_SIZES)}.")
    architecture: Literal["bert", "modernbert"] = option(
        "bert", "The encoder: bert (masked-LM + next-sentence) or modernbert (masked-LM only, contiguous segments; "
        "sizes tiny, mini, small, base).")
    pretrain_steps: int = option(800, "Pretraining steps.")
    batch_size: int = option(16, "Pretraining batch (sequences per step; at this size more, smaller steps learn "
                             "faster than fewer, larger ones for the same tokens).")
    learning_rate: float = option(2e-3, "Peak pretraining learning rate (small models like it high).")
    finetune_epochs: int = option(8, "Epochs of classifier fine-tuning.")
    num_classes: int = option(6, "Classes of the derived classification task (most frequent packages or files).")
    overwrite: bool = option(True, "Replace the results of an earlier quickstart in the same directory.")

    def __post_init__(self) -> None:
        _require_positive(self, "learning_rate", "vocab_size", "pretrain_steps", "batch_size", "finetune_epochs")
        if self.num_classes < 2:
            raise ConfigError(f"num_classes: a classifier needs at least 2, got {self.num_classes}")
