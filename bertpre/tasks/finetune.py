"""Stage 6, `bertpre finetune`: a classification or regression head on any BERT (single sentences and pairs,
GLUE presets), exported so that vanilla ``AutoModelForSequenceClassification`` and
``pipeline("text-classification")`` load it, with ``id2label`` / ``label2id`` from the data.

``finetune`` is three steps: ``build`` (task, model, data, optimizer), ``fit`` (the epochs, keeping
the best on a slice held out from the training rows, never on the evaluation set) and ``finish`` (score
the kept epoch on the evaluation set, keep its per-row predictions, export its model).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from bertpre.training.accelerator import (TENSORBOARD_DIR, describe_precision, finish_trackers, locked_output,
                                         make_accelerator, process_state, start_trackers)
from bertpre.data.batching import rows_batch
from bertpre.core.config import save_config
from bertpre.core.configs import FinetuneConfig
from bertpre.core.errors import BertpreError
from bertpre.core.glue_tasks import GLUE_TASKS
from bertpre.core.seeding import stable_hash64
from bertpre.model.architectures import attention_dropout
from bertpre.model.attention import choose_kernel
from bertpre.model.hf_directory import (check_tokenizer_matches, export_model, load_pretrained, read_model_config,
                                  usable_sequence_length)
from bertpre.core.io import check_apart_from_inputs, check_writable_output, output_kind, write_text_atomically
from bertpre.tasks.metrics import compute_metrics
from bertpre.core.metrics_log import METRICS_FILE, append_metrics
from bertpre.export.model_card import classifier_model_card
from bertpre.training.optim import FUSED_ADAMW_DEVICES, build_scheduler, parameter_groups
from bertpre.core.resolve import model_directory
from bertpre.training.sharding import refuse_unsupported_fsdp
from bertpre.readers.tables import EncodedRows, LabelledData, as_floats, read_table, select_columns
from bertpre.tokenizer.files import check_wordpiece_files, load_tokenizer

PREDICTIONS_FILE = "eval_predictions.jsonl"  # the kept epoch's prediction of every evaluation row, for comparisons


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
    precision: str = ""  # the accelerator's mixed_precision: no, bf16, fp16
    chosen_on: str = ""  # which rows chose the epoch, in words
    selection_rows: int = 0
    eval_predictions: Optional[np.ndarray] = None  # per evaluation row, in the file's order: class id or score
    eval_labels: Optional[np.ndarray] = None

    def table(self) -> str:
        """Human-readable summary."""
        selection = f", {self.selection_rows:,} held out to choose the epoch" if self.selection_rows else ""
        lines = [f"classifier       {self.output}", f"task             {self.task}",
                 f"rows             {self.train_rows:,} train{selection}, {self.eval_rows:,} eval",
                 f"epoch kept       {self.best_epoch}, chosen on {self.chosen_on}"]
        lines += [f"{'eval ' + name:<16} {value:.4f}" for name, value in self.best_metrics.items()]
        lines.append(f"wall time        {self.seconds:.0f} s")
        if self.precision:
            lines.append(f"precision        {describe_precision(self.precision)}")
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
    selection: Optional[LabelledData] = None  # held out from the training rows to choose the epoch on


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
    if regression:  # every row checked, not only the sampled ones
        train.labels = as_floats(train, train_file, label)
        evaluation.labels = as_floats(evaluation, eval_file, label)
    if config.max_train_samples and config.max_train_samples < len(train.texts):
        train = train.subset(sorted(random.Random(config.seed).sample(range(len(train.texts)), config.max_train_samples)))
    if regression:
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
    if config.metric and config.metric not in metrics:  # the metric that picks the best epoch is reported too
        metrics += (config.metric,)
    names = dict(preset.label_names or {}) if preset else {}
    selection = None
    if config.choose_epoch_on == "selection":
        train, selection = _hold_out_selection(train, config, regression, train_file)
    return _ResolvedTask(config.task or _task_name(train_file), train, evaluation, regression, label_list,
                         names, metrics, selection)


def _hold_out_selection(train: LabelledData, config: FinetuneConfig, regression: bool,
                        train_file: str) -> tuple[LabelledData, LabelledData]:
    """Split ``selection_fraction`` of the training rows off, seeded by ``seed``; for classification the same
    share of every label, at least one row of each (a label of one row stays in training)."""
    generator = random.Random(stable_hash64(f"selection/{config.seed}"))
    groups: dict[str, list[int]] = {}
    for index, label in enumerate(train.labels):
        groups.setdefault("" if regression else str(label), []).append(index)
    held_out: list[int] = []
    for key in sorted(groups, key=_natural_key):
        members = groups[key]
        generator.shuffle(members)
        held_out += members[:min(len(members) - 1, max(1, round(config.selection_fraction * len(members))))]
    if not held_out:
        raise BertpreError(f"selection_fraction: {config.selection_fraction} of the {len(train.texts)} training rows of "
                           f"{train_file} holds out no row to choose the epoch on; raise it, or use --choose-epoch-on last")
    kept = sorted(set(range(len(train.texts))) - set(held_out))
    return train.subset(kept), train.subset(sorted(held_out))


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


def collate_labelled(items: list[dict[str, Any]], pad_token_id: int = 0, packing: bool = False) -> dict[str, torch.Tensor]:
    """A batch of encoded rows with their labels (floats for regression) when they have them: each row padded
    to the longest (rounded up to 8), or, ``packing``, the rows side by side in as few rows of that width as
    they fit (``bertpre/data/packing.py``), labels in the rows' own order."""
    batch = rows_batch(items, pad_token_id, packing)
    if "labels" in items[0]:
        dtype = torch.float if isinstance(items[0]["labels"], float) else torch.long
        batch["labels"] = torch.tensor([item["labels"] for item in items], dtype=dtype)
    return batch


@dataclass
class _Run:
    """Everything the fine-tuning loop works with, made once by :func:`build`."""

    config: FinetuneConfig
    task: _ResolvedTask
    accelerator: Any
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: Any
    eval_loader: Any
    selection_loader: Any  # the rows that choose the epoch: the selection slice, the evaluation set, or none
    train_rows: int
    eval_rows: int


@dataclass
class _Best:
    """The best epoch so far: its score on the primary metric, its metrics and a copy of its weights."""

    score: float = -math.inf
    epoch: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    state: Optional[dict[str, torch.Tensor]] = None


def finetune(config: FinetuneConfig, show_progress: bool = True) -> FinetuneSummary:
    """Fine-tune a classification (or regression) head and export the best epoch's model (under the
    output's lock: one writer).

    One run, with ``config.seed``: several seeds or a comparison with random init are
    ``compare_finetunes``'s (``bertpre finetune`` picks it for them), and are refused here rather than ignored.
    """
    if config.seeds or config.compare_random_init:
        raise BertpreError("seeds, compare_random_init: finetune() runs one fine-tune (seed, init); call "
                           "compare_finetunes() for several seeds or the comparison with random init")
    started = time.perf_counter()
    with locked_output(config.output, config.cpu):
        run = build(config)
        best, history = fit(run, show_progress)
        return finish(run, best, history, started)


def build(config: FinetuneConfig) -> _Run:
    """Read the task, load the model with a fresh head, tokenize the rows, make the optimizer and schedule."""
    from accelerate.utils import set_seed

    config = dataclasses.replace(config, model=str(model_directory(config.model)))  # a Hub id: its cached snapshot
    check_apart_from_inputs(config.output, {"--model": [config.model], "--train-file": [config.train_file],
                                            "--eval-file": [config.eval_file],
                                            "--data-dir": [config.data_dir if config.task else None]})
    unfinished = _unfinished_run(Path(config.output))
    check_writable_output(Path(config.output), config.overwrite or unfinished, kind="fine-tuning run")
    task = _resolve_task(config)
    config, note = _check_model_directory(config)
    tokenizer = load_tokenizer(config.model)
    _clear_earlier_run(Path(config.output), config.cpu)
    accelerator = make_accelerator(config.output, config.cpu, config.mixed_precision, config.gradient_accumulation_steps,
                                   report_to=config.report_to)
    refuse_unsupported_fsdp(accelerator)
    if note:
        accelerator.print(note)
    config = dataclasses.replace(config, mixed_precision=accelerator.mixed_precision)  # as saved and reported
    set_seed(config.seed)
    num_labels = 1 if task.regression else len(task.label_list)
    id2label = {i: task.label_names.get(raw, raw) for i, raw in enumerate(task.label_list)}
    overrides: dict[str, Any] = {"problem_type": "regression" if task.regression else "single_label_classification"}
    if not task.regression:
        overrides.update(id2label=id2label, label2id={name: i for i, name in id2label.items()})
    kernel = choose_kernel(config.attention, accelerator.device, attention_dropout(read_model_config(config.model)),
                           training=True)
    model, report = load_pretrained(config.model, task="classification", num_labels=num_labels,
                                    unpad_inputs=config.unpad_inputs, random_init=config.init == "random",
                                    attention=kernel, **overrides)
    accelerator.print(f"loaded {config.model}: {report.describe()}")
    to_id = {raw: i for i, raw in enumerate(task.label_list)}
    train_labels = task.train.labels if task.regression else [to_id[str(v)] for v in task.train.labels]
    eval_labels = task.evaluation.labels if task.regression else [to_id[str(v)] for v in task.evaluation.labels]
    train_set = EncodedRows(tokenizer, task.train, config.max_seq_length, train_labels)
    eval_set = EncodedRows(tokenizer, task.evaluation, config.max_seq_length, eval_labels)
    collate = functools.partial(collate_labelled, pad_token_id=tokenizer.pad_token_id, packing=config.packing)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=config.per_device_batch_size, shuffle=True,
                                               collate_fn=collate, generator=torch.Generator().manual_seed(config.seed))
    eval_loader = torch.utils.data.DataLoader(eval_set, batch_size=config.per_device_batch_size * 2,
                                              collate_fn=collate)
    selection_loader = None
    if task.selection is not None:
        selection_labels = task.selection.labels if task.regression else [to_id[str(v)] for v in task.selection.labels]
        selection_loader = accelerator.prepare(torch.utils.data.DataLoader(
            EncodedRows(tokenizer, task.selection, config.max_seq_length, selection_labels),
            batch_size=config.per_device_batch_size * 2, collate_fn=collate))
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.learning_rate,
                                  fused=accelerator.device.type in FUSED_ADAMW_DEVICES)
    steps_per_epoch = math.ceil(len(train_loader) / config.gradient_accumulation_steps)
    total_steps = steps_per_epoch * config.epochs
    scheduler = build_scheduler(optimizer, int(config.warmup_fraction * total_steps), total_steps, "linear")
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler)
    if config.compile:  # in place: the weights keep their names, and the export is the eager model's
        accelerator.unwrap_model(model).compile(dynamic=True)
    start_trackers(accelerator, config.output, config.project, config.run_name, dataclasses.asdict(config))
    if config.choose_epoch_on == "eval":
        selection_loader = eval_loader
    return _Run(config, task, accelerator, model, optimizer, scheduler, train_loader, eval_loader, selection_loader,
                len(train_set), len(eval_set))


def check_task(config: FinetuneConfig) -> None:
    """Read and check a task's files, columns and labels and the model directory as fine-tuning would,
    without training: a runner of several tasks finds a broken one before the first trains."""
    config = dataclasses.replace(config, model=str(model_directory(config.model)))
    _resolve_task(config)
    _check_model_directory(config)


def _check_model_directory(config: FinetuneConfig) -> tuple[FinetuneConfig, str]:
    """What would fail only after training (a tokenizer the export cannot copy) is refused before it
    starts; ``max_seq_length`` is cut to the model's positions (with a note to print)."""
    hf_config = read_model_config(config.model)
    check_wordpiece_files(Path(config.model))
    check_tokenizer_matches(hf_config, Path(config.model))
    length, note = usable_sequence_length(config.max_seq_length, hf_config, config.model)
    return dataclasses.replace(config, max_seq_length=length), note


def _unfinished_run(output: Path) -> bool:
    """Whether ``output`` holds only what a fine-tuning run stopped before its end leaves (its config and logs,
    no classifier, no results): the same command starts it again, as it would an empty directory. Another
    writer of it would hold its lock, so this is never a run in progress."""
    unfinished = (output_kind(output) == "fine-tuning run" and (output / "finetune.yaml").is_file()
                  and not (output / "model").exists() and not (output / "eval_results.json").exists())
    if unfinished:
        print(f"bertpre: note: {output}: a fine-tuning run that was stopped before its end; starting it again",
              file=sys.stderr)
    return unfinished


def _clear_earlier_run(output: Path, cpu: bool) -> None:
    """Remove an earlier run's logs from ``output`` (reached only with --overwrite when it is not empty): the
    metrics log is appended to, so a rerun would otherwise read as six epochs of one run. Before the
    accelerator exists, since it opens the TensorBoard writer there; by the main process alone."""
    processes = process_state(cpu)
    if processes.is_main_process:
        for name in (METRICS_FILE, "eval_results.json", "finetune.yaml", PREDICTIONS_FILE):
            (output / name).unlink(missing_ok=True)
        shutil.rmtree(output / TENSORBOARD_DIR, ignore_errors=True)
    processes.wait_for_everyone()


def fit(run: _Run, show_progress: bool = True) -> tuple[_Best, list[dict[str, float]]]:
    """Train epoch by epoch, scoring each on the rows that choose the epoch (``choose_epoch_on``); keep the best
    epoch's weights; stop early if asked. The evaluation set is not looked at here (unless it is those rows)."""
    from tqdm.auto import tqdm

    config, task, accelerator, model = run.config, run.task, run.accelerator, run.model
    primary = config.metric or task.metrics[0]
    best = _Best()
    history: list[dict[str, float]] = []
    patience_left = config.early_stopping_patience
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:  # from the first step, so that a killed run's output is known for what it is
        save_config(config, output / "finetune.yaml")
    step = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        slots = real = 0
        bar = tqdm(run.train_loader, desc=f"epoch {epoch}/{config.epochs}",
                   disable=not (show_progress and accelerator.is_local_main_process))
        for batch in bar:
            slots += batch["attention_mask"].numel()
            real += int(batch["attention_mask"].sum())
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                run.optimizer.step()
                run.scheduler.step()
                run.optimizer.zero_grad(set_to_none=True)
            if accelerator.sync_gradients:
                step += 1
                if step % 10 == 0:
                    accelerator.log({"train/loss": loss.item(),
                                     "train/learning_rate": run.scheduler.get_last_lr()[0]}, step=step)
                bar.set_postfix(loss=f"{loss.item():.4f}")
        last_loss = accelerator.reduce(loss.detach().float(), reduction="sum").item()  # every process decides alike
        if not math.isfinite(last_loss):  # weights gone non-finite stay so: the epoch's last step shows it
            raise BertpreError(f"fine-tuning diverged in epoch {epoch} (loss {last_loss}); lower --learning-rate "
                               f"(now {config.learning_rate:g})")
        record: dict[str, float] = {"epoch": epoch, "step": step, "padding_fraction": 1 - real / max(slots, 1)}
        if run.selection_loader is None:  # --choose-epoch-on last: each epoch is kept over the one before
            results = {primary: float(epoch)}
        else:  # the selection slice, or with --choose-epoch-on eval the evaluation set
            results = _scores(model, run.selection_loader, accelerator, task, f"epoch {epoch}", config)[0]
            record.update({f"{config.choose_epoch_on}_{k}": v for k, v in results.items()})
            accelerator.log({f"{config.choose_epoch_on}/{k}": v for k, v in results.items()}, step=step)
            accelerator.print(f"epoch {epoch} ({config.choose_epoch_on}): "
                              + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
        history.append(record)
        if accelerator.is_main_process:
            append_metrics(output, record)
        if results[primary] > best.score:
            weights = accelerator.unwrap_model(model).state_dict()
            best = _Best(results[primary], epoch, results,
                         copy.deepcopy({k: v.detach().cpu() for k, v in weights.items()}))
            patience_left = config.early_stopping_patience
        elif patience_left is not None:
            patience_left -= 1
            if patience_left <= 0:
                accelerator.print(f"early stopping: no better {primary} for {config.early_stopping_patience} epochs")
                break
    return best, history


def finish(run: _Run, best: _Best, history: list[dict[str, float]], started: float) -> FinetuneSummary:
    """Score the kept epoch on the evaluation set; export its model with its tokenizer, card, config, evaluation
    results and per-row predictions."""
    config, accelerator = run.config, run.accelerator
    final = accelerator.unwrap_model(run.model)
    final.load_state_dict(best.state)
    metrics, predictions, labels = _scores(run.model, run.eval_loader, accelerator, run.task, "the evaluation set",
                                           config)
    accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=history[-1]["step"] if history else 0)
    finish_trackers(accelerator)  # the next fine-tune of the command (a seed, a GLUE task) needs the process group
    best = dataclasses.replace(best, metrics=metrics)
    chosen_on = _chosen_on(config, run.task)
    output = Path(config.output)
    if accelerator.is_main_process:
        _export_classifier(final, config, run.task, best, output, chosen_on, predictions, labels)
    selection_rows = len(run.task.selection.texts) if run.task.selection is not None else 0
    return FinetuneSummary(str(output / "model"), run.task.name, best.epoch, best.metrics,
                           run.train_rows, run.eval_rows, time.perf_counter() - started, history,
                           config.mixed_precision, chosen_on, selection_rows, predictions, labels)


def _scores(model: torch.nn.Module, loader: Any, accelerator: Any, task: _ResolvedTask, where: str,
            config: FinetuneConfig) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """The task's metrics on ``loader``'s rows, with the predictions and labels they come from."""
    predictions, labels = _predict_loader(model, loader, accelerator, task.regression)
    results = compute_metrics(task.metrics, predictions, labels)
    if not all(math.isfinite(value) for value in results.values()):
        raise BertpreError(f"{where}: evaluation gave {results} (the model's outputs are not finite); "
                           f"lower --learning-rate (now {config.learning_rate:g})")
    return results, predictions, labels


def _chosen_on(config: FinetuneConfig, task: _ResolvedTask) -> str:
    """Which rows chose the kept epoch, in words for the summary, eval_results.json and the model card."""
    if config.choose_epoch_on == "selection":
        return f"{len(task.selection.texts):,} rows held out from the training rows (seed {config.seed})"
    return epoch_choice(config)


def epoch_choice(config: FinetuneConfig) -> str:
    """How ``config`` chooses the epoch to keep, in words that hold for every seed."""
    if config.choose_epoch_on == "selection":
        return f"{config.selection_fraction:.0%} of the training rows held out"
    if config.choose_epoch_on == "eval":
        return "the evaluation set itself (optimistic: the same rows choose and score)"
    return "none: the last epoch"


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


def _export_classifier(model: torch.nn.Module, config: FinetuneConfig, task: _ResolvedTask, best: _Best,
                       output: Path, chosen_on: str, predictions: np.ndarray, labels: np.ndarray) -> None:
    card = classifier_model_card(config, task, model.config,
                                 {"epoch": best.epoch, "metrics": best.metrics, "chosen_on": chosen_on}, output)
    export_model(model, output / "model", tokenizer_dir=config.model, overwrite=True, model_card=card)
    save_config(config, output / "finetune.yaml")
    write_text_atomically(output / "eval_results.json", json.dumps({"task": task.name, "best_epoch": best.epoch,
                                                                     "epoch_chosen_on": chosen_on, **best.metrics},
                                                                    indent=2) + "\n")
    rows = [{"row": i, "label": _plain(y), "prediction": _plain(p)} for i, (p, y) in enumerate(zip(predictions, labels))]
    write_text_atomically(output / PREDICTIONS_FILE, "".join(json.dumps(row) + "\n" for row in rows))


def _plain(value: Any) -> Any:
    """A numpy scalar as the JSON number it is (class ids stay ints, scores floats)."""
    return value.item() if hasattr(value, "item") else value
