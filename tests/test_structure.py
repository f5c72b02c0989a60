"""The code's shape: no stage imports another stage, and README's code map names every module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from .conftest import REPO

PACKAGE = REPO / "bertpre"
STAGES = {"tokenizer", "prepare", "pretrain", "export", "finetune", "predict"}
RUNNERS = {"cli", "__main__", "quickstart", "glue", "comparison"}  # they compose stages by design


def bertpre_imports(path: Path) -> set[str]:
    """The bertpre modules a file imports, at the top or inside functions."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bertpre."):
            imported.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "bertpre":
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update(a.name.split(".")[1] for a in node.names if a.name.startswith("bertpre."))
    return imported


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def test_no_stage_imports_another_stage_and_shared_modules_import_no_stage() -> None:
    offenders = {}
    for path in modules():
        if path.stem in RUNNERS:
            continue
        stages = (bertpre_imports(path) & STAGES) - {path.stem}
        if stages:
            offenders[path.stem] = sorted(stages)
    assert not offenders, f"modules importing a stage: {offenders}"


def test_the_import_graph_has_no_cycles() -> None:
    graph = {path.stem: bertpre_imports(path) - {path.stem} for path in modules()}

    def visit(node: str, trail: tuple[str, ...]) -> None:
        assert node not in trail, f"import cycle: {' → '.join(trail + (node,))}"
        for child in graph.get(node, ()):
            visit(child, trail + (node,))

    for module in graph:
        visit(module, ())


def test_readme_code_map_names_every_module_and_no_other() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Code map", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([a-z_]+)\.py`", section))
    actual = {path.stem for path in modules()}
    assert named == actual, f"missing from the map: {sorted(actual - named)}; not in the tree: {sorted(named - actual)}"
