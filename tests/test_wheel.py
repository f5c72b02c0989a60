"""bertpre as a user gets it from a wheel: built, installed in a fresh virtual environment, run from an
empty directory, with the packaged tokenizer and configs and nothing from this checkout.

To stay fast and offline the fresh environment borrows the dependencies (torch, transformers, …) of
the environment running the tests through a ``.pth`` file, leaving bertpre itself out of it: bertpre
can come only from the wheel. ``make test-wheel`` runs this file alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO

SOURCES = ("pyproject.toml", "README.md", "bertpre", "tokenizer", "configs")


def run(command: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command; it must succeed."""
    done = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the sources (building in the checkout would leave build/ behind)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", tmp_path / "wheels", source], cwd=tmp_path)
    (wheel,) = (tmp_path / "wheels").glob("bertpre-*.whl")
    return wheel


def fresh_environment(tmp_path: Path) -> Path:
    """A new virtual environment that sees this one's dependencies but not its bertpre; its python."""
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    dependencies = tmp_path / "dependencies"
    dependencies.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(("bertpre", "__editable__")) and entry.suffix != ".pth":
            (dependencies / entry.name).symlink_to(entry)
    python = venv / "bin" / "python"
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path)
    (Path(purelib.stdout.strip()) / "dependencies.pth").write_text(f"{dependencies}\n")
    return python


def three_package_corpus(directory: Path) -> list[Path]:
    """The documentation of three standard-library packages, one file each (a document per module):
    the quickstart's classifier task then tells the files apart, on a corpus small enough to be quick."""
    from bertpre.core.configs import BUILTIN_PYTHON_DOCS, CorpusConfig
    from bertpre.readers.corpus import read_documents

    documents: dict[str, list[str]] = {"asyncio": [], "email": [], "importlib": []}
    for document in read_documents(CorpusConfig(inputs=[BUILTIN_PYTHON_DOCS])):
        package = document.id.rsplit(":", 1)[-1].split(".")[0]
        if package in documents and len(document.paragraphs) >= 2:
            documents[package].append("\n".join(document.paragraphs[:10]))
    directory.mkdir()
    for package, texts in documents.items():
        assert len(texts) >= 10, f"{package}: only {len(texts)} documented modules"
        (directory / f"{package}.txt").write_text("\n\n".join(texts) + "\n", encoding="utf-8")
    return sorted(directory.glob("*.txt"))


@pytest.mark.slow
def test_the_wheel_ships_the_defaults_and_runs_the_quickstart_from_an_empty_directory(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    shipped = set(zipfile.ZipFile(wheel).namelist())
    defaults = [path.relative_to(REPO).as_posix() for name in ("tokenizer", "configs")
                for path in sorted((REPO / name).rglob("*")) if path.is_file() and "__pycache__" not in path.parts]
    assert defaults and not [name for name in defaults if f"bertpre/defaults/{name}" not in shipped]

    python = fresh_environment(tmp_path)
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel],
        cwd=tmp_path)
    venv = python.parent.parent
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    where = run([python, "-c", "import bertpre; print(bertpre.__file__)"], cwd=empty, env=env).stdout.strip()
    assert Path(where).is_relative_to(venv) and not Path(where).is_relative_to(REPO), where
    packaged = Path(where).parent / "defaults"

    bertpre = venv / "bin" / "bertpre"
    corpus = three_package_corpus(tmp_path / "corpus")
    quickstart = run([bertpre, "quickstart", "--inputs", *corpus, "--num-classes", "3", "--output", "qs",
                      "--vocab-size", "2000", "--max-seq-length", "64", "--pretrain-steps", "10", "--batch-size", "16",
                      "--finetune-epochs", "1"], cwd=empty, env=env)
    for result in ("tokenizer/vocab.txt", "data/prepare.json", "model/model.safetensors", "model/config.json",
                   "classifier/model/model.safetensors", "classifier/predictions.jsonl", "pretrain/report.html"):
        assert (empty / "qs" / result).is_file(), f"{result} missing\n{quickstart.stdout[-2000:]}"

    prepared = run([bertpre, "prepare", "--inputs", corpus[0], "--max-seq-length", "64", "--num-workers", "1",
                    "--output", "data"], cwd=empty, env=env)
    assert f"--tokenizer tokenizer: bertpre's packaged default tokenizer ({packaged / 'tokenizer'})" in prepared.stderr
    pretrained = run([bertpre, "pretrain", "--config", "configs/pretrain/tiny-cpu.yaml", "--data", "data",
                      "--output", "tiny", "--max-steps", "2", "--max-minutes", "null", "--eval-every", "0"],
                     cwd=empty, env=env)
    assert f"using bertpre's packaged copy ({packaged / 'configs/pretrain/tiny-cpu.yaml'})" in pretrained.stderr
    assert (empty / "tiny" / "checkpoints" / "step-00000002").is_dir()
    assert sorted(path.name for path in empty.iterdir()) == ["data", "qs", "tiny"]
