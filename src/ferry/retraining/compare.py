"""Champion against challenger on the same rows: a paired bootstrap of the metric difference.

Both models are scored once; each bootstrap draw resamples row indices and recomputes the metric
for both on the same draw, so the interval reflects the difference itself, not two independent
noises. The difference is oriented so that positive always means the challenger is better.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from ferry.core.spec import LOWER_IS_BETTER
from ferry.evaluation.metrics import score

THRESHOLD_METRICS = frozenset({"f1", "accuracy", "precision", "recall", "balanced_accuracy"})


@dataclass(frozen=True)
class Comparison:
    dataset: str
    metric: str
    rows: int
    champion: float
    challenger: float
    delta: float  # challenger minus champion, positive = challenger better
    ci_low: float
    ci_high: float
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Scored:
    """A model's outputs on the rows: probabilities (classification) or values (regression)."""

    outputs: np.ndarray
    threshold: float | None = None


def _decided(scored: Scored, metric: str) -> np.ndarray:
    # Threshold metrics judge each model at its own decision threshold, as it serves.
    outputs, threshold = scored.outputs, scored.threshold
    if metric not in THRESHOLD_METRICS or threshold is None or outputs.ndim != 2:
        return outputs
    if outputs.shape[1] != 2:
        return outputs
    positive = (outputs[:, 1] >= threshold).astype(np.float64)
    return np.column_stack([1.0 - positive, positive])


def binary_auc(truth: np.ndarray, positive_score: np.ndarray) -> float:
    """Mann-Whitney AUC with tie-averaged ranks: the same number as roc_auc_score, ~20x faster."""
    positives = int(truth.sum())
    negatives = len(truth) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(positive_score)
    return float(
        (ranks[truth == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    )


def _metric_fn(metric: str, labels: list[str] | None):  # type: ignore[no-untyped-def]
    if metric == "roc_auc" and labels is not None and len(labels) == 2:
        return lambda truth, outputs: binary_auc(truth, outputs[:, 1])
    names = None if labels is None else [str(i) for i in range(len(labels))]

    def compute(truth: np.ndarray, outputs: np.ndarray) -> float:
        given = truth if names is None else truth.astype(str)
        return score(metric, given, outputs, names)

    return compute


def paired_bootstrap(
    dataset: str,
    metric: str,
    truth: np.ndarray,
    champion: Scored,
    challenger: Scored,
    labels: list[str] | None,
    *,
    draws: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """``truth`` holds class indices (classification) or values (regression)."""
    compute = _metric_fn(metric, labels)
    a, b = _decided(champion, metric), _decided(challenger, metric)
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    base_a, base_b = compute(truth, a), compute(truth, b)
    rng = np.random.default_rng(seed)
    deltas = np.empty(draws)
    for i in range(draws):
        rows = rng.integers(0, len(truth), len(truth))
        deltas[i] = sign * (compute(truth[rows], b[rows]) - compute(truth[rows], a[rows]))
    tail = (1 - confidence) / 2 * 100
    low, high = np.nanpercentile(deltas, [tail, 100 - tail])
    return Comparison(
        dataset=dataset,
        metric=metric,
        rows=len(truth),
        champion=float(base_a),
        challenger=float(base_b),
        delta=float(sign * (base_b - base_a)),
        ci_low=float(low),
        ci_high=float(high),
        confidence=confidence,
    )
