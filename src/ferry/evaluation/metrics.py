"""Classification and regression metrics, robust to the small and lopsided test sets of real data.

A metric that is undefined on the data at hand (ROC AUC with one class present, precision with no
positive predictions) is NaN rather than an exception or a silent 0: a gate on it then fails with
a clear reason instead of passing on a made-up value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from ferry.errors import DataError, SpecError

NAN = float("nan")
# Probabilities are clipped before the log so one overconfident mistake costs a lot, not infinity.
_EPS = 1e-15


@dataclass(frozen=True)
class _Classes:
    """Inputs prepared once: class indices instead of label strings, predictions made."""

    codes: np.ndarray  # true class index per row
    proba: np.ndarray  # (n, k) probabilities in label order
    pred: np.ndarray  # predicted class index per row
    k: int


def _as_labels(y_true: np.ndarray) -> np.ndarray:
    # Labels are strings everywhere in Ferry; ints from a caller (0/1) match "0"/"1".
    return np.asarray(y_true).astype(str).ravel()


def _codes(y_true: np.ndarray, labels: list[str]) -> np.ndarray:
    values = _as_labels(y_true)
    known = np.asarray(labels, dtype=str)
    order = np.argsort(known)
    # Vectorised lookup: test sets of millions of rows are scored once per search trial.
    pos = np.clip(np.searchsorted(known[order], values), 0, known.size - 1)
    codes = order[pos]
    unknown = np.unique(values[known[codes] != values])
    if unknown.size:
        raise DataError(
            f"y_true holds labels {unknown[:5].tolist()} that are not among the model's classes "
            f"{labels}; evaluate with the label list the model was trained on"
        )
    return codes.astype(np.int64)


def as_proba_matrix(proba: np.ndarray, n: int, k: int) -> np.ndarray:
    """Probabilities as an (n, k) matrix; a 1-D binary score is taken as the positive class's."""
    matrix = np.asarray(proba, dtype=float)
    if matrix.ndim == 1 and k == 2:
        matrix = np.column_stack([1.0 - matrix, matrix])
    if matrix.shape != (n, k):
        raise DataError(
            f"probabilities have shape {matrix.shape}; expected ({n}, {k}): "
            "one row per example and one column per label, in label order"
        )
    return matrix


def encode_labels(y_true: np.ndarray, labels: list[str]) -> np.ndarray:
    """Class index (position in ``labels``) of every row of ``y_true``."""
    return _codes(y_true, labels)


def decide(proba: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Predicted class index: ``proba[:, 1] >= threshold`` for two classes, argmax otherwise."""
    if proba.shape[1] == 2:
        cut = 0.5 if threshold is None else threshold
        return (proba[:, 1] >= cut).astype(np.int64)
    return proba.argmax(axis=1).astype(np.int64)


def confusion_counts(codes: np.ndarray, pred: np.ndarray, k: int) -> list[list[int]]:
    """Rows are true classes, columns predicted ones, both in label order."""
    flat = np.bincount(codes * k + pred, minlength=k * k)
    return flat.reshape(k, k).astype(int).tolist()


def _prepare(
    y_true: np.ndarray, proba: np.ndarray, labels: list[str], threshold: float | None
) -> _Classes:
    if len(labels) < 2:
        raise DataError(f"classification needs at least 2 labels; received {labels}")
    codes = _codes(y_true, labels)
    if codes.size == 0:
        raise DataError("cannot compute metrics on an empty test set; check the split sizes")
    matrix = as_proba_matrix(proba, codes.size, len(labels))
    return _Classes(codes, matrix, decide(matrix, threshold), len(labels))


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else NAN


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else NAN


def _class_counts(c: _Classes, cls: int) -> tuple[int, int, int]:
    """True positives, false positives and false negatives of one class against the rest."""
    is_true, is_pred = c.codes == cls, c.pred == cls
    tp = int(np.sum(is_true & is_pred))
    return tp, int(np.sum(~is_true & is_pred)), int(np.sum(is_true & ~is_pred))


def _precision(c: _Classes, cls: int) -> float:
    tp, fp, _ = _class_counts(c, cls)
    return _ratio(tp, tp + fp)


def _recall(c: _Classes, cls: int) -> float:
    tp, _, fn = _class_counts(c, cls)
    return _ratio(tp, tp + fn)


def _f1(c: _Classes, cls: int) -> float:
    # 2tp / (2tp + fp + fn) equals the harmonic mean wherever that is defined, and stays 0 (not
    # undefined) when the class is predicted but never present, or present but never predicted.
    tp, fp, fn = _class_counts(c, cls)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def _per_class(fn: Callable[[_Classes, int], float]) -> Callable[[_Classes], float]:
    """Binary: the positive class (index 1), NaN where undefined.

    Multiclass: the macro mean over classes that occur in y_true or in the predictions, an
    undefined per-class value counting as 0 -- scikit-learn's default, so numbers compare.
    """

    def metric(c: _Classes) -> float:
        if c.k == 2:
            return fn(c, 1)
        seen = np.union1d(c.codes, c.pred)
        return float(np.mean([np.nan_to_num(fn(c, int(cls))) for cls in seen]))

    return metric


def _accuracy(c: _Classes) -> float:
    return float(np.mean(c.codes == c.pred))


def _balanced_accuracy(c: _Classes) -> float:
    # Mean recall over the classes present in y_true, as scikit-learn defines it.
    return _nanmean([_recall(c, cls) for cls in range(c.k)])


def _one_vs_rest(c: _Classes, cls: int, fn: Callable[[np.ndarray, np.ndarray], float]) -> float:
    target = c.codes == cls
    if target.all() or not target.any():
        return NAN
    return float(fn(target, c.proba[:, cls]))


def _ranking(fn: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[_Classes], float]:
    def metric(c: _Classes) -> float:
        if c.k == 2:
            return _one_vs_rest(c, 1, fn)
        return _nanmean([_one_vs_rest(c, cls, fn) for cls in range(c.k)])

    return metric


def _log_loss(c: _Classes) -> float:
    chosen = c.proba[np.arange(c.codes.size), c.codes]
    return float(-np.mean(np.log(np.clip(chosen, _EPS, 1.0))))


def _brier(c: _Classes) -> float:
    return float(np.mean((c.proba[:, 1] - (c.codes == 1)) ** 2))


_CLASSIFICATION: dict[str, Callable[[_Classes], float]] = {
    "accuracy": _accuracy,
    "balanced_accuracy": _balanced_accuracy,
    "precision": _per_class(_precision),
    "recall": _per_class(_recall),
    "f1": _per_class(_f1),
    "roc_auc": _ranking(roc_auc_score),
    "pr_auc": _ranking(average_precision_score),
    "log_loss": _log_loss,
    "brier": _brier,
}
_BINARY_ONLY = frozenset({"brier"})


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, labels: list[str], threshold: float | None = None
) -> dict[str, float]:
    """All classification metrics; binary ones use ``proba[:, 1] >= threshold`` (default 0.5)."""
    prepared = _prepare(y_true, proba, labels, threshold)
    return {
        name: fn(prepared)
        for name, fn in _CLASSIFICATION.items()
        if prepared.k == 2 or name not in _BINARY_ONLY
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    truth = np.asarray(y_true, dtype=float).ravel()
    pred = np.asarray(y_pred, dtype=float).ravel()
    if truth.size == 0 or truth.shape != pred.shape:
        raise DataError(
            f"regression metrics need equal, non-empty y_true and predictions; "
            f"received {truth.size} and {pred.size} values"
        )
    error = pred - truth
    total = float(np.sum((truth - truth.mean()) ** 2))
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        # R² is undefined for a constant target; NaN says so instead of a forced 0 or 1.
        "r2": 1.0 - float(np.sum(error**2)) / total if total > 0 else NAN,
    }


REGRESSION_NAMES = ("rmse", "mae", "r2")


def score(
    metric_name: str,
    y_true: np.ndarray,
    proba_or_pred: np.ndarray,
    labels: list[str] | None = None,
) -> float:
    """One metric, computed alone (the search calls this once per fold and trial)."""
    if metric_name in REGRESSION_NAMES:
        return regression_metrics(y_true, proba_or_pred)[metric_name]
    if metric_name not in _CLASSIFICATION:
        known = [*_CLASSIFICATION, *REGRESSION_NAMES]
        raise SpecError(f"unknown metric {metric_name!r}; choose from {known}")
    if labels is None:
        raise DataError(f"metric {metric_name!r} needs the class labels; pass labels=[...]")
    prepared = _prepare(y_true, proba_or_pred, labels, None)
    if prepared.k > 2 and metric_name in _BINARY_ONLY:
        raise SpecError(f"metric {metric_name!r} is defined for binary classification only")
    return _CLASSIFICATION[metric_name](prepared)
