"""The options tables of docs/commands/ are generated from the config dataclasses and match the real CLI."""

from __future__ import annotations

import argparse
import re

import pytest

from bertpre.cli import build_parser
from bertpre.runners.reference import BEGIN, END, PAGES, main, render_page, stale_pages

from .conftest import REPO

COMMAND_PAGES = REPO / "docs" / "commands"


def test_no_options_page_is_stale() -> None:
    stale = stale_pages(COMMAND_PAGES)
    assert not stale, (f"docs/commands/{', '.join(stale)}: the options differ from bertpre/core/configs.py; "
                       "run `make docs` and commit the pages")


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """Every command of the real parser by name (``tokenizer train`` for the nested one)."""
    def choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return dict(actions[0].choices) if actions else {}

    commands = {}
    for name, parser in choices(build_parser()).items():
        nested = choices(parser)
        commands.update({f"{name} {child}": sub for child, sub in nested.items()} if nested else {name: parser})
    return commands


def shown_options(parser: argparse.ArgumentParser) -> set[str]:
    """The options ``--help`` shows, but for --help and --config."""
    return {option for action in parser._actions if action.help != argparse.SUPPRESS
            for option in action.option_strings if option.startswith("--") and option not in ("--help", "--config")}


def test_every_command_has_a_page() -> None:
    missing = [name for name in subcommands() if not (COMMAND_PAGES / f"{name.replace(' ', '-')}.md").is_file()]
    assert not missing, f"commands without a page in docs/commands/: {missing}"
    assert {command for command, _ in PAGES.values()} == set(subcommands()) - {"status"}  # status has no config


@pytest.mark.parametrize("page", sorted(PAGES))
def test_a_page_lists_exactly_the_options_of_its_command(page: str) -> None:
    text = (COMMAND_PAGES / page).read_text(encoding="utf-8")
    generated = text.split(BEGIN, 1)[1].split(END, 1)[0]
    listed = set(re.findall(r"^\| `(--[\w.-]+)`", generated, flags=re.MULTILINE))
    command = PAGES[page][0]
    assert listed == shown_options(subcommands()[command]), f"docs/commands/{page} against `bertpre {command} --help`"


def test_the_status_page_lists_its_options() -> None:
    text = (COMMAND_PAGES / "status.md").read_text(encoding="utf-8")
    assert shown_options(subcommands()["status"]) <= set(re.findall(r"`(--[\w-]+)`", text))


def test_a_changed_help_string_makes_its_page_stale(tmp_path) -> None:
    """Staleness is detected, named, and `make docs` (main) repairs it."""
    for page in PAGES:
        (tmp_path / page).write_text((COMMAND_PAGES / page).read_text(encoding="utf-8"), encoding="utf-8")
    page = tmp_path / "prepare.md"
    page.write_text(page.read_text(encoding="utf-8").replace("Length of a pair", "Length of a sentence"),
                    encoding="utf-8")
    assert stale_pages(tmp_path) == ["prepare.md"]
    assert main([str(tmp_path), "--check"]) == 1
    assert main([str(tmp_path)]) == 0 and stale_pages(tmp_path) == []
    assert page.read_text(encoding="utf-8") == (COMMAND_PAGES / "prepare.md").read_text(encoding="utf-8")


def test_a_page_without_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="no generated section"):
        render_page("# a page\n", "prepare.md")
