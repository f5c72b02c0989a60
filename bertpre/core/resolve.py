"""What a tokenizer, model or config named on the command line is: a local path, a default shipped
inside bertpre, or a Hugging Face Hub id.

The repository's ``tokenizer/`` and ``configs/`` are installed with the package (pyproject.toml maps
them to ``bertpre/defaults/``), so ``--tokenizer tokenizer`` and ``configs/model/mini.yaml`` work
from any directory. The order is always: a local path, then bertpre's packaged copy, then (for
tokenizers and models) a Hub id, downloaded or, with ``HF_HUB_OFFLINE=1``, taken from the cache.
"""

from __future__ import annotations

import os
import re
import sys
from importlib import resources
from pathlib import Path, PurePosixPath

from bertpre.core.errors import BertpreError

PACKAGED_ROOTS = ("tokenizer", "configs")
"""The repository directories shipped inside the package, under ``bertpre/defaults/``."""

TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                   "config.json"]  # config.json: transformers reads the model type from it
MODEL_FILES = [*TOKENIZER_FILES, "model*.safetensors", "model.safetensors.index.json", "README.md"]  # README: the model card

_HUB_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_HUB_ID = re.compile(rf"^(?:{_HUB_NAME}/)?{_HUB_NAME}$")


def packaged_path(relative: str | Path) -> Path | None:
    """bertpre's installed copy of ``tokenizer`` or ``configs/…`` (a repository-relative path), if it has one."""
    parts = [part for part in PurePosixPath(str(relative).replace(os.sep, "/")).parts if part != "."]
    if not parts or parts[0] not in PACKAGED_ROOTS or ".." in parts:
        return None
    candidate = _packaged_root(parts[0]).joinpath(*parts[1:])
    return candidate if candidate.exists() else None


def _packaged_root(name: str) -> Path:
    package = Path(str(resources.files("bertpre")))
    shipped = package / "defaults" / name  # where a wheel puts it
    if shipped.is_dir():
        return shipped
    # An editable install (`make install`) or a source checkout: the package-dir mapping points at the
    # repository's own directory, beside bertpre/; editable finders cannot import it under bertpre.
    return package.parent / name


def packaged_configs(kind: str) -> list[str]:
    """The names of the configs shipped as ``configs/KIND/NAME.yaml`` (the model sizes for ``model``)."""
    directory = packaged_path(f"configs/{kind}")
    return sorted(path.stem for path in directory.glob("*.yaml")) if directory else []


def config_file(path: str | Path, kind: str | None = None) -> Path:
    """A YAML config file: the local file; else bertpre's packaged copy of the same relative path
    (``configs/pretrain/tiny-cpu.yaml``); else, for a bare name, the packaged ``configs/KIND/NAME.yaml``
    (``model: mini``). Returns the local path when none exists, for the reader to report."""
    local = Path(path)
    if local.is_file():
        return local
    packaged = packaged_path(path)
    if packaged is not None and packaged.is_file():
        announce(f"{path}: not in this directory; using bertpre's packaged copy ({packaged})")
        return packaged
    named = f"configs/{kind}/{path}.yaml"
    if kind and re.fullmatch(r"[A-Za-z0-9_-]+", str(path)) and packaged_path(named) is not None:
        announce(f"{kind} {path}: bertpre's packaged {named} ({packaged_path(named)})")
        return packaged_path(named)
    return local


def tokenizer_directory(name: str | Path, option: str = "--tokenizer") -> Path:
    """The directory of a tokenizer named ``name``: local, packaged (``tokenizer``) or a Hub id."""
    local = Path(name).expanduser()
    packaged = None if local.exists() else packaged_path(name)
    if packaged is not None and packaged.is_dir():
        announce(f"{option} {name}: bertpre's packaged default tokenizer ({packaged})")
        return packaged
    return _local_or_hub(name, option, TOKENIZER_FILES, "tokenizer")


def model_directory(name: str | Path, option: str = "--model") -> Path:
    """The directory of a model named ``name``: a local directory or a Hub id (config, weights, tokenizer)."""
    return _local_or_hub(name, option, MODEL_FILES, "model")


def _local_or_hub(name: str | Path, option: str, files: list[str], what: str) -> Path:
    local = Path(name).expanduser()
    if local.exists():
        return local
    if looks_like_hub_id(str(name)):
        snapshot = hub_snapshot(str(name), option, files)
        announce(f"{option} {name}: Hugging Face Hub {what} ({snapshot})")
        return snapshot
    return local  # not found anywhere: the stage's own check says so, naming the path


def looks_like_hub_id(name: str) -> bool:
    """Whether ``name`` is spelled as a Hub repository id, ``NAME`` or ``ORG/NAME``."""
    return len(name) <= 96 and bool(_HUB_ID.match(name)) and ".." not in name and "--" not in name


def hub_offline() -> bool:
    """Whether the Hub may not be reached (``HF_HUB_OFFLINE=1``, as transformers and datasets read it)."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.HF_HUB_OFFLINE or flag.upper() in {"1", "ON", "YES", "TRUE"}


def hub_snapshot(repo_id: str, option: str, files: list[str]) -> Path:
    """The cached snapshot of Hub repository ``repo_id`` holding ``files`` (glob patterns); downloaded
    unless offline. Any failure is one line naming the option and what to do."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    offline = hub_offline()
    fix = f"download it with `hf download {repo_id}` or give a path"
    try:
        return Path(snapshot_download(repo_id, allow_patterns=files, local_files_only=offline))
    except GatedRepoError:
        raise BertpreError(f"{option} {repo_id}: a gated Hugging Face repository; accept its terms on the Hub and "
                           "log in with `hf auth login`, or give a path") from None
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise BertpreError(f"{option} {repo_id}: not a local directory and not a repository on the Hugging Face "
                           "Hub (private ones need `hf auth login`); give a path or a Hub id") from None
    except LocalEntryNotFoundError:
        if offline:
            raise BertpreError(f"{option} {repo_id}: not a local directory and not in the Hugging Face cache "
                               f"(offline); {fix}") from None
        raise BertpreError(f"{option} {repo_id}: not a local directory, not in the Hugging Face cache, and the Hub "
                           f"could not be reached; {fix}") from None
    except Exception as error:  # a damaged or unwritable cache, a bad id, httpx's network errors (not OSErrors)
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BertpreError(f"{option} {repo_id}: could not get it from the Hugging Face Hub ({first[:160]}); "
                           f"{fix}") from None


def announce(message: str) -> None:
    """Say where a name was found when it was not a local path (once per job: on the main process)."""
    if os.environ.get("RANK", "0") == "0":
        print(f"bertpre: {message}", file=sys.stderr)
