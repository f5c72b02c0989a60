"""Stage 6: fine-tune sequence classifiers (single sentences and pairs, GLUE-style) and predict.

Any exported bertpre model or Hugging Face BERT directory is the starting point; the result is
exported so that vanilla ``AutoModelForSequenceClassification`` and
``pipeline("text-classification")`` load it, with ``id2label`` / ``label2id`` from the data.
"""

from __future__ import annotations

import copy
import csv
import gzip
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch

from bertpre.config import BertpreError, FinetuneConfig, PredictConfig, save_config
from bertpre.corpus import load_hub_dataset
from bertpre.export import export_model, load_pretrained
from bertpre.io import check_writable_output
from bertpre.pretrain import learning_rate_factor, parameter_groups

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


# --------------------------------------------------------------------------------------------
# GLUE presets
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Reading labelled tables
# --------------------------------------------------------------------------------------------


def read_table(path: str, column_names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Rows of a CSV, TSV, JSONL or Parquet file (``.gz`` too), or of ``hf:NAME[:CONFIG]@SPLIT``.

    TSV files are read as GLUE distributes them: no quoting (quotes are text) and a UTF-8
    byte-order mark tolerated. ``column_names`` names the columns of a file without a header.
    """
    if path.startswith("hf:"):
        return _read_hub_table(path)
    file = Path(path)
    if not file.is_file():
        raise BertpreError(f"{path}: no such file")
    name = file.name[:-3] if file.name.endswith(".gz") else file.name
    suffix = Path(name).suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            if suffix in (".jsonl", ".json", ".ndjson"):
                return [_json_row(line, path, number) for number, line in enumerate(handle, 1) if line.strip()]
            if suffix in (".tsv", ".txt"):
                reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            elif suffix == ".csv":
                reader = csv.reader(handle)
            else:
                raise BertpreError(f"{path}: unknown table format (use .csv, .tsv, .jsonl or .parquet)")
            return _rows_with_header(list(reader), column_names, path)
    except UnicodeDecodeError as error:
        raise BertpreError(f"{path}: not valid UTF-8 at byte {error.start}") from None


def _json_row(line: str, path: str, number: int) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise BertpreError(f"{path}: line {number} is not valid JSON ({error.msg})") from None
    if not isinstance(row, dict):
        raise BertpreError(f"{path}: line {number} is not a JSON object")
    return row


def _rows_with_header(rows: list[list[str]], column_names: Sequence[str], path: str) -> list[dict[str, Any]]:
    if not rows:
        return []
    header = list(column_names) if column_names else rows[0]
    body = rows if column_names else rows[1:]
    table = []
    for number, row in enumerate(body, start=1 if column_names else 2):
        if not row:
            continue
        if len(row) != len(header):
            raise BertpreError(f"{path}: row {number} has {len(row)} fields, the header has {len(header)} "
                               f"({', '.join(header)})")
        table.append(dict(zip(header, row)))
    return table


def _read_hub_table(spec: str) -> list[dict[str, Any]]:
    return load_hub_dataset(spec, streaming=False).to_list()


@dataclass
class LabelledData:
    """Texts (and optional pairs) with labels: class ids, or floats for regression."""

    texts: list[str]
    pairs: Optional[list[str]]
    labels: Optional[list[Any]]


def select_columns(rows: list[dict[str, Any]], text: str, pair: Optional[str], label: Optional[str],
                   source: str) -> LabelledData:
    """Pick the text, pair and label columns, naming the columns that exist when one is missing."""
    if not rows:
        raise BertpreError(f"{source}: the split is empty")
    columns = list(rows[0])
    for role, column in (("text", text), ("pair", pair), ("label", label)):
        if column is not None and column not in rows[0]:
            raise BertpreError(f"{source}: no {role} column '{column}' (columns: {', '.join(map(str, columns))}); "
                               f"set --{role}-column")
    texts = [str(row[text] or "") for row in rows]
    pairs = [str(row[pair] or "") for row in rows] if pair else None
    labels = [row[label] for row in rows] if label else None
    return LabelledData(texts, pairs, labels)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def compute_metrics(names: Iterable[str], predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, F1 (positive class 1), Matthews correlation, Pearson and Spearman, as asked."""
    functions = {"accuracy": _accuracy, "f1": _f1, "matthews_correlation": _matthews,
                 "pearson": _pearson, "spearman": lambda p, y: _pearson(_ranks(p), _ranks(y))}
    return {name: float(functions[name](predictions, labels)) for name in names}


def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float((predictions == labels).mean())


def _f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    tp = float(((predictions == 1) & (labels == 1)).sum())
    fp = float(((predictions == 1) & (labels != 1)).sum())
    fn = float(((predictions != 1) & (labels == 1)).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def _matthews(predictions: np.ndarray, labels: np.ndarray) -> float:
    classes = np.union1d(predictions, labels)
    confusion = np.array([[np.sum((labels == a) & (predictions == b)) for b in classes] for a in classes], float)
    total, correct = confusion.sum(), np.trace(confusion)
    predicted, true = confusion.sum(0), confusion.sum(1)
    numerator = correct * total - predicted @ true
    denominator = math.sqrt((total**2 - predicted @ predicted) * (total**2 - true @ true))
    return numerator / denominator if denominator else 0.0


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, float) - np.mean(x), np.asarray(y, float) - np.mean(y)
    denominator = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denominator) if denominator else 0.0


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), as Spearman's rho needs."""
    values = np.asarray(values, float)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2
        start = end + 1
    return ranks


# --------------------------------------------------------------------------------------------
# Fine-tuning
# --------------------------------------------------------------------------------------------


@dataclass
class FinetuneSummary:
    """Result of `finetune`: where the model is and its best evaluation."""

    output: str
    task: str
    best_epoch: int
    best_metrics: dict[str, float]
    train_rows: int
    eval_rows: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)

    def table(self) -> str:
        """Human-readable summary."""
        lines = [f"classifier       {self.output}", f"task             {self.task}",
                 f"rows             {self.train_rows:,} train, {self.eval_rows:,} eval",
                 f"best epoch       {self.best_epoch}"]
        lines += [f"{name:<16} {value:.4f}" for name, value in self.best_metrics.items()]
        lines.append(f"wall time        {self.seconds:.0f} s")
        return "\n".join(lines)


@dataclass
class _ResolvedTask:
    name: str
    train: LabelledData
    evaluation: LabelledData
    regression: bool
    label_list: list[str]
    label_names: dict[str, str]
    metrics: tuple[str, ...]


def _resolve_task(config: FinetuneConfig) -> _ResolvedTask:
    preset = GLUE_TASKS.get(config.task) if config.task else None
    if config.task and preset is None:
        raise BertpreError(f"task: unknown GLUE task {config.task!r} (known: {', '.join(GLUE_TASKS)})")
    train_file = config.train_file or (str(Path(config.data_dir) / preset.directory / "train.tsv") if preset else None)
    eval_file = config.eval_file or (str(Path(config.data_dir) / preset.directory / preset.dev_file) if preset else None)
    if not train_file or not eval_file:
        raise BertpreError("train_file: give --train-file and --eval-file, or --task with --data-dir")
    text = config.text_column or (preset.text if preset else "text")
    pair = config.text_pair_column or (preset.pair if preset else None)
    label = config.label_column or (preset.label if preset else "label")
    columns = config.column_names or (list(preset.column_names) if preset else [])
    regression = config.problem == "regression" or (config.problem == "auto" and preset is not None and preset.regression)
    train = select_columns(read_table(train_file, columns), text, pair, label, train_file)
    evaluation = select_columns(read_table(eval_file, columns), text, pair, label, eval_file)
    if config.max_train_samples and config.max_train_samples < len(train.texts):
        keep = sorted(random.Random(config.seed).sample(range(len(train.texts)), config.max_train_samples))
        train = LabelledData([train.texts[i] for i in keep], [train.pairs[i] for i in keep] if train.pairs else None,
                             [train.labels[i] for i in keep])
    if regression:
        train.labels = _as_floats(train.labels, train_file, label)
        evaluation.labels = _as_floats(evaluation.labels, eval_file, label)
        label_list: list[str] = []
    else:
        label_list = sorted({str(v) for v in train.labels}, key=_natural_key)
        unseen = sorted({str(v) for v in evaluation.labels} - set(label_list))
        if unseen:
            raise BertpreError(f"{eval_file}: labels {unseen} never occur in the training data ({train_file}); "
                               f"training labels: {label_list}")
        if len(label_list) < 2:
            raise BertpreError(f"{train_file}: column '{label}' has a single label {label_list}; "
                               "classification needs two or more (use --problem regression for scores)")
    metrics = tuple(config.metrics) or (preset.metrics if preset else (("pearson", "spearman") if regression
                                                                      else ("accuracy",)))
    names = dict(preset.label_names or {}) if preset else {}
    return _ResolvedTask(config.task or _task_name(train_file), train, evaluation, regression, label_list,
                         names, metrics)


def _task_name(train_file: str) -> str:
    """`reviews` for reviews.jsonl; for a generic train.jsonl, the directory it is in."""
    path = Path(train_file.split("@")[0])
    stem = path.name.split(".")[0]
    return path.parent.name if stem.lower() in ("train", "training") and path.parent.name else stem


def _natural_key(value: str) -> tuple:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def _as_floats(values: list[Any], source: str, column: str) -> list[float]:
    floats = []
    for row, value in enumerate(values, start=1):
        try:
            floats.append(float(value))
        except (TypeError, ValueError):
            raise BertpreError(f"{source}: row {row} column '{column}' is {value!r}, not a number; a regression "
                               "task needs numeric labels") from None
    return floats


class _Encoded(torch.utils.data.Dataset):
    def __init__(self, tokenizer: Any, data: LabelledData, max_length: int, label_ids: Optional[list[Any]]) -> None:
        encoded = tokenizer(data.texts, data.pairs, truncation=True, max_length=max_length,
                            return_attention_mask=False)
        self.input_ids = encoded["input_ids"]
        self.token_type_ids = encoded["token_type_ids"]
        self.labels = label_ids

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {"input_ids": self.input_ids[index], "token_type_ids": self.token_type_ids[index]}
        if self.labels is not None:
            item["labels"] = self.labels[index]
        return item


def pad_batch(items: list[dict[str, Any]], pad_token_id: int = 0, multiple_of: int = 8) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence in the batch (rounded up to a multiple of 8), not to a fixed length."""
    length = max(len(item["input_ids"]) for item in items)
    length = -(-length // multiple_of) * multiple_of
    batch = {"input_ids": torch.full((len(items), length), pad_token_id, dtype=torch.long),
             "token_type_ids": torch.zeros((len(items), length), dtype=torch.long),
             "attention_mask": torch.zeros((len(items), length), dtype=torch.long)}
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        batch["input_ids"][row, :n] = torch.tensor(item["input_ids"])
        batch["token_type_ids"][row, :n] = torch.tensor(item["token_type_ids"])
        batch["attention_mask"][row, :n] = 1
    if "labels" in items[0]:
        dtype = torch.float if isinstance(items[0]["labels"], float) else torch.long
        batch["labels"] = torch.tensor([item["labels"] for item in items], dtype=dtype)
    return batch


def finetune(config: FinetuneConfig, show_progress: bool = True) -> FinetuneSummary:
    """Fine-tune a classification (or regression) head and export the best epoch's model."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    started = time.perf_counter()
    output = Path(config.output)
    check_writable_output(output, config.overwrite)
    task = _resolve_task(config)
    use_cpu = config.cpu or not torch.cuda.is_available()
    accelerator = Accelerator(cpu=use_cpu, mixed_precision="no" if use_cpu else config.mixed_precision,
                              gradient_accumulation_steps=config.gradient_accumulation_steps, log_with="tensorboard",
                              project_config=ProjectConfiguration(project_dir=str(output), logging_dir=str(output)))
    set_seed(config.seed)
    num_labels = 1 if task.regression else len(task.label_list)
    id2label = {i: task.label_names.get(raw, raw) for i, raw in enumerate(task.label_list)}
    overrides: dict[str, Any] = {"problem_type": "regression" if task.regression else "single_label_classification"}
    if not task.regression:
        overrides.update(id2label=id2label, label2id={name: i for i, name in id2label.items()})
    model, report = load_pretrained(config.model, task="classification", num_labels=num_labels,
                                    unpad_inputs=config.unpad_inputs, **overrides)
    accelerator.print(f"loaded {config.model}: {report.describe()}")
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    to_id = {raw: i for i, raw in enumerate(task.label_list)}
    train_labels = task.train.labels if task.regression else [to_id[str(v)] for v in task.train.labels]
    eval_labels = task.evaluation.labels if task.regression else [to_id[str(v)] for v in task.evaluation.labels]
    train_set = _Encoded(tokenizer, task.train, config.max_seq_length, train_labels)
    eval_set = _Encoded(tokenizer, task.evaluation, config.max_seq_length, eval_labels)
    collate = lambda items: pad_batch(items, tokenizer.pad_token_id)  # noqa: E731
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=config.per_device_batch_size, shuffle=True,
                                               collate_fn=collate, generator=torch.Generator().manual_seed(config.seed))
    eval_loader = torch.utils.data.DataLoader(eval_set, batch_size=config.per_device_batch_size * 2,
                                              collate_fn=collate)
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.learning_rate,
                                  fused=not use_cpu)
    steps_per_epoch = math.ceil(len(train_loader) / config.gradient_accumulation_steps)
    total_steps = steps_per_epoch * config.epochs
    warmup = int(config.warmup_fraction * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, warmup, total_steps, "linear"))
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler)
    accelerator.init_trackers("tensorboard")
    primary = config.metric or task.metrics[0]
    best: dict[str, Any] = {"score": -math.inf, "epoch": 0, "metrics": {}, "state": None}
    history: list[dict[str, float]] = []
    patience_left = config.early_stopping_patience
    output.mkdir(parents=True, exist_ok=True)
    step = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{config.epochs}", disable=not (show_progress and accelerator.is_local_main_process))
        for batch in bar:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            if accelerator.sync_gradients:
                step += 1
                if step % 10 == 0:
                    accelerator.log({"train/loss": loss.item(), "train/learning_rate": scheduler.get_last_lr()[0]}, step=step)
                bar.set_postfix(loss=f"{loss.item():.4f}")
        predictions, labels = _predict_loader(model, eval_loader, accelerator, task.regression)
        results = compute_metrics(task.metrics, predictions, labels)
        history.append({"epoch": epoch, "step": step, **results})
        accelerator.log({f"eval/{k}": v for k, v in results.items()}, step=step)
        if accelerator.is_main_process:
            with open(output / "metrics.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(history[-1]) + "\n")
        accelerator.print(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
        if results[primary] > best["score"]:
            best.update(score=results[primary], epoch=epoch, metrics=results,
                        state=copy.deepcopy({k: v.detach().cpu() for k, v in accelerator.unwrap_model(model).state_dict().items()}))
            patience_left = config.early_stopping_patience
        elif patience_left is not None:
            patience_left -= 1
            if patience_left <= 0:
                accelerator.print(f"early stopping: no better {primary} for {config.early_stopping_patience} epochs")
                break
    accelerator.end_training()
    final = accelerator.unwrap_model(model)
    final.load_state_dict(best["state"])
    if accelerator.is_main_process:
        _export_classifier(final, config, task, best, output)
    return FinetuneSummary(str(output / "model"), task.name, best["epoch"], best["metrics"],
                           len(train_set), len(eval_set), time.perf_counter() - started, history)


@torch.no_grad()
def _predict_loader(model: torch.nn.Module, loader: Any, accelerator: Any, regression: bool) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    predictions, labels = [], []
    for batch in loader:
        with accelerator.autocast():
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
        prediction = logits.squeeze(-1) if regression else logits.argmax(-1)
        prediction, label = accelerator.gather_for_metrics((prediction, batch["labels"]))
        predictions.append(prediction.cpu().numpy())
        labels.append(label.cpu().numpy())
    return np.concatenate(predictions), np.concatenate(labels)


def _export_classifier(model: torch.nn.Module, config: FinetuneConfig, task: _ResolvedTask,
                       best: dict[str, Any], output: Path) -> None:
    card = "\n".join([
        f"# {task.name} classifier fine-tuned with bertpre", "",
        f"- base model: `{config.model}`",
        f"- task: {task.name} ({'regression' if task.regression else f'{len(task.label_list)} classes'})",
        f"- labels: {model.config.id2label if not task.regression else 'score'}",
        f"- best epoch: {best['epoch']} of {config.epochs}",
        *[f"- eval {k}: {v:.4f}" for k, v in best["metrics"].items()], "",
        "```python", "from transformers import pipeline",
        f'classify = pipeline("text-classification", model="{output / "model"}")', "```", ""])
    export_model(model, output / "model", tokenizer_dir=config.model, overwrite=True, model_card=card)
    save_config(config, output / "finetune.yaml")
    (output / "eval_results.json").write_text(json.dumps({"task": task.name, "best_epoch": best["epoch"],
                                                          **best["metrics"]}, indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------------


def predict(config: PredictConfig) -> dict[str, Any]:
    """Run an exported classifier over a file; write one JSON line per row and return metrics."""
    from transformers import AutoTokenizer

    from bertpre.export import read_bert_config

    hf_config = read_bert_config(config.model)
    if not hf_config.architectures or "ForSequenceClassification" not in hf_config.architectures[0]:
        raise BertpreError(f"{config.model}: not a classifier (architectures {hf_config.architectures}); "
                           "fine-tune it first with `bertpre finetune`")
    model, _ = load_pretrained(config.model, task="classification", num_labels=hf_config.num_labels)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    rows = read_table(config.input, config.column_names)
    data = select_columns(rows, config.text_column, config.text_pair_column, config.label_column, config.input)
    dataset = _Encoded(tokenizer, data, config.max_seq_length, None)
    regression = hf_config.num_labels == 1
    id2label = {int(k): v for k, v in hf_config.id2label.items()}
    outputs = []
    with torch.no_grad():
        for start in range(0, len(dataset), config.batch_size):
            batch = pad_batch([dataset[i] for i in range(start, min(len(dataset), start + config.batch_size))],
                              tokenizer.pad_token_id)
            logits = model(**batch).logits.float()
            if regression:
                outputs += [{"score": float(v)} for v in logits.squeeze(-1)]
            else:
                probabilities = logits.softmax(-1)
                for p in probabilities:
                    index = int(p.argmax())
                    outputs.append({"label": id2label[index], "label_id": index, "score": float(p[index])})
    Path(config.output).parent.mkdir(parents=True, exist_ok=True)
    with open(config.output, "w", encoding="utf-8") as handle:
        for row in outputs:
            handle.write(json.dumps(row) + "\n")
    metrics: dict[str, Any] = {"rows": len(outputs), "output": config.output}
    if data.labels is not None:
        if regression:
            truth = np.array(_as_floats(data.labels, config.input, config.label_column))
            predicted = np.array([o["score"] for o in outputs])
            metrics.update(compute_metrics(("pearson", "spearman"), predicted, truth))
        else:
            label2id = {str(v): int(k) for k, v in hf_config.id2label.items()}
            label2id.update({str(k): int(k) for k in hf_config.id2label})  # raw ids ("0", "1") work too
            unknown = sorted({str(v) for v in data.labels} - set(label2id))
            if unknown:
                raise BertpreError(f"{config.input}: labels {unknown} are not among the classifier's "
                                   f"{sorted(hf_config.label2id)}")
            truth = np.array([label2id[str(v)] for v in data.labels])
            predicted = np.array([o["label_id"] for o in outputs])
            metrics.update(compute_metrics(("accuracy", "f1") if hf_config.num_labels == 2 else ("accuracy",),
                                           predicted, truth))
    return metrics


# --------------------------------------------------------------------------------------------
# GLUE
# --------------------------------------------------------------------------------------------


def run_glue(model: str, tasks: Sequence[str], data_dir: str, output: str, base: FinetuneConfig,
             show_progress: bool = True) -> list[dict[str, Any]]:
    """Fine-tune and evaluate ``model`` on each GLUE task; save and return the leaderboard rows."""
    rows = []
    for name in tasks:
        config = copy.deepcopy(base)
        config.model, config.task, config.data_dir = model, name, data_dir
        config.output, config.overwrite = str(Path(output) / name), True
        config.metrics = []
        summary = finetune(config, show_progress=show_progress)
        for metric, value in summary.best_metrics.items():
            rows.append({"task": name, "metric": metric, "score": value, "train_rows": summary.train_rows,
                         "eval_rows": summary.eval_rows, "seconds": summary.seconds})
    Path(output).mkdir(parents=True, exist_ok=True)
    (Path(output) / "glue_results.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def glue_table(rows: list[dict[str, Any]]) -> str:
    """The GLUE results as a leaderboard-style table."""
    lines = [f"{'task':<8} {'metric':<22} {'score':>7}", "-" * 39]
    lines += [f"{r['task']:<8} {r['metric']:<22} {100 * r['score']:>7.2f}" for r in rows]
    return "\n".join(lines)
