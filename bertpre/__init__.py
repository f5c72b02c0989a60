"""bertpre: a BERT pretraining pipeline (tokenizer → prepare → pretrain → export → finetune).

The public Python API is what this package exports (``__all__``, documented in docs/api.md): one
function per command, the config classes they take, ``load_config`` and ``BertpreError``::

    from bertpre import PrepareConfig, prepare
    prepare(PrepareConfig(inputs=["corpus/*.txt"], output="runs/data"))

Names load lazily (PEP 562): ``import bertpre`` imports neither torch, transformers nor datasets, so
the command line starts at once; a name's module is imported the first time the name is used. The
modules behind the names may move; the names stay.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC: dict[str, str] = {
    # the stages, in pipeline order: one function per command
    "train_tokenizer": "bertpre.tokenizer.train",
    "prepare_pretraining_data": "bertpre.data.prepare",
    "prepare": "bertpre.data.prepare:prepare_pretraining_data",
    "pretrain": "bertpre.training.pretrain",
    "export_checkpoint": "bertpre.export.export",
    "finetune": "bertpre.tasks.finetune",
    "compare_finetunes": "bertpre.tasks.comparison",
    "predict": "bertpre.tasks.predict",
    "run_glue": "bertpre.tasks.glue",
    "run_quickstart": "bertpre.runners.quickstart",
    "run_status": "bertpre.runners.report",
    "write_report": "bertpre.runners.report",
    # Hugging Face directories: writing our model as one, loading any BERT one
    "export_model": "bertpre.model.hf_directory",
    "load_pretrained": "bertpre.model.hf_directory",
    # configs, and the one error type users see
    "TokenizerConfig": "bertpre.core.configs",
    "PrepareConfig": "bertpre.core.configs",
    "PretrainConfig": "bertpre.core.configs",
    "ModelConfig": "bertpre.core.configs",
    "ExportConfig": "bertpre.core.configs",
    "FinetuneConfig": "bertpre.core.configs",
    "GlueConfig": "bertpre.core.configs",
    "PredictConfig": "bertpre.core.configs",
    "QuickstartConfig": "bertpre.core.configs",
    "BenchConfig": "bertpre.core.configs",
    "load_config": "bertpre.core.config",
    "BertpreError": "bertpre.core.errors",
}
"""Each public name and where it lives: ``module`` (same name there) or ``module:name``."""

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (``bertpre.pretrain`` loads torch only then)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'bertpre' has no attribute {name!r}")
    module, _, attribute = _PUBLIC[name].partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    """The public names with the module's own, as if they were all imported."""
    return sorted(set(globals()) | set(__all__))
