"""Train, validation and test splits: stratified, random, or by time."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api import types

from ferry.errors import DataError

TASKS = ("classification", "regression")


@dataclass
class Split:
    train: pd.DataFrame
    valid: pd.DataFrame  # empty (with the same columns) when valid_size is 0
    test: pd.DataFrame


@dataclass
class _Counts:
    train: int
    valid: int
    test: int


def split_frame(
    frame: pd.DataFrame,
    target: str,
    *,
    task: str,
    test_size: float,
    valid_size: float,
    time_column: str | None,
    seed: int,
) -> Split:
    """Split ``frame`` into train, validation and test; sizes are shares of all rows.

    With ``time_column`` the latest rows are the test set and the ones just before them the
    validation set, so the model is judged on a future it has not seen. Otherwise classification
    is split stratified by the target (plain random when a class is too small) and regression at
    random. Each part has a fresh 0..n-1 index.
    """
    _check_arguments(frame, target, task, test_size, valid_size)
    counts = _counts(len(frame), test_size, valid_size)
    if time_column is not None:
        order = _time_order(frame, time_column)
    else:
        labels = frame[target] if task == "classification" else None
        order = _random_order(len(frame), counts, labels, seed)
    train_end = counts.train + counts.valid
    return Split(
        train=_rows(frame, order[: counts.train]),
        valid=_rows(frame, order[counts.train : train_end]),
        test=_rows(frame, order[train_end:]),
    )


def _check_arguments(
    frame: pd.DataFrame, target: str, task: str, test_size: float, valid_size: float
) -> None:
    if task not in TASKS:
        raise DataError(f"task must be one of {list(TASKS)}; received {task!r}. Fix task.")
    if target not in frame.columns:
        raise DataError(
            f"target {target!r} is not a column: expected one of "
            f"{[str(name) for name in frame.columns]}. Fix data.target."
        )
    if not 0 < test_size < 1 or not 0 <= valid_size < 1 or test_size + valid_size >= 1:
        raise DataError(
            f"split sizes test_size={test_size} and valid_size={valid_size} are invalid: "
            "expected 0 < test_size < 1, 0 <= valid_size < 1 and a sum below 1 so rows are "
            "left to train on. Fix split.test_size / split.valid_size."
        )


def _counts(rows: int, test_size: float, valid_size: float) -> _Counts:
    # Rounded up, as scikit-learn does, so a small share still gets at least one row.
    test = math.ceil(test_size * rows)
    valid = math.ceil(valid_size * rows) if valid_size > 0 else 0
    counts = _Counts(train=rows - test - valid, valid=valid, test=test)
    if counts.train < 1 or counts.test < 1 or (valid_size > 0 and counts.valid < 1):
        raise DataError(
            f"cannot split {rows} rows into train/valid/test with test_size={test_size} and "
            f"valid_size={valid_size}: that gives {counts.train}/{counts.valid}/{counts.test} "
            "rows and every part needs at least one. Use more data or smaller split sizes."
        )
    return counts


def _random_order(rows: int, counts: _Counts, labels: pd.Series | None, seed: int) -> np.ndarray:
    """Row positions ordered train, then valid, then test."""
    positions = np.arange(rows)
    rest, test = _draw(positions, counts.test, labels, seed)
    train, valid = rest, positions[:0]
    if counts.valid:
        rest_labels = None if labels is None else labels.iloc[rest]
        train, valid = _draw(rest, counts.valid, rest_labels, seed)
    return np.concatenate([train, valid, test])


def _draw(
    positions: np.ndarray, size: int, labels: pd.Series | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``positions`` into (kept, drawn) with ``size`` drawn, stratified when possible."""
    from sklearn.model_selection import train_test_split

    if labels is not None:
        try:
            kept, drawn = train_test_split(
                positions, test_size=size, stratify=labels.to_numpy(), random_state=seed
            )
            return kept, drawn
        except ValueError:
            # A class with one row, or fewer drawn rows than classes, cannot be stratified;
            # a plain random split is the best that data allows.
            pass
    kept, drawn = train_test_split(positions, test_size=size, random_state=seed)
    return kept, drawn


def _time_order(frame: pd.DataFrame, time_column: str) -> np.ndarray:
    if time_column not in frame.columns:
        raise DataError(
            f"time column {time_column!r} is not in the data: expected one of "
            f"{[str(name) for name in frame.columns]}. Fix split.time_column or remove it "
            "for a random split."
        )
    times = _comparable_times(frame[time_column], time_column)
    missing = int(times.isna().sum())
    if missing:
        raise DataError(
            f"time column {time_column!r} has {missing} missing values: expected a time on "
            "every row to order them. Drop or fill those rows, or split at random."
        )
    # Stable, so rows with equal times keep their file order.
    return np.argsort(times.to_numpy(), kind="stable")


def _comparable_times(column: pd.Series, name: str) -> pd.Series:
    if types.is_datetime64_any_dtype(column) or types.is_numeric_dtype(column):
        return column
    parsed = pd.to_datetime(column, errors="coerce", format="mixed", utc=True)
    if parsed.isna().sum() > column.isna().sum():
        raise DataError(
            f"time column {name!r} has dtype {column.dtype} and values that are not times, "
            f"e.g. {column[parsed.isna() & column.notna()].iloc[0]!r}: expected datetimes or "
            "numbers. Fix the column or choose another split.time_column."
        )
    return parsed


def _rows(frame: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    return frame.iloc[positions].reset_index(drop=True)
