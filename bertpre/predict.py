"""`bertpre predict`: run an exported classifier over a table; write one JSON line per row and metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertpre.batching import pad_examples
from bertpre.configs import PredictConfig
from bertpre.errors import BertpreError
from bertpre.hf_directory import load_pretrained, read_bert_config
from bertpre.metrics import compute_metrics
from bertpre.tables import EncodedRows, as_floats, read_table, select_columns


def predict(config: PredictConfig) -> dict[str, Any]:
    """Run an exported classifier over a file; write one JSON line per row and return metrics."""
    from transformers import AutoTokenizer

    hf_config = read_bert_config(config.model)
    if not hf_config.architectures or "ForSequenceClassification" not in hf_config.architectures[0]:
        raise BertpreError(f"{config.model}: not a classifier (architectures {hf_config.architectures}); "
                           "fine-tune it first with `bertpre finetune`")
    model, _ = load_pretrained(config.model, task="classification", num_labels=hf_config.num_labels)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    rows = read_table(config.input, config.column_names)
    data = select_columns(rows, config.text_column, config.text_pair_column, config.label_column, config.input)
    dataset = EncodedRows(tokenizer, data, config.max_seq_length, None)
    regression = hf_config.num_labels == 1
    id2label = {int(k): v for k, v in hf_config.id2label.items()}
    outputs = []
    with torch.no_grad():
        for start in range(0, len(dataset), config.batch_size):
            batch = pad_examples([dataset[i] for i in range(start, min(len(dataset), start + config.batch_size))],
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
            truth = np.array(as_floats(data.labels, config.input, config.label_column))
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
