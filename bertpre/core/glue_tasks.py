"""GLUE task presets: where each task's files are, which columns and labels they hold, which metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class TaskPreset:
    """Where a GLUE task's files are and how to read them."""

    directory: str
    text: str
    pair: Optional[str]
    label: str
    metrics: tuple[str, ...]
    label_names: Optional[dict[str, str]] = None  # raw label → name shown in id2label
    regression: bool = False
    column_names: tuple[str, ...] = ()  # for files without a header row
    dev_file: str = "dev.tsv"


GLUE_TASKS: dict[str, TaskPreset] = {
    "cola": TaskPreset("CoLA", "sentence", None, "label", ("matthews_correlation", "accuracy"),
                       {"0": "unacceptable", "1": "acceptable"},
                       column_names=("source", "label", "original_label", "sentence")),
    "sst2": TaskPreset("SST-2", "sentence", None, "label", ("accuracy",), {"0": "negative", "1": "positive"}),
    "mrpc": TaskPreset("MRPC", "#1 String", "#2 String", "Quality", ("accuracy", "f1"),
                       {"0": "not_equivalent", "1": "equivalent"}),
    "qqp": TaskPreset("QQP", "question1", "question2", "is_duplicate", ("accuracy", "f1"),
                      {"0": "not_duplicate", "1": "duplicate"}),
    "stsb": TaskPreset("STS-B", "sentence1", "sentence2", "score", ("pearson", "spearman"), regression=True),
    "mnli": TaskPreset("MNLI", "sentence1", "sentence2", "gold_label", ("accuracy",), dev_file="dev_matched.tsv"),
    "qnli": TaskPreset("QNLI", "question", "sentence", "label", ("accuracy",)),
    "rte": TaskPreset("RTE", "sentence1", "sentence2", "label", ("accuracy",)),
    "wnli": TaskPreset("WNLI", "sentence1", "sentence2", "label", ("accuracy",)),
}
