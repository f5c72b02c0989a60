"""The code's shape: families of modules in pipeline order, imports only downward, no stage importing
another stage, no cycles, and the code map naming every module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from .conftest import REPO

PACKAGE = REPO / "bertpre"
FAMILIES = ("core", "readers", "tokenizer", "data", "model", "training", "export", "tasks", "runners")
"""The subpackages in the order data flows: a module may import its own family and the ones before it."""
TOP_LEVEL = {"__init__", "__main__", "cli"}  # above every family: the public API and the command line
STAGES = {"tokenizer.train", "data.prepare", "training.pretrain", "export.export", "tasks.finetune",
          "tasks.predict"}
COMPOSERS = {"tasks.glue", "tasks.comparison", "runners.quickstart", "runners.finetune_bench", *TOP_LEVEL}  # they compose stages by design


def module_name(path: Path) -> str:
    """``data.prepare`` for bertpre/data/prepare.py, ``cli`` for bertpre/cli.py."""
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def bertpre_imports(path: Path) -> set[str]:
    """The bertpre modules a file imports (as ``family.module``), at the top or inside functions."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bertpre."):
            module = node.module[len("bertpre."):]
            if module in FAMILIES:  # from bertpre.tasks import glue
                imported.update(f"{module}.{alias.name}" for alias in node.names)
            else:
                imported.add(module)
        elif isinstance(node, ast.ImportFrom) and node.module == "bertpre":
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update(a.name[len("bertpre."):] for a in node.names if a.name.startswith("bertpre."))
    return imported


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" and "defaults" not in p.parts)


def rank(module: str) -> int:
    family = module.split(".")[0]
    return FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)


def test_every_module_lives_in_a_family_with_a_docstring_saying_what_it_owns() -> None:
    stray = [module_name(p) for p in modules() if module_name(p) not in TOP_LEVEL and rank(module_name(p)) == len(FAMILIES)]
    assert not stray, f"modules outside the families {FAMILIES}: {stray}"
    for family in FAMILIES:
        init = PACKAGE / family / "__init__.py"
        assert init.is_file(), f"bertpre/{family}/ is not a package"
        assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), f"bertpre/{family}/__init__.py: no docstring"


def test_imports_go_only_downward_the_pipeline() -> None:
    upward = {}
    for path in modules():
        name = module_name(path)
        later = sorted(m for m in bertpre_imports(path) if rank(m) > rank(name))
        if later:
            upward[name] = later
    assert not upward, f"modules importing a later family: {upward}"


def test_no_stage_imports_another_stage() -> None:
    offenders = {}
    for path in modules():
        name = module_name(path)
        if name in COMPOSERS:
            continue
        stages = (bertpre_imports(path) & STAGES) - {name}
        if stages:
            offenders[name] = sorted(stages)
    assert not offenders, f"modules importing a stage: {offenders}"


def test_the_import_graph_has_no_cycles() -> None:
    graph = {module_name(path): bertpre_imports(path) - {module_name(path)} for path in modules()}

    def visit(node: str, trail: tuple[str, ...]) -> None:
        assert node not in trail, f"import cycle: {' → '.join(trail + (node,))}"
        for child in graph.get(node, ()):
            visit(child, trail + (node,))

    for module in graph:
        visit(module, ())


def test_the_structure_rules_catch_an_upward_import(tmp_path: Path) -> None:
    """The checks above are not vacuous: a model module importing the training loop is flagged."""
    offender = tmp_path / "bert.py"
    offender.write_text("from bertpre.training.pretrain import pretrain\n", encoding="utf-8")
    imported = bertpre_imports(offender)
    assert imported == {"training.pretrain"}
    assert any(rank(m) > rank("model.bert") for m in imported)


def test_code_map_names_every_module_and_no_other() -> None:
    page = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = page.split("## Code map", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([a-z_]+/[a-z_]+|[a-z_]+)\.py`", section))
    actual = {str(path.relative_to(PACKAGE).with_suffix("")) for path in modules()}
    assert named == actual, (f"docs/architecture.md's code map: missing {sorted(actual - named)}; not in the tree: "
                             f"{sorted(named - actual)}")
