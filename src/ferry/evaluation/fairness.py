"""Group fairness of binary decisions: per-group rates and the gaps between groups.

Report shape (JSON-ready)::

    {column: {"groups": {group: {"n", "selection_rate", "tpr", "fpr", "accuracy", "precision"}},
              "demographic_parity_difference": float,
              "equalized_odds_difference": float}}

A rate that is undefined for a group (TPR in a group with no positives) is NaN and is left out
of the gaps; a gap with no defined value at all is NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ferry.errors import DataError

MISSING_GROUP = "missing"
GAP_KEYS = ("demographic_parity_difference", "equalized_odds_difference")


def _rate(num: int, den: int) -> float:
    return num / den if den > 0 else float("nan")


def group_rates(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Rates of one group's binary truth and decisions."""
    tp = int(np.sum(truth & pred))
    fp = int(np.sum(~truth & pred))
    positives, negatives = int(truth.sum()), int((~truth).sum())
    return {
        "n": int(truth.size),
        "selection_rate": _rate(int(pred.sum()), truth.size),
        "tpr": _rate(tp, positives),
        "fpr": _rate(fp, negatives),
        "accuracy": _rate(int(np.sum(truth == pred)), truth.size),
        "precision": _rate(tp, int(pred.sum())),
    }


def _group_keys(column: pd.Series) -> np.ndarray:
    # NaN/None are a group of their own: people with a missing attribute are often the ones a
    # model serves worst, so they must not vanish from the report.
    keys = column.astype(object).where(column.notna(), MISSING_GROUP)
    return keys.astype(str).to_numpy()


def _spread(values: list[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return max(finite) - min(finite) if finite else float("nan")


def _gaps(groups: dict[str, dict[str, float]]) -> dict[str, float]:
    rates = list(groups.values())
    tpr_gap = _spread([g["tpr"] for g in rates])
    fpr_gap = _spread([g["fpr"] for g in rates])
    return {
        "demographic_parity_difference": _spread([g["selection_rate"] for g in rates]),
        "equalized_odds_difference": _max(tpr_gap, fpr_gap),
    }


def _max(*values: float) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return max(finite) if finite else float("nan")


def _column_report(truth: np.ndarray, pred: np.ndarray, column: pd.Series) -> dict[str, Any]:
    keys = _group_keys(column)
    groups = {
        str(key): group_rates(truth[keys == key], pred[keys == key]) for key in np.unique(keys)
    }
    return {"groups": groups, **_gaps(groups)}


def fairness_report(
    y_true_binary: np.ndarray, y_pred_binary: np.ndarray, groups: pd.DataFrame
) -> dict[str, Any]:
    """Per sensitive column: per-group rates, demographic parity and equalized odds gaps."""
    truth = np.asarray(y_true_binary).astype(bool).ravel()
    pred = np.asarray(y_pred_binary).astype(bool).ravel()
    if not truth.size == pred.size == len(groups):
        raise DataError(
            f"fairness needs one sensitive row per prediction; received {truth.size} labels, "
            f"{pred.size} predictions and {len(groups)} sensitive rows"
        )
    return {
        str(name): _column_report(truth, pred, groups[name].reset_index(drop=True))
        for name in groups.columns
    }


def max_gap(report: dict[str, Any]) -> float:
    """The largest gap of any column, for the fairness gate; NaN when none could be measured."""
    gaps = [float(entry[key]) for entry in report.values() for key in GAP_KEYS]
    return _max(*gaps)
