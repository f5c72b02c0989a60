"""The public Python API: `from bertpre import …` for what a user calls, light to import, documented on one page."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

import bertpre
from bertpre.core.errors import BertpreError

from .conftest import REPO

HEAVY = ("torch", "transformers", "datasets", "accelerate", "tokenizers")


def imported_after(code: str) -> list[str]:
    """The heavy libraries in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_import_bertpre_and_its_configs_loads_no_heavy_library() -> None:
    assert imported_after("import bertpre") == []
    assert imported_after("from bertpre import PretrainConfig, load_config, BertpreError") == []


def test_a_stage_loads_its_libraries_when_first_used() -> None:
    """The lazy names are real: the first use of a stage imports what it needs."""
    assert "torch" in imported_after("from bertpre import pretrain")


@pytest.mark.parametrize("name", bertpre.__all__)
def test_every_public_name_is_the_object_it_names_with_a_docstring(name: str) -> None:
    value = getattr(bertpre, name)
    module, _, attribute = bertpre._PUBLIC[name].partition(":")
    assert value is getattr(sys.modules[module], attribute or name)
    assert (value.__doc__ or "").strip(), f"bertpre.{name} has no docstring"
    assert name in dir(bertpre)


def test_prepare_is_prepare_pretraining_data() -> None:
    assert bertpre.prepare is bertpre.prepare_pretraining_data


def test_an_unknown_name_is_an_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="'no_such_stage'"):
        getattr(bertpre, "no_such_stage")
    with pytest.raises(ImportError):
        exec("from bertpre import no_such_stage", {})


def test_the_api_page_documents_every_public_name_and_no_other() -> None:
    page = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    documented = re.findall(r"^### `(\w+)", page, flags=re.MULTILINE)
    assert sorted(documented) == sorted(set(documented)), "a name documented twice in docs/api.md"
    assert set(documented) == set(bertpre.__all__), (
        f"in bertpre.__all__ but not in docs/api.md: {sorted(set(bertpre.__all__) - set(documented))}; "
        f"in docs/api.md but not in bertpre.__all__: {sorted(set(documented) - set(bertpre.__all__))}")


def test_finetune_refuses_several_seeds_rather_than_running_one() -> None:
    """`bertpre finetune --seeds 0 1 2` runs compare_finetunes; finetune() given seeds must not run only `seed`."""
    for options in ({"seeds": [0, 1]}, {"compare_random_init": True}):
        with pytest.raises(BertpreError, match="compare_finetunes"):
            bertpre.finetune(bertpre.FinetuneConfig(model="no-such-model", **options))
