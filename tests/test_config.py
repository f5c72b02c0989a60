"""Configs: YAML files are typed dataclass instances; bad keys, types and values are one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import transformers

from bertpre.core.config import load_config
from bertpre.core.configs import MODEL_SIZES, ModelConfig, PretrainConfig, TokenizerConfig
from bertpre.core.errors import ConfigError

from .conftest import REPO

SHAPES = {  # name: (layers, hidden, heads)
    "tiny": (2, 128, 2), "mini": (4, 256, 4), "small": (4, 512, 8),
    "medium": (8, 512, 8), "base": (12, 768, 12), "large": (24, 1024, 16),
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_model_size_configs_have_berts_shapes(name: str) -> None:
    config = load_config(ModelConfig, REPO / "configs" / "model" / f"{name}.yaml")
    layers, hidden, heads = SHAPES[name]
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (layers, hidden, heads)
    assert config.intermediate_size == 4 * hidden
    assert config.vocab_size == 30522 and config.max_position_embeddings == 512
    # every field is a BertConfig field with the same meaning
    hf = transformers.BertConfig(**vars(config))
    assert hf.hidden_size == hidden and hf.num_hidden_layers == layers
    assert all(getattr(config, key) == value for key, value in MODEL_SIZES[name].items())


def test_unknown_key_names_file_key_and_closest_valid_key(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text("hiden_size: 256\n")
    with pytest.raises(ConfigError) as error:
        load_config(ModelConfig, path)
    message = str(error.value)
    assert str(path) in message and "hiden_size" in message and "'hidden_size'" in message
    assert "\n" not in message


def test_wrong_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text("num_hidden_layers: two\n")
    with pytest.raises(ConfigError, match=r"model.yaml: num_hidden_layers: expected an integer"):
        load_config(ModelConfig, path)
    with pytest.raises(ConfigError, match="expected true or false"):
        load_config(TokenizerConfig, None, {"lowercase": "maybe"})


def test_impossible_values_are_refused() -> None:
    with pytest.raises(ConfigError, match="hidden_size: 100 is not divisible by num_attention_heads=3"):
        load_config(ModelConfig, None, {"hidden_size": "100", "num_attention_heads": "3"})
    with pytest.raises(ConfigError, match="vocab_size"):
        load_config(ModelConfig, None, {"vocab_size": "4"})
    with pytest.raises(ConfigError, match="vocab_size: 5 leaves no room"):
        load_config(TokenizerConfig, None, {"vocab_size": "5"})
    with pytest.raises(ConfigError, match="hidden_dropout_prob"):
        load_config(ModelConfig, None, {"hidden_dropout_prob": "1.5"})
    with pytest.raises(ConfigError, match="document_boundary: 'pages' is not one of"):
        load_config(TokenizerConfig, None, {"document_boundary": "pages"})


def test_command_line_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tok.yaml"
    path.write_text("vocab_size: 1000\nlowercase: false\ninputs: [a.txt]\n")
    config = load_config(TokenizerConfig, path, {"vocab_size": "2000", "inputs": ["b.txt", "c.txt"]})
    assert config.vocab_size == 2000 and config.lowercase is False and config.inputs == ["b.txt", "c.txt"]


def test_invalid_yaml_and_missing_file_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("vocab_size: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: line"):
        load_config(TokenizerConfig, path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(TokenizerConfig, tmp_path / "nope.yaml")


def test_pretrain_options_are_grouped_and_accept_flat_and_grouped_spellings(tmp_path: Path) -> None:
    from bertpre.core.config import save_config
    from bertpre.core.configs import PretrainConfig

    flat = tmp_path / "flat.yaml"
    flat.write_text("max_steps: 10\nlearning_rate: 3.0e-4\nglobal_batch_size: 64\nlog_every: 5\n")
    grouped = tmp_path / "grouped.yaml"
    grouped.write_text("schedule: {max_steps: 10}\noptimization: {learning_rate: 3.0e-4}\n"
                       "batches: {global_batch_size: 64}\nlogging: {log_every: 5}\n")
    from_flat, from_grouped = load_config(PretrainConfig, flat), load_config(PretrainConfig, grouped)
    assert from_flat == from_grouped
    assert (from_flat.optimization.learning_rate, from_flat.schedule.max_steps) == (3e-4, 10)
    assert from_flat.batches.global_batch_size == 64 and from_flat.logging.log_every == 5
    # a flat command-line override wins over the grouped file
    assert load_config(PretrainConfig, grouped, {"learning_rate": "1e-3"}).optimization.learning_rate == 1e-3
    # what a run saves (grouped) loads back to the same config
    save_config(from_flat, tmp_path / "saved.yaml")
    assert "optimization:" in (tmp_path / "saved.yaml").read_text()
    assert load_config(PretrainConfig, tmp_path / "saved.yaml") == from_flat


def test_a_grouped_option_given_twice_or_misspelt_is_refused(tmp_path: Path) -> None:
    from bertpre.core.configs import PretrainConfig

    twice = tmp_path / "twice.yaml"
    twice.write_text("max_steps: 10\nlearning_rate: 1.0e-3\noptimization: {learning_rate: 2.0e-3}\n")
    with pytest.raises(ConfigError, match="learning_rate: given twice"):
        load_config(PretrainConfig, twice)
    typo = tmp_path / "typo.yaml"
    typo.write_text("max_steps: 10\nlearning_rat: 1.0e-3\n")
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        load_config(PretrainConfig, typo)


def test_command_line_text_is_read_as_its_field_needs(tmp_path: Path) -> None:
    from bertpre.core.configs import ExportConfig, FinetuneConfig

    # status prints step-00000100; YAML 1.1 would read 00000100 as octal 64 and export another checkpoint
    assert load_config(ExportConfig, overrides={"step": "00000100"}).step == "00000100"
    assert load_config(PretrainConfig, overrides={"max_steps": "0100"}).schedule.max_steps == 100
    assert load_config(PretrainConfig, overrides={"max_minutes": "010"}).schedule.max_minutes == 10.0
    finetune = load_config(FinetuneConfig, overrides={"text_column": "no", "label_column": "on",
                                                      "text_pair_column": "null"})
    assert (finetune.text_column, finetune.label_column, finetune.text_pair_column) == ("no", "on", None)
    assert load_config(PretrainConfig, overrides={"learning_rate": "1e-3", "max_steps": "5"}).optimization.learning_rate == 1e-3


def test_a_config_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "latin1.yaml"
    config.write_bytes("output: runs/caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="latin1.yaml: not UTF-8 .*save the config as UTF-8"):
        load_config(PretrainConfig, config)


@pytest.mark.parametrize("text, key, lines", [
    ("vocab_size: 8000\noutput: runs/tok\nvocab_size: 300\n", "vocab_size", (1, 3)),
    ("model:\n  hidden_size: 64\n  num_hidden_layers: 2\n  hidden_size: 32\nmax_steps: 4\n", "hidden_size", (2, 4)),
    ("{max_steps: 4, seed: 1, seed: 2}\n", "seed", (1, 1)),
])
def test_a_key_given_twice_is_refused_naming_the_key_and_both_lines(tmp_path: Path, text: str, key: str,
                                                                    lines: tuple[int, int]) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    cls = TokenizerConfig if "vocab_size" in text else PretrainConfig
    with pytest.raises(ConfigError, match=f"key '{key}' given twice, on lines {lines[0]} and {lines[1]}"):
        load_config(cls, path)


def test_a_merge_key_override_is_not_a_duplicate_and_python_tags_never_run(tmp_path: Path) -> None:
    merged = tmp_path / "merged.yaml"
    merged.write_text("base: &base {hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 2, "
                      "intermediate_size: 256}\nmodel:\n  <<: *base\n  hidden_size: 32\n")
    from bertpre.core.config import read_yaml

    assert read_yaml(merged)["model"]["hidden_size"] == 32  # YAML's own override, as written
    marker = tmp_path / "ran"
    hostile = tmp_path / "hostile.yaml"
    hostile.write_text(f'max_steps: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError, match="could not determine a constructor"):
        load_config(PretrainConfig, hostile)
    assert not marker.exists()
