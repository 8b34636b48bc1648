"""Evaluate a trained model on held-out data: metrics, threshold, confusion, fairness, gates.

The result, ``Evaluation``, is what the report, metrics.json and the model card are written from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ferry.core.spec import GatesSpec
from ferry.evaluation.fairness import fairness_report, max_gap
from ferry.evaluation.gates import GateResult, check_gates
from ferry.evaluation.metrics import (
    as_proba_matrix,
    classification_metrics,
    confusion_counts,
    decide,
    encode_labels,
    regression_metrics,
)
from ferry.evaluation.threshold import choose_threshold

TEST_THRESHOLD_NOTE = (
    "The decision threshold was chosen on the test data (no validation split was given), so the "
    "test metrics at that threshold are optimistic."
)


@dataclass
class Evaluation:
    task: str
    labels: list[str] | None
    metrics: dict[str, float]
    threshold: float | None
    confusion: list[list[int]] | None
    y_true: np.ndarray
    # binary: positive-class probability; multiclass: proba matrix; regression: predictions
    score: np.ndarray
    fairness: dict[str, Any] | None
    importance: dict[str, float] | None
    gates: list[GateResult]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(gate.passed for gate in self.gates)


def _one_class_note(positive: np.ndarray, where: str) -> list[str]:
    if positive.all() or not positive.any():
        return [f"The {where} data holds one class only, so the threshold fell back to 0.5."]
    return []


def _threshold(
    y_test: np.ndarray,
    proba_test: np.ndarray,
    labels: list[str],
    valid: tuple[np.ndarray, np.ndarray] | None,
    strategy: str,
    recall_target: float | None,
) -> tuple[float, list[str]]:
    """The threshold and notes on how far to trust it."""
    if valid is not None:
        positive = encode_labels(valid[0], labels) == 1
        score = as_proba_matrix(valid[1], positive.size, 2)[:, 1]
        notes = _one_class_note(positive, "validation")
    else:
        positive, score = encode_labels(y_test, labels) == 1, proba_test[:, 1]
        notes = [TEST_THRESHOLD_NOTE, *_one_class_note(positive, "test")]
    return choose_threshold(positive, score, strategy, recall_target), notes


def _fairness(
    codes: np.ndarray, pred: np.ndarray, labels: list[str], sensitive: pd.DataFrame | None
) -> dict[str, Any] | None:
    if sensitive is None or sensitive.shape[1] == 0:
        return None
    if len(labels) == 2:
        return fairness_report(codes == 1, pred == 1, sensitive)
    # Multiclass: one binary (one-vs-rest) report per class, keyed "column (class label)".
    merged: dict[str, Any] = {}
    for index, label in enumerate(labels):
        report = fairness_report(codes == index, pred == index, sensitive)
        merged.update({f"{column} (class {label})": v for column, v in report.items()})
    return merged


def evaluate_classifier(
    y_test: np.ndarray,
    proba_test: np.ndarray,
    labels: list[str],
    *,
    y_valid: np.ndarray | None = None,
    proba_valid: np.ndarray | None = None,
    strategy: str = "f1",
    recall_target: float | None = None,
    sensitive: pd.DataFrame | None = None,
    gates: GatesSpec | None = None,
) -> Evaluation:
    """Metrics at the chosen threshold, confusion matrix, fairness and gates on the test data.

    ``sensitive`` rows align with ``y_test`` by position (indexes are ignored).
    """
    labels = [str(label) for label in labels]
    codes = encode_labels(y_test, labels)
    proba = as_proba_matrix(proba_test, codes.size, len(labels))
    threshold: float | None = None
    notes: list[str] = []
    if len(labels) == 2:
        valid = None if y_valid is None or proba_valid is None else (y_valid, proba_valid)
        threshold, notes = _threshold(y_test, proba, labels, valid, strategy, recall_target)
    metrics = classification_metrics(y_test, proba, labels, threshold)
    pred = decide(proba, threshold)
    fairness = _fairness(codes, pred, labels, sensitive)
    gap = max_gap(fairness) if fairness is not None else None
    return Evaluation(
        task="classification",
        labels=labels,
        metrics=metrics,
        threshold=threshold,
        confusion=confusion_counts(codes, pred, len(labels)),
        y_true=np.asarray(y_test).astype(str).ravel(),
        score=proba[:, 1] if len(labels) == 2 else proba,
        fairness=fairness,
        importance=None,
        gates=check_gates(metrics, gates, gap) if gates is not None else [],
        notes=notes,
    )


def evaluate_regressor(
    y_test: np.ndarray, pred_test: np.ndarray, *, gates: GatesSpec | None = None
) -> Evaluation:
    metrics = regression_metrics(y_test, pred_test)
    return Evaluation(
        task="regression",
        labels=None,
        metrics=metrics,
        threshold=None,
        confusion=None,
        y_true=np.asarray(y_test, dtype=float).ravel(),
        score=np.asarray(pred_test, dtype=float).ravel(),
        fairness=None,
        importance=None,
        gates=check_gates(metrics, gates) if gates is not None else [],
    )
