"""`bertpre bench --workload finetune`: a whole fine-tuning run of bertpre against a plain transformers loop.

The reference is the loop a transformers user writes (``run_glue_no_trainer.py``'s shape):
``AutoModelForSequenceClassification``, batches padded to their longest row (``DataCollatorWithPadding``),
``torch.optim.AdamW``, a linear schedule with warm-up, evaluation at the end. bertpre runs `finetune` itself
on the same rows, model, hyper-parameters and seed, in each configuration asked for (padded, packed, bf16,
compiled). Both read the same seeded subset of the training rows (written once to a temporary file) and
are scored on the same evaluation rows: the table gives wall time, examples per second, the share of
padding in the batches, evaluation accuracy, and bertpre's speed as a multiple of the reference's.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from bertpre.core.config import load_config
from bertpre.core.configs import BenchConfig, FinetuneConfig
from bertpre.core.errors import BertpreError
from bertpre.readers.tables import read_table, select_columns
from bertpre.tasks.finetune import finetune

FINETUNE_VARIANTS = ("padded", "packed", "packed-bf16", "packed-compile")
"""bertpre's configurations the fine-tuning benchmark can time: padded rows, packed rows, and packed with bf16
autocast (CPUs with bf16 instructions, GPUs) or compiled."""


@dataclass
class FinetuneResult:
    """One fine-tuning run: its time, throughput, padding and evaluation accuracy."""

    name: str
    seconds: float
    examples_per_second: float
    padding_fraction: float
    accuracy: float


def run_finetune_bench(config: BenchConfig) -> dict[str, Any]:
    """Time the reference loop and bertpre's fine-tuning on identical rows; return the results and the setup."""
    import transformers

    if not (config.model and config.train_file and config.eval_file):
        raise BertpreError("workload finetune: give --model, --train-file and --eval-file")
    unknown = [v for v in config.finetune_variants if v not in FINETUNE_VARIANTS]
    if unknown:
        raise BertpreError(f"finetune_variants: {unknown} are not among {', '.join(FINETUNE_VARIANTS)}")
    device = "cuda" if torch.cuda.is_available() and not config.cpu else "cpu"
    with tempfile.TemporaryDirectory(prefix="bertpre-bench-") as scratch:
        train_file, eval_file = _standard_files(config, Path(scratch))
        results = [_reference_loop(config, train_file, eval_file, device)]
        for variant in config.finetune_variants:
            results.append(_bertpre_run(config, train_file, eval_file, variant, Path(scratch) / variant))
    return {"workload": "finetune", "date": time.strftime("%Y-%m-%d"),
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
            "transformers": transformers.__version__, "model": config.model, "train_file": config.train_file,
            "eval_file": config.eval_file, "train_rows": config.max_train_samples, "epochs": config.epochs,
            "batch_size": config.finetune_batch_size, "learning_rate": config.finetune_learning_rate,
            "results": [asdict(r) for r in results]}


def _standard_files(config: BenchConfig, scratch: Path) -> tuple[str, str]:
    """The training rows both sides read (a seeded sample of ``max_train_samples`` of them) and the evaluation
    rows, each as a JSONL file with the columns text, text_pair (for pairs) and label."""
    train = select_columns(read_table(config.train_file), config.text_column, config.text_pair_column,
                           config.label_column, config.train_file)
    indices = list(range(len(train.texts)))
    if config.max_train_samples and config.max_train_samples < len(indices):
        indices = sorted(random.Random(0).sample(indices, config.max_train_samples))
    evaluation = select_columns(read_table(config.eval_file), config.text_column, config.text_pair_column,
                                config.label_column, config.eval_file)
    paths = []
    for name, data, chosen in (("train", train, indices), ("eval", evaluation, range(len(evaluation.texts)))):
        path = scratch / f"{name}.jsonl"
        with open(path, "w", encoding="utf-8") as handle:
            for i in chosen:
                row = {"text": data.texts[i], "label": str(data.labels[i])}
                if data.pairs is not None:
                    row["text_pair"] = data.pairs[i]
                handle.write(json.dumps(row) + "\n")
        paths.append(str(path))
    return paths[0], paths[1]


def _read_rows(path: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def _reference_loop(config: BenchConfig, train_file: str, eval_file: str, device: str) -> FinetuneResult:
    """A plain transformers fine-tuning loop: padded batches, torch AdamW, linear warm-up and decay."""
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              get_linear_schedule_with_warmup)

    started = time.perf_counter()
    torch.manual_seed(0)
    rows = _read_rows(train_file)
    labels = sorted({row["label"] for row in rows})
    to_id = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    model = AutoModelForSequenceClassification.from_pretrained(config.model, num_labels=len(labels)).to(device)

    def encode(texts: list[str], pairs: Optional[list[str]]) -> list[dict[str, Any]]:
        encoded = tokenizer(texts, pairs, truncation=True, max_length=config.finetune_max_length)
        return [{key: encoded[key][i] for key in encoded} for i in range(len(texts))]

    pairs = [row["text_pair"] for row in rows] if "text_pair" in rows[0] else None
    features = encode([row["text"] for row in rows], pairs)
    for feature, row in zip(features, rows):
        feature["labels"] = to_id[row["label"]]
    collate = DataCollatorWithPadding(tokenizer)
    loader = torch.utils.data.DataLoader(features, batch_size=config.finetune_batch_size, shuffle=True, collate_fn=collate,
                                         generator=torch.Generator().manual_seed(0))
    no_decay = ("bias", "LayerNorm.weight")
    groups = [{"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": 0.01},
              {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=config.finetune_learning_rate)
    total = len(loader) * config.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * total), total)
    slots = real = 0
    model.train()
    for _ in range(config.epochs):
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            slots += batch["attention_mask"].numel()
            real += int(batch["attention_mask"].sum())
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
    eval_rows = _read_rows(eval_file)
    eval_features = encode([row["text"] for row in eval_rows], [row["text_pair"] for row in eval_rows] if pairs else None)
    eval_labels = [row["label"] for row in eval_rows]
    model.eval()
    predictions = []
    with torch.no_grad():
        for start in range(0, len(eval_features), 64):
            batch = {k: v.to(device) for k, v in collate(eval_features[start:start + 64]).items()}
            predictions += model(**batch).logits.argmax(-1).tolist()
    accuracy = float(np.mean([labels[p] == gold for p, gold in zip(predictions, eval_labels)]))
    seconds = time.perf_counter() - started
    return FinetuneResult("transformers loop", seconds, len(rows) * config.epochs / seconds, 1 - real / max(slots, 1),
                          accuracy)


def _bertpre_run(config: BenchConfig, train_file: str, eval_file: str, variant: str, output: Path) -> FinetuneResult:
    """bertpre's `finetune` on the same rows, with the reference's epochs and hyper-parameters."""
    settings = {"model": config.model, "train_file": train_file, "eval_file": eval_file, "text_column": "text",
                "label_column": "label", "epochs": str(config.epochs), "learning_rate": str(config.finetune_learning_rate),
                "per_device_batch_size": str(config.finetune_batch_size), "max_seq_length": str(config.finetune_max_length),
                "weight_decay": "0.01", "warmup_fraction": "0.1", "seed": "0", "report_to": "none",
                "cpu": str(config.cpu).lower(), "output": str(output), "packing": str(variant != "padded").lower(),
                "compile": str(variant == "packed-compile").lower(),
                "mixed_precision": "bf16" if variant == "packed-bf16" else "no",
                # every training row trains, as in the reference loop, and its one epoch is the one kept
                "choose_epoch_on": "last"}
    if config.text_pair_column:
        settings["text_pair_column"] = "text_pair"
    started = time.perf_counter()
    summary = finetune(load_config(FinetuneConfig, None, settings), show_progress=False)
    seconds = time.perf_counter() - started
    return FinetuneResult(f"bertpre {variant}", seconds, summary.train_rows * config.epochs / seconds,
                          _padding_of_last_run(output), float(summary.best_metrics.get("accuracy", math.nan)))


def _padding_of_last_run(output: Path) -> float:
    """The padding share fine-tuning reports in its metrics (training batches)."""
    lines = [json.loads(line) for line in (output / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    values = [line["padding_fraction"] for line in lines if "padding_fraction" in line]
    return float(values[-1]) if values else math.nan


def finetune_bench_table(report: dict[str, Any]) -> str:
    """The fine-tuning benchmark as a table, with speed as a multiple of the transformers loop's."""
    reference = report["results"][0]
    lines = [f"{report['date']}  {report['device']}  torch {report['torch']}  transformers {report['transformers']}",
             f"fine-tuning {report['model']} on {report['train_rows'] or 'all'} rows of {report['train_file']}, "
             f"{report['epochs']} epoch(s), batch {report['batch_size']}, lr {report['learning_rate']:g}; "
             f"evaluated on {report['eval_file']}", "",
             f"{'run':<24} {'seconds':>8} {'examples/s':>11} {'padding':>8} {'accuracy':>9} {'× loop':>7}"]
    for r in report["results"]:
        lines.append(f"{r['name']:<24} {r['seconds']:>8.1f} {r['examples_per_second']:>11.1f} "
                     f"{r['padding_fraction']:>8.1%} {100 * r['accuracy']:>8.2f}% "
                     f"{reference['seconds'] / r['seconds']:>7.2f}")
    return "\n".join(lines)
