"""The command line: help for every option, one-line errors with exit status 2, no tracebacks."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import subprocess
import sys
from pathlib import Path

import pytest

from bertpre.cli import build_parser
from bertpre.core.configs import TokenizerConfig


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bertpre", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_commands_and_every_tokenizer_option() -> None:
    top = run_cli("--help")
    assert top.returncode == 0 and "tokenizer" in top.stdout
    help_text = run_cli("tokenizer", "train", "--help").stdout
    for field in dataclasses.fields(TokenizerConfig):
        assert f"--{field.name.replace('_', '-')}" in help_text, field.name


@pytest.mark.parametrize("command", ["prepare", "pretrain", "export", "finetune", "predict", "glue", "bench",
                                     "status", "quickstart"])
def test_every_command_prints_its_help(command: str) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit) as exit_:
        with contextlib.redirect_stdout(io.StringIO()) as shown:
            parser.parse_args([command, "--help"])
    assert exit_.value.code == 0 and "usage: bertpre " + command in shown.getvalue()


def test_tokenizer_train_from_the_command_line(tmp_path: Path, wiki_10docs: Path) -> None:
    result = run_cli("tokenizer", "train", "--inputs", str(wiki_10docs), "--vocab-size", "300",
                     "--output", str(tmp_path / "tok"))
    assert result.returncode == 0, result.stderr
    assert "vocabulary     300 tokens" in result.stdout
    assert (tmp_path / "tok" / "tokenizer.json").exists()


def test_user_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    missing = run_cli("tokenizer", "train", "--inputs", str(tmp_path / "missing.txt"))
    typo = run_cli("tokenizer", "train", "--vocab-sise", "10")
    config = tmp_path / "tok.yaml"
    config.write_text("vocab_sise: 100\n")
    bad_key = run_cli("tokenizer", "train", "--config", str(config))
    for result, expected in ((missing, "missing.txt: no such file"),
                             (typo, "did you mean --vocab-size?"),
                             (bad_key, "did you mean 'vocab_size'?")):
        assert result.returncode == 2
        assert expected in result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_pretrain_help_shows_grouped_options_under_headings_with_flat_spellings() -> None:
    help_text = run_cli("pretrain", "--help").stdout
    assert "optimization options:" in help_text and "schedule options:" in help_text
    assert "--learning-rate" in help_text and "--max-steps" in help_text
    assert "--optimization" not in help_text.replace("optimization options", "")


def test_bare_boolean_flags_and_underscore_spellings_are_accepted() -> None:
    from bertpre.cli import build_parser, config_from_args, _dashed
    from bertpre.core.configs import PretrainConfig

    argv = [_dashed(a) for a in ["pretrain", "--cpu", "--max_steps", "3", "--model.hidden_size", "264",
                                 "--unpad-inputs", "false", "--compile"]]
    args, unknown = build_parser().parse_known_args(argv)
    config = config_from_args(PretrainConfig, args)
    assert not unknown
    assert config.runtime.cpu is True and config.runtime.compile is True and config.runtime.unpad_inputs is False
    assert config.schedule.max_steps == 3 and config.model.hidden_size == 264


def test_list_options_of_numbers_parse_from_the_command_line() -> None:
    from bertpre.cli import build_parser, config_from_args
    from bertpre.core.configs import FinetuneConfig

    args, _ = build_parser().parse_known_args(["finetune", "--model", "m", "--seeds", "0", "1", "2",
                                               "--compare-random-init"])
    config = config_from_args(FinetuneConfig, args)
    assert config.seeds == [0, 1, 2] and config.compare_random_init is True
