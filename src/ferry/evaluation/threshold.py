"""The decision threshold of a binary classifier: best F1, or the strictest one meeting a recall.

Thresholds returned are actual scores, so ``score >= threshold`` reproduces exactly the point on
the precision-recall curve that was chosen.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve

from ferry.errors import SpecError

DEFAULT_THRESHOLD = 0.5
STRATEGIES = ("f1", "recall")


def _clean(y_true_binary: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Finite pairs as (bool, float) arrays, or None when no threshold can be learnt from them."""
    truth = np.asarray(y_true_binary).astype(bool).ravel()
    values = np.asarray(score, dtype=float).ravel()
    if truth.shape != values.shape:
        return None
    keep = np.isfinite(values)
    truth, values = truth[keep], values[keep]
    if truth.size == 0 or truth.all() or not truth.any():
        return None
    return truth, values


def _best_f1(precision: np.ndarray, recall: np.ndarray, thresholds: np.ndarray) -> float:
    # The curve's last point (precision 1, recall 0) has no threshold; drop it.
    p, r = precision[:-1], recall[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return float(thresholds[int(np.argmax(f1))])


def _for_recall(recall: np.ndarray, thresholds: np.ndarray, target: float) -> float:
    # Recall falls as the threshold rises; the lowest threshold always reaches recall 1.
    meets = recall[:-1] >= target
    return float(thresholds[meets].max())


def _check(strategy: str, recall_target: float | None) -> None:
    if strategy not in STRATEGIES:
        raise SpecError(f"threshold.strategy: unknown {strategy!r}; choose from {list(STRATEGIES)}")
    if strategy == "recall" and (recall_target is None or not 0 < recall_target <= 1):
        raise SpecError(
            "threshold.recall_target: strategy 'recall' needs a target in (0, 1]; "
            f"received {recall_target!r} (e.g. recall_target: 0.9)"
        )


def choose_threshold(
    y_true_binary: np.ndarray,
    score: np.ndarray,
    strategy: str = "f1",
    recall_target: float | None = None,
) -> float:
    """Best-F1 threshold, or the highest one whose recall >= ``recall_target``.

    Falls back to 0.5 when the data cannot support a choice (empty, one class only, no finite
    scores): a threshold tuned on nothing would be noise dressed up as a decision.
    """
    _check(strategy, recall_target)
    cleaned = _clean(y_true_binary, score)
    if cleaned is None:
        return DEFAULT_THRESHOLD
    precision, recall, thresholds = precision_recall_curve(*cleaned)
    if strategy == "recall":
        assert recall_target is not None  # narrowed by _check
        return _for_recall(recall, thresholds, recall_target)
    return _best_f1(precision, recall, thresholds)
