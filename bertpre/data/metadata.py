"""The hand-off from `prepare` to training: a prepared dataset's metadata (``prepare.json``) as one typed
object, written by `prepare` and read, checked and combined over shards here alone.

A dataset is one `bertpre prepare` output (a *shard* of the corpus, maybe the only one) or a directory
of several (``--shard i/N`` runs), which must agree on the tokenizer, the sequence length and the kind of
examples (next-sentence pairs or MLM-only segments).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from bertpre.core.errors import BertpreError

DATA_FORMAT_VERSION = 1
METADATA_FILE = "prepare.json"
CONFIG_FILE = "prepare.yaml"
TOKENIZER_DIR = "tokenizer"
SPLITS = ("train", "eval")
EXAMPLES = ("pairs", "segments")
"""What a prepared dataset's rows are (``prepare --examples``); data prepared before segments existed is pairs."""


@dataclass(frozen=True)
class TokenizerInfo:
    """The tokenizer the pairs were made with: where it was, its size, its fingerprint and special ids."""

    path: str
    vocab_size: int
    vocab_sha256: str  # fingerprint of the tokens in id order (bertpre/tokenizer/files.py)
    cls_id: Optional[int] = None
    sep_id: Optional[int] = None
    pad_id: int = 0
    mask_id: Optional[int] = None


@dataclass(frozen=True)
class ShardMetadata:
    """One `bertpre prepare` output: its ``prepare.json`` and where it lies."""

    root: Path
    max_seq_length: int
    tokenizer: TokenizerInfo
    shard: Optional[str] = None  # ``i/N`` when prepared with --shard
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)  # PrepareSummary.record()
    format_version: int = DATA_FORMAT_VERSION
    examples: str = "pairs"  # one of EXAMPLES

    def rows(self, split: str) -> Optional[int]:
        """How many pairs (or segments) `prepare` wrote to ``split`` (None for data prepared before it said)."""
        count = self.summary.get(f"{split}_{self.examples}")
        return count if isinstance(count, int) else None

    def to_json(self) -> str:
        """``prepare.json``'s text (the root is where the file lies, not part of it)."""
        record = {"format_version": self.format_version, "max_seq_length": self.max_seq_length,
                  "examples": self.examples, "tokenizer": dataclasses.asdict(self.tokenizer), "shard": self.shard,
                  "summary": self.summary}
        return json.dumps(record, indent=2) + "\n"

    def write(self) -> None:
        """Write ``prepare.json`` into :attr:`root`."""
        (self.root / METADATA_FILE).write_text(self.to_json(), encoding="utf-8")


@dataclass(frozen=True)
class DataMetadata:
    """A prepared dataset: its shards (one or more, sorted by path), checked to agree."""

    shards: tuple[ShardMetadata, ...]

    @property
    def roots(self) -> list[Path]:
        """Every shard's directory."""
        return [shard.root for shard in self.shards]

    @property
    def tokenizer(self) -> TokenizerInfo:
        """The tokenizer every shard was prepared with."""
        return self.shards[0].tokenizer

    @property
    def max_seq_length(self) -> int:
        """The length the pairs were prepared for."""
        return self.shards[0].max_seq_length

    @property
    def examples(self) -> str:
        """What every shard's rows are: ``pairs`` or ``segments``."""
        return self.shards[0].examples

    @property
    def tokenizer_dir(self) -> Path:
        """The copy of the tokenizer inside the dataset (the first shard's)."""
        return self.shards[0].root / TOKENIZER_DIR


# What `prepare` counted that says nothing of the data itself: where it was written, how fast, what was read.
_NOT_IDENTITY = ("output", "seconds", "workers", "layouts", "warnings")


def data_fingerprint(metadata: DataMetadata) -> str:
    """What identifies a prepared dataset wherever it lies: each shard's tokenizer, length, shard and everything
    `prepare` counted (documents, sentences, pairs, tokens, length histogram), in the order training reads them.
    The same corpus prepared again with the same recipe gives the same fingerprint; a moved copy too."""
    shards = [{"max_seq_length": shard.max_seq_length, "vocabulary": shard.tokenizer.vocab_sha256, "shard": shard.shard,
               "summary": {k: v for k, v in shard.summary.items() if k not in _NOT_IDENTITY},
               # pairs add nothing: data prepared before segments existed keeps its fingerprint
               **({"examples": shard.examples} if shard.examples != "pairs" else {})}
              for shard in metadata.shards]
    return hashlib.sha256(json.dumps(shards, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def read_data_metadata(path: str | Path) -> DataMetadata:
    """The metadata of a prepared dataset, or of several shards under one directory, checked to agree.

    A missing, damaged or newer-format ``prepare.json`` and shards of different tokenizers, lengths or
    kinds of examples are each one line naming the file.
    """
    path = Path(path)
    if (path / METADATA_FILE).exists():
        roots = [path]
    else:
        roots = sorted(p.parent for p in path.glob(f"*/{METADATA_FILE}"))
    if not roots:
        raise BertpreError(f"{path}: not a prepared dataset (no {METADATA_FILE}); run `bertpre prepare` first")
    shards = tuple(read_shard_metadata(root) for root in roots)
    first = shards[0]
    for shard in shards[1:]:
        if shard.tokenizer.vocab_sha256 != first.tokenizer.vocab_sha256:
            raise BertpreError(f"{shard.root}: prepared with a different tokenizer than {first.root}")
        if shard.max_seq_length != first.max_seq_length:
            raise BertpreError(f"{shard.root}: max_seq_length {shard.max_seq_length} differs from "
                               f"{first.max_seq_length} in {first.root}")
        if shard.examples != first.examples:
            raise BertpreError(f"{shard.root}: prepared as {shard.examples} but {first.root} as {first.examples}; "
                               "prepare every shard with the same --examples")
    return DataMetadata(shards)


def read_shard_metadata(root: Path) -> ShardMetadata:
    """One shard's ``prepare.json``, every field checked for its type."""
    file = root / METADATA_FILE
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
        tokenizer = record["tokenizer"]
        info = TokenizerInfo(path=_typed(tokenizer["path"], str), vocab_size=_typed(tokenizer["vocab_size"], int),
                             vocab_sha256=_typed(tokenizer["vocab_sha256"], str),
                             cls_id=_optional_int(tokenizer.get("cls_id")), sep_id=_optional_int(tokenizer.get("sep_id")),
                             pad_id=_typed(tokenizer.get("pad_id", 0), int),
                             mask_id=_optional_int(tokenizer.get("mask_id")))
        shard = ShardMetadata(root=root, max_seq_length=_typed(record["max_seq_length"], int), tokenizer=info,
                              shard=record.get("shard"), summary=_typed(record.get("summary", {}), dict),
                              format_version=_typed(record.get("format_version", DATA_FORMAT_VERSION), int),
                              examples=_typed(record.get("examples", "pairs"), str))
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        raise BertpreError(f"{file}: damaged (not the JSON `bertpre prepare` writes); prepare the data again") from None
    if shard.format_version > DATA_FORMAT_VERSION:
        raise BertpreError(f"{file}: written by a newer bertpre (data format {shard.format_version}, this one reads "
                           f"{DATA_FORMAT_VERSION}); upgrade bertpre or prepare the data again")
    if shard.examples not in EXAMPLES:
        raise BertpreError(f"{file}: examples {shard.examples!r} is none of {', '.join(EXAMPLES)} (written by a newer "
                           "bertpre?); upgrade bertpre or prepare the data again")
    return shard


def _typed(value: Any, kind: type) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"expected {kind.__name__}")
    return value


def _optional_int(value: Any) -> Optional[int]:
    return None if value is None else _typed(value, int)
