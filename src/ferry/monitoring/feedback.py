"""Late labels: a sliding window of (truth, prediction) pairs and the quality it implies."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np


class FeedbackWindow:
    def __init__(self, size: int) -> None:
        self.pairs: deque[tuple[Any, Any, float | None]] = deque(maxlen=size)

    def add(self, truth: Any, predicted: Any, score: float | None) -> None:
        self.pairs.append((truth, predicted, score))

    def metrics(self) -> dict[str, float]:
        if not self.pairs:
            return {}
        truth = [p[0] for p in self.pairs]
        predicted = [p[1] for p in self.pairs]
        if isinstance(predicted[0], str):
            return _classification(np.asarray(truth).astype(str), np.asarray(predicted, dtype=str))
        error = np.asarray(predicted, dtype=float) - np.asarray(truth, dtype=float)
        return {
            "rmse": float(np.sqrt(np.mean(error**2))),
            "mae": float(np.mean(np.abs(error))),
            "n": float(len(error)),
        }


def _classification(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    result = {"accuracy": float(np.mean(truth == predicted)), "n": float(len(truth))}
    classes = sorted(set(truth) | set(predicted))
    if len(classes) <= 2:
        positive = classes[-1]
        tp = float(np.sum((predicted == positive) & (truth == positive)))
        precision = tp / max(float(np.sum(predicted == positive)), 1.0)
        recall = tp / max(float(np.sum(truth == positive)), 1.0)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result.update(precision=precision, recall=recall, f1=f1)
    return result
