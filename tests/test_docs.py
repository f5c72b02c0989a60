"""The documentation is tested: every Python block of README.md and docs/ runs, every `bertpre …` command line in
them parses with the real command line (and, in a shell block, loads as a valid config), and every repository
path, `make` target and link they name exists.

Python blocks run page by page, in order, sharing one namespace (as a reader runs them), in a directory laid
out as the docs assume: the repository's `tokenizer/` and `configs/`, a tiny quickstart's results at
`runs/quickstart/`, and tiny GLUE task folders at `glue_data/`. A block that cannot run in the test suite is
preceded by `<!-- not run: REASON -->`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from bertpre.cli import _dashed, build_parser, config_from_args
from bertpre.runners.reference import PAGES

from .conftest import REPO

PAGES_TESTED = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
SHELL = {"bash", "sh", "shell", "console"}
NOT_RUN = re.compile(r"^<!-- not run: (.+?) -->$")
COMMANDS = {command: cls for command, cls in PAGES.values()}  # "tokenizer train" → TokenizerConfig, …


@dataclass
class Block:
    """A fenced code block of a page."""

    page: Path
    line: int  # of its first code line, 1-based
    language: str
    code: str
    not_run: Optional[str]  # the reason given by a `<!-- not run: … -->` line just above it


def code_blocks(page: Path) -> list[Block]:
    """The fenced blocks of a markdown page, in order."""
    blocks, lines = [], page.read_text(encoding="utf-8").split("\n")
    index = 0
    while index < len(lines):
        opening = re.match(r"^\s*```\s*([\w+-]*)", lines[index])
        if not opening:
            index += 1
            continue
        above = next((line.strip() for line in reversed(lines[:index]) if line.strip()), "")
        marker = NOT_RUN.match(above)
        end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "```")
        blocks.append(Block(page, index + 2, opening.group(1).lower(), "\n".join(lines[index + 1:end]),
                            marker.group(1) if marker else None))
        index = end + 1
    return blocks


def prose(page: Path) -> str:
    """A page without its fenced blocks."""
    return re.sub(r"^\s*```.*?^\s*```\s*$", "", page.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)


def inline_code(page: Path) -> list[str]:
    """The inline code spans of a page's prose (single or double backticks; a span may wrap a line)."""
    spans = re.findall(r"``\s?(.+?)\s?``|`([^`]+)`", prose(page), flags=re.DOTALL)
    return [re.sub(r"\s+", " ", double or single).strip() for double, single in spans]


def relative(page: Path) -> str:
    return str(page.relative_to(REPO))


# ---------------------------------------------------------------------------------------------------------
# Python blocks run
# ---------------------------------------------------------------------------------------------------------

PYTHON_PAGES = [page for page in PAGES_TESTED if any(b.language == "python" for b in code_blocks(page))]


@pytest.fixture
def docs_directory(tiny_quickstart: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory as the docs assume one: a checkout's root after `make quickstart`."""
    from .tiny_glue import write_tiny_glue

    for name in ("tokenizer", "configs"):
        (tmp_path / name).symlink_to(REPO / name)
    shutil.copytree(Path(tiny_quickstart["model"]).parent, tmp_path / "runs" / "quickstart", symlinks=True)
    write_tiny_glue(tmp_path / "glue_data")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=relative)
def test_python_blocks_run(page: Path, docs_directory: Path) -> None:
    namespace: dict = {"__name__": "__main__"}
    for block in code_blocks(page):
        if block.language != "python":
            continue
        if block.not_run is not None:
            assert block.not_run.strip(), f"{relative(page)}:{block.line}: `not run` needs a reason"
            continue
        try:
            exec(compile(block.code, f"{relative(page)}:{block.line}", "exec"), namespace)
        except Exception:  # the block's own traceback, with the page and line it starts on
            pytest.fail(f"the Python block at {relative(page)}:{block.line} fails:\n{traceback.format_exc()}")


def test_a_failing_block_is_reported_with_its_page_and_line(tmp_path: Path) -> None:
    """The block runner is not vacuous: it finds blocks, their lines and their markers."""
    page = tmp_path / "page.md"
    page.write_text("# t\n\n```python\nx = 1\n```\n\n<!-- not run: too slow -->\n```python\nslow()\n```\n"
                    "```bash\nbertpre --version\n```\n", encoding="utf-8")
    blocks = code_blocks(page)
    assert [(b.language, b.line, b.not_run) for b in blocks] == [("python", 4, None), ("python", 9, "too slow"),
                                                                  ("bash", 12, None)]


# ---------------------------------------------------------------------------------------------------------
# Command lines parse against the real CLI
# ---------------------------------------------------------------------------------------------------------


def shell_commands(text: str) -> list[list[str]]:
    """The simple commands of shell text: continuations joined, comments dropped, split at ``&&``, ``;``, ``|``."""
    commands = []
    for line in text.replace("\\\n", " ").split("\n"):
        try:
            words = shlex.split(line, comments=True)
        except ValueError:  # an unbalanced quote inside $(…): not a bertpre line
            continue
        command: list[str] = []
        for word in words + [";"]:
            if word in ("&&", "||", ";", "|"):
                if command:
                    commands.append(command)
                command = []
            else:
                command.append(word)
    return commands


def bertpre_arguments(command: list[str]) -> Optional[list[str]]:
    """The arguments given to bertpre by a command (``bertpre …``, ``python -m bertpre …``, ``accelerate launch …
    -m bertpre …``), without placeholders for more (``...``); None when the command does not run bertpre."""
    while command and re.match(r"^\w+=", command[0]):  # VARIABLE=value before the command
        command = command[1:]
    if not command:
        return None
    if command[0] == "bertpre" or command[0].endswith("/bertpre"):
        arguments = command[1:]
    elif "-m" in command[:-1] and command[command.index("-m") + 1] == "bertpre":
        arguments = command[command.index("-m") + 2:]
    else:
        return None
    given = []
    for word in arguments:  # `--seeds …`: an option's values; a trailing `...`: more options
        if word in ("...", "…"):
            if given and given[-1].startswith("--"):
                given.append("1")
            continue
        given.append(word)
    return given


def command_name(arguments: list[str]) -> str:
    """``tokenizer train`` or ``prepare``: the command words the arguments start with."""
    words = [word for word in arguments[:2] if not word.startswith("-")]
    return " ".join(words[:2]) if words[:1] == ["tokenizer"] else (words[0] if words else "")


def parse(arguments: list[str]) -> tuple[Optional[argparse.Namespace], str]:
    """The real parser's reading of ``arguments`` and what it said; no namespace when it refused them."""
    parser, said = build_parser(), io.StringIO()
    try:
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
            namespace, unknown = parser.parse_known_args([_dashed(word) for word in arguments])
    except SystemExit as stop:
        return (argparse.Namespace() if stop.code == 0 else None), said.getvalue().strip()  # 0: --help, --version
    if unknown:
        return None, f"unknown option {unknown[0]}"
    return namespace, ""


def documented_commands() -> list[tuple[str, list[str], bool]]:
    """Every bertpre command line of the docs: where it is, its arguments, whether it is a whole shell line."""
    found = []
    for page in PAGES_TESTED:
        for block in code_blocks(page):
            if block.language in SHELL:
                for command in shell_commands(block.code):
                    arguments = bertpre_arguments(command)
                    if arguments is not None:
                        found.append((f"{relative(page)}:{block.line}", arguments, True))
        for span in inline_code(page):
            if re.match(r"^(bertpre|python -m bertpre) [a-z-]", span):
                arguments = bertpre_arguments(shlex.split(span))
                found.append((f"{relative(page)} `{span}`", arguments, False))
    return found


def test_the_docs_show_commands_of_every_stage() -> None:
    """The extraction finds the docs' command lines (a broken extractor would check nothing)."""
    names = {command_name(arguments) for _, arguments, _ in documented_commands()}
    assert {"tokenizer train", "prepare", "pretrain", "export", "finetune", "predict", "glue", "status", "bench",
            "quickstart"} <= names
    accelerate = [where for where, arguments, _ in documented_commands() if where.startswith("docs/distributed.md")]
    assert len(accelerate) >= 3  # the accelerate launch lines count too


@pytest.mark.parametrize("where, arguments, whole_line", documented_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_documented_command_parses(where: str, arguments: list[str], whole_line: bool,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    namespace, said = parse(arguments)
    if namespace is None and not whole_line and "arguments are required" in said:
        return  # prose naming a command (`bertpre status`), not a command line: its words exist
    assert namespace is not None, f"{where}: `bertpre {shlex.join(arguments)}` is refused by bertpre: {said}"
    command = command_name(arguments)
    if whole_line and command in COMMANDS and hasattr(namespace, "run"):  # a whole line: its config must load too
        monkeypatch.chdir(REPO)  # as the docs run them: from the checkout's root
        try:
            config_from_args(COMMANDS[command], namespace)
        except Exception as error:
            pytest.fail(f"{where}: `bertpre {shlex.join(arguments)}` is not a valid config: {error}")


def test_a_made_up_option_or_command_is_refused() -> None:
    assert parse(["prepare", "--max-seq-length", "64"])[0] is not None
    assert parse(["prepare", "--max-seq-lenght", "64"])[0] is None
    assert parse(["pretrain", "--no-such-option"])[0] is None
    assert parse(["pretrian"])[0] is None
    assert bertpre_arguments(shlex.split("accelerate launch --config_file x.yaml -m bertpre pretrain --config y")) == [
        "pretrain", "--config", "y"]
    assert shell_commands("cd /x && bertpre export \\\n    --step 5   # newest\nls") == [
        ["cd", "/x"], ["bertpre", "export", "--step", "5"], ["ls"]]


# ---------------------------------------------------------------------------------------------------------
# Paths, make targets and links exist
# ---------------------------------------------------------------------------------------------------------

REPO_PATH = re.compile(r"^(bertpre|jobs|configs|tests|tokenizer|docs|\.ci)/[\w./-]*$")


def named_paths(page: Path) -> list[str]:
    """The repository paths a page names: inline code spans and the words of its shell blocks."""
    words = inline_code(page) + [word for block in code_blocks(page) if block.language in SHELL
                                 for command in shell_commands(block.code) for word in command]
    return sorted({word.split("=")[-1] for word in words if REPO_PATH.match(word.split("=")[-1])})


@pytest.mark.parametrize("page", PAGES_TESTED, ids=relative)
def test_named_repository_paths_exist(page: Path) -> None:
    missing = [path for path in named_paths(page) if not (REPO / path).exists() and not (REPO / "bertpre" / path).exists()]
    assert not missing, f"{relative(page)} names paths that do not exist: {missing}"


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(encoding="utf-8"), flags=re.MULTILINE))


@pytest.mark.parametrize("page", PAGES_TESTED, ids=relative)
def test_named_make_targets_exist(page: Path) -> None:
    commands = [command for block in code_blocks(page) if block.language in SHELL
                for command in shell_commands(block.code)]
    commands += [shlex.split(span) for span in inline_code(page) if span.startswith("make ")]
    named = {word for command in commands if command[:1] == ["make"] for word in command[1:]
             if not word.startswith("-") and "=" not in word}
    assert named <= make_targets(), f"{relative(page)}: no such make target {sorted(named - make_targets())}"


def heading_anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings."""
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(page), flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchor, count = slug, 1
        while anchor in anchors:
            anchor, count = f"{slug}-{count}", count + 1
        anchors.add(anchor)
    return anchors


@pytest.mark.parametrize("page", PAGES_TESTED, ids=relative)
def test_links_lead_to_pages_and_headings_that_exist(page: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(page)):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        linked = (page.parent / file).resolve() if file else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked):
            broken.append(target)
    assert not broken, f"{relative(page)}: broken links {broken}"


def test_every_docs_page_is_reachable_from_the_index() -> None:
    index = (REPO / "docs" / "README.md").read_text(encoding="utf-8")
    linked = {(REPO / "docs" / target.partition("#")[0]).resolve() for target in re.findall(r"\]\(([^)#\s]+)", index)}
    orphans = [relative(page) for page in PAGES_TESTED[1:] if page.name != "README.md" and page.resolve() not in linked]
    assert not orphans, f"pages docs/README.md does not link: {orphans}"


def test_the_readme_stays_a_ten_minute_read() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 400, f"README.md has {lines} lines; move reference material to docs/ (one topic a page)"
