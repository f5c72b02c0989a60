"""`bertpre predict`: run an exported classifier over a table; write one JSON line per row and metrics."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertpre.data.batching import rows_batch
from bertpre.core.configs import PredictConfig
from bertpre.core.errors import BertpreError
from bertpre.model.attention import choose_kernel
from bertpre.model.hf_directory import load_pretrained, read_model_config, usable_sequence_length
from bertpre.core.io import check_apart_from_inputs, refuse_symlinked_output, write_text_atomically
from bertpre.core.locking import output_lock
from bertpre.tasks.metrics import compute_metrics
from bertpre.core.resolve import model_directory
from bertpre.readers.tables import EncodedRows, LabelledData, as_floats, read_table, select_columns
from bertpre.tokenizer.files import load_tokenizer


def predict(config: PredictConfig) -> dict[str, Any]:
    """Run an exported classifier over a file; write one JSON line per row and return metrics.

    The inputs (and gold labels, when a label column is named) are checked before anything is
    written, and the predictions file is replaced in one rename, under its lock: an error never leaves
    one behind.
    """
    with output_lock(config.output):
        return _predict(config)


def _predict(config: PredictConfig) -> dict[str, Any]:
    _check_output(config)
    config = dataclasses.replace(config, model=str(model_directory(config.model)))  # a Hub id: its cached snapshot
    check_apart_from_inputs(config.output, {"--input": [config.input], "--model": [config.model]})
    hf_config = read_model_config(config.model)
    if not hf_config.architectures or "ForSequenceClassification" not in hf_config.architectures[0]:
        raise BertpreError(f"{config.model}: not a classifier (architectures {hf_config.architectures}); "
                           "fine-tune it first with `bertpre finetune`")
    length, note = usable_sequence_length(config.max_seq_length, hf_config, config.model)
    if note:
        print(note)
    config = dataclasses.replace(config, max_seq_length=length)
    rows = read_table(config.input, config.column_names)
    data = select_columns(rows, config.text_column, config.text_pair_column, config.label_column, config.input)
    regression = hf_config.num_labels == 1
    truth = _gold_labels(data, hf_config, config) if data.labels is not None else None
    device = _device(config)
    kernel = choose_kernel(config.attention, device, 0.0, training=False)
    model, _ = load_pretrained(config.model, task="classification", num_labels=hf_config.num_labels, attention=kernel)
    model.to(device).eval()
    tokenizer = load_tokenizer(config.model)
    dataset = EncodedRows(tokenizer, data, config.max_seq_length, None)
    id2label = {int(k): v for k, v in hf_config.id2label.items()}
    outputs = []
    with torch.no_grad():
        for start in range(0, len(dataset), config.batch_size):
            batch = rows_batch([dataset[i] for i in range(start, min(len(dataset), start + config.batch_size))],
                               tokenizer.pad_token_id, config.packing)
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()
            if regression:
                outputs += [{"score": float(v)} for v in logits.squeeze(-1)]
            else:
                probabilities = logits.softmax(-1)
                for p in probabilities:
                    index = int(p.argmax())
                    outputs.append({"label": id2label[index], "label_id": index, "score": float(p[index])})
    write_text_atomically(config.output, "".join(json.dumps(row) + "\n" for row in outputs))
    metrics: dict[str, Any] = {"rows": len(outputs), "output": config.output}
    if truth is not None:
        if regression:
            metrics.update(compute_metrics(("pearson", "spearman"), np.array([o["score"] for o in outputs]), truth))
        else:
            metrics.update(compute_metrics(("accuracy", "f1") if hf_config.num_labels == 2 else ("accuracy",),
                                           np.array([o["label_id"] for o in outputs]), truth))
    return metrics


def _check_output(config: PredictConfig) -> None:
    """Refuse, before any work, an output that would replace the input, a directory, a symbolic link, (without
    --overwrite) an existing file, or (with it) a file that is not an earlier file of predictions."""
    output = Path(config.output)
    if not config.input.startswith("hf:") and Path(config.input).exists() and output.exists() and \
            output.resolve() == Path(config.input).resolve():
        raise BertpreError(f"{config.output}: is the --input file; write the predictions to another --output")
    refuse_symlinked_output(output)
    if output.is_dir():
        raise BertpreError(f"{config.output}: is a directory; --output names the predictions file (e.g. "
                           f"{output / 'predictions.jsonl'})")
    if output.exists() and not config.overwrite:
        raise BertpreError(f"{config.output}: exists; choose another --output or pass --overwrite true")
    if output.exists() and not _holds_predictions(output):
        raise BertpreError(f"{config.output}: exists and is not a file of predictions (its first line is not one); "
                           "--overwrite replaces only an earlier output of `bertpre predict`: choose another --output")


def _holds_predictions(path: Path) -> bool:
    """Whether ``path`` is empty or starts with a line `predict` writes (a JSON object with a score)."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline(1 << 16)
        record = json.loads(first) if first.strip() else {"score": 0}
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "score" in record


def _gold_labels(data: LabelledData, hf_config: Any, config: PredictConfig) -> np.ndarray:
    """Gold labels as the classifier's ids (or floats for regression); unknown labels are refused."""
    labels = data.labels or []
    if hf_config.num_labels == 1:
        return np.array(as_floats(data, config.input, config.label_column))
    label2id = {str(v): int(k) for k, v in hf_config.id2label.items()}
    label2id.update({str(k): int(k) for k in hf_config.id2label})  # raw ids ("0", "1") work too
    unknown = sorted({str(v) for v in labels} - set(label2id))
    if unknown:
        raise BertpreError(f"{config.input}: labels {unknown} are not among the classifier's "
                           f"{sorted(hf_config.label2id)}")
    return np.array([label2id[str(v)] for v in labels])


def _device(config: PredictConfig) -> torch.device:
    """The GPU when there is one (and --cpu is not set), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() and not config.cpu else "cpu")
