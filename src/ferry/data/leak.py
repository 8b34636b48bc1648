"""Single columns that predict the target almost perfectly: the label leaking into a feature."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api import types

from ferry.data.schema import ColumnKind, Task

MAX_ROWS = 20_000  # a sample this size finds a leak as surely as the whole frame, and fast
BALANCED_ACCURACY = 0.98
ROC_AUC = 0.99
CORRELATION = 0.99
FOLDS = 3
SEED = 0


@dataclass
class Leak:
    column: str
    metric: str  # "balanced_accuracy", "roc_auc" or "correlation"
    score: float
    threshold: float
    rows: int


def find_leaks(
    frame: pd.DataFrame, target: str, columns: dict[str, ColumnKind], task: Task
) -> list[Leak]:
    """Columns that alone predict ``target`` under cross-validation (classification) or that
    correlate with it almost perfectly (regression)."""
    sample = _sample(frame[[*columns, target]], target)
    if task == "regression":
        return _regression_leaks(sample, target, columns)
    return _classification_leaks(sample, target, columns)


def _sample(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    labelled = frame[frame[target].notna()]
    if len(labelled) > MAX_ROWS:
        labelled = labelled.sample(n=MAX_ROWS, random_state=SEED)
    return labelled


def as_numbers(column: pd.Series) -> np.ndarray:
    """One float per row (NaN when missing), in whatever order the values have."""
    if types.is_datetime64_any_dtype(column):
        return (column - column.min()).dt.total_seconds().to_numpy(dtype=float)
    if types.is_timedelta64_dtype(column):
        return column.dt.total_seconds().to_numpy(dtype=float)
    if types.is_numeric_dtype(column) or types.is_bool_dtype(column):
        return column.astype("float64").to_numpy()
    codes = pd.factorize(column)[0].astype(float)
    codes[codes < 0] = np.nan
    return codes


def _regression_leaks(
    sample: pd.DataFrame, target: str, columns: dict[str, ColumnKind]
) -> list[Leak]:
    y = as_numbers(sample[target])
    leaks = []
    for name, kind in columns.items():
        if kind == "categorical":
            continue  # codes in arbitrary order carry no linear meaning
        x = as_numbers(sample[name])
        both = np.isfinite(x) & np.isfinite(y)
        if both.sum() < 3 or np.ptp(x[both]) == 0 or np.ptp(y[both]) == 0:
            continue
        score = abs(float(np.corrcoef(x[both], y[both])[0, 1]))
        if score >= CORRELATION:
            leaks.append(Leak(name, "correlation", score, CORRELATION, int(both.sum())))
    return leaks


def _classification_leaks(
    sample: pd.DataFrame, target: str, columns: dict[str, ColumnKind]
) -> list[Leak]:
    y = pd.factorize(sample[target])[0]
    counts = np.bincount(y)
    folds = min(FOLDS, int(counts.min()))
    if len(counts) < 2 or folds < 2:
        return []  # one class, or too few of one to cross-validate
    leaks = []
    for name, kind in columns.items():
        leak = _tree_leak(name, sample[name], y, folds, depth=_depth(sample[name], kind))
        if leak is not None:
            leaks.append(leak)
    return leaks


def _depth(column: pd.Series, kind: ColumnKind) -> int:
    # Category codes are in arbitrary order: the tree needs enough depth to single out each one.
    if kind != "categorical":
        return 4
    return min(8, max(4, math.ceil(math.log2(column.nunique() + 1))))


def _tree_leak(name: str, column: pd.Series, y: np.ndarray, folds: int, depth: int) -> Leak | None:
    # Imported here: scikit-learn costs about a second to import and most callers never need it.
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.tree import DecisionTreeClassifier

    x = as_numbers(column).reshape(-1, 1)
    tree = DecisionTreeClassifier(max_depth=depth, random_state=SEED)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=SEED)
    proba = cross_val_predict(tree, x, y, cv=cv, method="predict_proba")
    accuracy = float(balanced_accuracy_score(y, proba.argmax(axis=1)))
    if accuracy >= BALANCED_ACCURACY:
        return Leak(name, "balanced_accuracy", accuracy, BALANCED_ACCURACY, len(y))
    if proba.shape[1] == 2:
        auc = float(roc_auc_score(y, proba[:, 1]))
        if auc >= ROC_AUC:
            return Leak(name, "roc_auc", auc, ROC_AUC, len(y))
    return None
