"""The whole pipeline in one call, on the built-in corpus by default: what `make quickstart` runs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from bertpre.config import PrepareConfig, TokenizerConfig, option
from bertpre.corpus import BUILTIN_PYTHON_DOCS
from bertpre.data import prepare_pretraining_data
from bertpre.tokenizer import train_tokenizer


@dataclass
class QuickstartConfig:
    """`bertpre quickstart`: every stage, small and offline."""

    output: str = option("runs/quickstart", "Directory for everything the run produces.")
    inputs: list[str] = option([BUILTIN_PYTHON_DOCS], "Corpus to train on (see `tokenizer train --inputs`).")
    vocab_size: int = option(6000, "Vocabulary size of the quickstart tokenizer.")
    max_seq_length: int = option(128, "Length of the next-sentence pairs.")
    overwrite: bool = option(True, "Replace the results of an earlier quickstart in the same directory.")


def run_quickstart(config: QuickstartConfig, show_progress: bool = True) -> dict[str, str]:
    """Run the pipeline stages that exist, print a summary of each, and return where results are."""
    output = Path(config.output)
    started = time.perf_counter()
    tokenizer_config = TokenizerConfig(inputs=list(config.inputs), output=str(output / "tokenizer"),
                                       vocab_size=config.vocab_size, overwrite=config.overwrite)
    print("== 1. tokenizer ==")
    summary = train_tokenizer(tokenizer_config, show_progress=show_progress)
    print(summary.table())
    results = {"tokenizer": summary.output}

    print("\n== 2. prepare ==")
    prepare_config = PrepareConfig(inputs=list(config.inputs), tokenizer=summary.output,
                                   output=str(output / "data"), max_seq_length=config.max_seq_length,
                                   eval_fraction=0.05, overwrite=config.overwrite)
    data_summary = prepare_pretraining_data(prepare_config, show_progress=show_progress)
    print(data_summary.table())
    results["data"] = data_summary.output
    print(f"\n== done in {time.perf_counter() - started:.0f} s ==")
    for stage, path in results.items():
        print(f"{stage:<14} {path}")
    return results
