"""The Rust tokenizer `bertpre prepare` runs gives the ids, vocabulary and special ids `AutoTokenizer` gives,
for tokenizer directories of every kind: its own file where that is safe, transformers' backend otherwise."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from bertpre.core.errors import BertpreError
from bertpre.tokenizer.backend import load_backend_tokenizer

from .conftest import REPO

TEXTS = ["The Café at Zürich opened in 1887, e.g. on Jan. 5.", "naïve façade ÉCOLE", "北京大学 and 東京",
         "a [MASK] token, a [CLS] and [SEP] in the text", "control\x00chars\u200b and\ttabs",
         "a" * 150 + " word longer than WordPiece reads",
         " ".join(["many words make a sentence longer than one hundred and twenty eight tokens"] * 20)]


def copy_of(source: Path, directory: Path, *names: str) -> Path:
    directory.mkdir()
    for name in names:
        shutil.copy(source / name, directory / name)
    return directory


def edited_config(directory: Path, **changes: object) -> Path:
    path = directory / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return directory


def directories(tmp_path: Path, minilm_dir: Path) -> dict[str, tuple[Path, str]]:
    """Tokenizer directories, and who should build the tokenizer for each."""
    files = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
    return {
        "bertpre's default": (REPO / "tokenizer", "tokenizers"),
        "bert-base-uncased's (truncation and padding in its file)": (minilm_dir, "tokenizers"),
        "a config saying cased for an uncased file": (
            edited_config(copy_of(REPO / "tokenizer", tmp_path / "cased", *files), do_lower_case=False), "transformers"),
        "a config keeping accents": (
            edited_config(copy_of(REPO / "tokenizer", tmp_path / "accents", *files), strip_accents=False), "transformers"),
        "vocab.txt alone": (copy_of(REPO / "tokenizer", tmp_path / "vocab-only", "vocab.txt", "tokenizer_config.json"),
                            "transformers"),
        "another tokenizer class": (edited_config(copy_of(REPO / "tokenizer", tmp_path / "other", *files),
                                                  tokenizer_class="DistilBertTokenizer"), "transformers"),
    }


def test_ids_vocabulary_and_special_ids_are_those_of_autotokenizer(tmp_path: Path, minilm_dir: Path) -> None:
    for name, (directory, builder) in directories(tmp_path, minilm_dir).items():
        expected = AutoTokenizer.from_pretrained(directory)
        backend = load_backend_tokenizer(directory)
        assert backend.loaded_by == builder, name
        ids = [encoding.ids for encoding in backend.build().encode_batch(TEXTS, add_special_tokens=False)]
        assert ids == expected(TEXTS, add_special_tokens=False)["input_ids"], name
        assert backend.vocab == expected.get_vocab() and len(backend) == len(expected), name
        for special in ("cls", "sep", "pad", "mask", "unk"):
            assert backend.special_ids[special] == getattr(expected, f"{special}_token_id"), (name, special)
        assert backend.model_max_length == expected.model_max_length, name


def test_a_directory_that_is_no_tokenizer_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(BertpreError, match="tokenizer directory not found"):
        load_backend_tokenizer(tmp_path / "nothing")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    with pytest.raises(BertpreError, match="a model directory without tokenizer files"):
        load_backend_tokenizer(tmp_path / "model")
