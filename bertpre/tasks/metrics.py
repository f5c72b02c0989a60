"""Evaluation metrics of fine-tuned classifiers and regressors: accuracy, F1, Matthews, Pearson, Spearman."""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np


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
