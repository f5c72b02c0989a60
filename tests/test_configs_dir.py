"""Every YAML file under configs/ loads as the config it is an instance of."""

from __future__ import annotations

import pytest

from bertpre.config import ModelConfig, PrepareConfig, load_config

from .conftest import REPO

KINDS = {"model": ModelConfig, "data": PrepareConfig}


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_file_is_valid(path) -> None:
    kind = path.parent.name
    if kind not in KINDS:
        pytest.skip(f"configs/{kind} is checked by its own stage's tests")
    load_config(KINDS[kind], path)
