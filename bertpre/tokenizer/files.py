"""A tokenizer directory: the Hugging Face files it holds, loading it, copying it beside data and models."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Optional

from bertpre.core.errors import BertpreError
from bertpre.core.resolve import tokenizer_directory

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def load_tokenizer(directory: str | Path):  # noqa: ANN201 - a transformers tokenizer
    """Load a tokenizer with ``AutoTokenizer`` and check BERT's special tokens are present.

    ``directory`` is a local directory, ``tokenizer`` (bertpre's packaged default) or a Hub id (see ``bertpre/core/resolve.py``).
    """
    from transformers import AutoTokenizer

    directory = tokenizer_directory(directory)
    if not directory.is_dir():
        raise BertpreError(f"{directory}: tokenizer directory not found (train one with `bertpre tokenizer train`)")
    check_wordpiece_files(directory)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except Exception as error:  # transformers raises many types for a broken directory
        raise BertpreError(f"{directory}: not a loadable tokenizer ({type(error).__name__}: "
                           f"{str(error).splitlines()[0] if str(error) else ''})") from None
    for name in ("pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id"):
        if getattr(tokenizer, name, None) is None:
            raise BertpreError(f"{directory}: tokenizer has no {name[:-3]}; is it a BERT WordPiece tokenizer?")
    return tokenizer


REMOTE_CODE_KEYS = ("auto_map",)
"""Keys of ``config.json`` / ``tokenizer_config.json`` that name Python files of the directory to import: code
that ``trust_remote_code`` would run. bertpre never sets it, and refuses such a directory outright (an
interactive transformers would ask, and a tired user might say yes)."""


def refuse_remote_code(directory: str | Path) -> None:
    """Refuse a model or tokenizer directory whose configs ask to run code of their own."""
    for name in ("config.json", "tokenizer_config.json"):
        path = Path(directory) / name
        try:
            record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, UnicodeDecodeError, ValueError):
            continue  # unreadable: the reader of that file says so
        asks = [key for key in REMOTE_CODE_KEYS if isinstance(record, dict) and key in record]
        if asks:
            raise BertpreError(f"{path}: asks to run Python code shipped with it ({asks[0]}: "
                               f"{json.dumps(record[asks[0]])[:80]}); bertpre never runs code from a model or "
                               "tokenizer directory: use a plain BERT directory")


def check_wordpiece_files(directory: Path) -> None:
    """A real BERT WordPiece tokenizer lies here: tokenizer.json of a WordPiece model, or a vocab.txt; and it
    asks to run no code of its own."""
    refuse_remote_code(directory)
    if not any((directory / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
        what = "a model directory without tokenizer files" if (directory / "config.json").exists() else "not a tokenizer"
        raise BertpreError(f"{directory}: {what} (no tokenizer.json or vocab.txt); pass a tokenizer directory, "
                           "e.g. one written by `bertpre tokenizer train` or a BERT model's own directory")
    if (directory / "tokenizer.json").is_file():
        try:
            model_type = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))["model"]["type"]
        except (ValueError, KeyError, TypeError):
            raise BertpreError(f"{directory}/tokenizer.json: not a valid tokenizer file (cut short or edited?); "
                               "copy or train the tokenizer again") from None
        if model_type != "WordPiece":
            raise BertpreError(f"{directory}: a {model_type} tokenizer; BERT needs WordPiece (train one with "
                               "`bertpre tokenizer train`)")


def vocabulary_digest(tokens_by_id: list[str]) -> str:
    """A short fingerprint of a vocabulary: its tokens in id order. Two tokenizers of one size but other
    tokens (bertpre's and bert-base-uncased's are both 30,522) have different fingerprints."""
    return hashlib.sha256("\n".join(tokens_by_id).encode()).hexdigest()[:16]


def vocab_file_tokens(vocab_file: Path) -> list[str]:
    """The tokens of a ``vocab.txt``, one per line in id order (a final newline ends the last, adds none)."""
    lines = vocab_file.read_text(encoding="utf-8").split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def directory_vocabulary_digest(directory: str | Path) -> Optional[str]:
    """The :func:`vocabulary_digest` of a tokenizer or model directory's vocab.txt (or tokenizer.json);
    None when it has neither (a bertpre checkpoint) or they cannot be read."""
    return next(iter(vocabulary_digests(directory).values()), None)


def vocabulary_digests(directory: str | Path) -> dict[str, str]:
    """The :func:`vocabulary_digest` of each of a directory's vocab.txt and tokenizer.json that can be read (the
    fast tokenizer reads tokenizer.json, the classic one vocab.txt: both must be the same vocabulary)."""
    directory = Path(directory)
    digests = {}
    try:
        if (directory / "vocab.txt").is_file():
            digests["vocab.txt"] = vocabulary_digest(vocab_file_tokens(directory / "vocab.txt"))
    except (OSError, UnicodeDecodeError, ValueError):
        pass
    try:
        if (directory / "tokenizer.json").is_file():
            spec = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))
            vocab = {**spec["model"]["vocab"], **{token["content"]: token["id"] for token in spec.get("added_tokens", [])}}
            digests["tokenizer.json"] = vocabulary_digest(sorted(vocab, key=vocab.__getitem__))  # as get_vocab() gives
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return digests


def copy_tokenizer_files(source: str | Path, destination: str | Path) -> None:
    """Copy the tokenizer files that ``source`` has into the existing directory ``destination``."""
    for name in TOKENIZER_FILES:
        if (Path(source) / name).exists():
            shutil.copy2(Path(source) / name, Path(destination) / name)
