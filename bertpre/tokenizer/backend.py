"""A tokenizer directory's Rust tokenizer (`tokenizers`), loaded without transformers and so without torch.

`bertpre prepare` tokenizes with `tokenizers` itself, in large batches in each worker: the same ids as
``AutoTokenizer`` gives, without its per-call wrapper or its seconds of imports. transformers does not
always run a directory's ``tokenizer.json`` as it stands: its ``BertTokenizer`` rebuilds the normaliser,
pre-tokeniser and WordPiece model from ``tokenizer_config.json`` (``do_lower_case``, ``strip_accents``,
…) and adds special tokens the file lacks. So the file is used directly only when it is exactly what
transformers would build; any other directory (a ``vocab.txt`` alone, a config that disagrees with the
file, another tokenizer class) is loaded through transformers and its backend taken from there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from bertpre.core.errors import BertpreError
from bertpre.core.resolve import tokenizer_directory
from bertpre.tokenizer.files import check_wordpiece_files, load_tokenizer

SPECIAL_TOKEN_NAMES = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_BERT_DEFAULTS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                  "mask_token": "[MASK]"}  # BertTokenizer's own, for a config that names none
_BERT_CLASSES = {"BertTokenizer", "BertTokenizerFast"}
_WORDPIECE_MAX_WORD = 100  # what BertTokenizer passes to WordPiece (its default)


@dataclass(frozen=True)
class BackendTokenizer:
    """What prepare needs of a tokenizer directory: the Rust tokenizer (as JSON, to rebuild in each worker
    process) and the facts it checks, as ``AutoTokenizer`` would report them."""

    json: str
    vocab: dict[str, int]
    model_max_length: int
    special_ids: dict[str, Optional[int]]  # cls, sep, pad, mask, unk → id (None: the tokenizer lacks it)
    loaded_by: str  # "tokenizers" (tokenizer.json as it stands) or "transformers"

    def __len__(self) -> int:
        return len(self.vocab)

    def build(self):  # noqa: ANN201 - a tokenizers.Tokenizer
        """A fresh ``tokenizers.Tokenizer``: no truncation, no padding, as transformers calls it for prepare."""
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(self.json)
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer


def load_backend_tokenizer(directory: str | Path) -> BackendTokenizer:
    """The Rust tokenizer of ``directory`` (a path, ``tokenizer`` or a Hub id) with its vocabulary and special ids.

    Raises BertpreError, in one line, for a directory that is no BERT WordPiece tokenizer, as
    :func:`bertpre.tokenizer.files.load_tokenizer` does.
    """
    directory = tokenizer_directory(directory)
    if not directory.is_dir():
        raise BertpreError(f"{directory}: tokenizer directory not found (train one with `bertpre tokenizer train`)")
    check_wordpiece_files(directory)
    direct = _as_transformers_builds_it(directory)
    return direct if direct is not None else _through_transformers(directory)


def _as_transformers_builds_it(directory: Path) -> Optional[BackendTokenizer]:
    """``tokenizer.json`` loaded as it stands, when transformers' BertTokenizer would build the same; else None."""
    from tokenizers import Tokenizer

    if not (directory / "tokenizer.json").is_file():
        return None
    text = (directory / "tokenizer.json").read_text(encoding="utf-8")
    spec = json.loads(text)  # check_wordpiece_files has parsed it already
    config = _json_file(directory / "tokenizer_config.json")
    specials = _special_tokens(directory, config)
    if config is None or specials is None or not _same_pipeline(spec, config, specials):
        return None
    max_length = config.get("model_max_length", _UNLIMITED)
    if not isinstance(max_length, int) or isinstance(max_length, bool):
        return None
    try:
        tokenizer = Tokenizer.from_str(text)
    except Exception:  # noqa: BLE001 - a file tokenizers cannot read: transformers' own message says why
        return None
    ids = {name[:-6]: tokenizer.token_to_id(token) for name, token in specials.items()}
    return BackendTokenizer(json=text, vocab=tokenizer.get_vocab(with_added_tokens=True), model_max_length=max_length,
                            special_ids=ids, loaded_by="tokenizers")


_UNLIMITED = int(1e30)  # transformers' model_max_length when the config names none (VERY_LARGE_INTEGER)


def _json_file(path: Path) -> Optional[dict[str, Any]]:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _special_tokens(directory: Path, config: Optional[dict[str, Any]]) -> Optional[dict[str, str]]:
    """The five named special tokens, or None when tokenizer_config.json and special_tokens_map.json disagree
    (which of them transformers believes is its own business)."""
    if config is None:
        return None
    mapped = _json_file(directory / "special_tokens_map.json") or {}
    tokens = {}
    for name in SPECIAL_TOKEN_NAMES:
        named = {_token_text(source[name]) for source in (config, mapped) if source.get(name) is not None}
        if len(named) > 1 or None in named:
            return None
        tokens[name] = named.pop() if named else _BERT_DEFAULTS[name]
    return tokens


def _token_text(entry: Any) -> Optional[str]:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("content"), str):
        return entry["content"]
    return None


def _same_pipeline(spec: dict[str, Any], config: dict[str, Any], specials: dict[str, str]) -> bool:
    """Whether transformers' BertTokenizer, built from ``config``, tokenizes text as ``spec`` (tokenizer.json) does."""
    if config.get("tokenizer_class") not in _BERT_CLASSES or config.get("split_special_tokens"):
        return False
    if config.get("added_tokens_decoder") or config.get("extra_special_tokens") or config.get("additional_special_tokens"):
        return False  # tokens transformers may add or re-flag: let it
    expected_normalizer = {"type": "BertNormalizer", "clean_text": True,
                           "handle_chinese_chars": config.get("tokenize_chinese_chars", True),
                           "strip_accents": config.get("strip_accents"), "lowercase": config.get("do_lower_case", True)}
    model = spec.get("model") or {}
    if (spec.get("normalizer") != expected_normalizer or spec.get("pre_tokenizer") != {"type": "BertPreTokenizer"}
            or model.get("unk_token") != specials["unk_token"] or model.get("continuing_subword_prefix") != "##"
            or model.get("max_input_chars_per_word") != _WORDPIECE_MAX_WORD):
        return False
    added = {token.get("content"): token for token in spec.get("added_tokens") or []}
    return all(token in added and added[token].get("special") and not added[token].get("normalized")
               and not (added[token].get("lstrip") or added[token].get("rstrip") or added[token].get("single_word"))
               for token in specials.values())


def _through_transformers(directory: Path) -> BackendTokenizer:
    tokenizer = load_tokenizer(directory)
    max_length = getattr(tokenizer, "model_max_length", None) or _UNLIMITED
    ids = {name[:-6]: getattr(tokenizer, f"{name}_id", None) for name in SPECIAL_TOKEN_NAMES}
    return BackendTokenizer(json=tokenizer.backend_tokenizer.to_str(), vocab=dict(tokenizer.get_vocab()),
                            model_max_length=int(min(max_length, _UNLIMITED)), special_ids=ids,
                            loaded_by="transformers")
