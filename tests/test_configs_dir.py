"""Every YAML file under configs/ loads as the config it is an instance of."""

from __future__ import annotations

import pytest

from bertpre.core.config import load_config
from bertpre.core.configs import ModelConfig, PrepareConfig, PretrainConfig

from .conftest import REPO

KINDS = {"model": ModelConfig, "data": PrepareConfig, "pretrain": PretrainConfig}


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_file_is_valid(path) -> None:
    kind = path.parent.name
    if kind not in KINDS:
        pytest.skip(f"configs/{kind} is checked by its own stage's tests")
    load_config(KINDS[kind], path)


def test_pretrain_recipes_name_their_model_size() -> None:
    config = load_config(PretrainConfig, REPO / "configs" / "pretrain" / "bert-base-phase1.yaml")
    assert (config.model.num_hidden_layers, config.model.hidden_size) == (12, 768)
    assert config.batches.global_batch_size % config.batches.per_device_batch_size == 0

