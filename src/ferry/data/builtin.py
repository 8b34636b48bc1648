"""Built-in datasets: the fraud generator and the small sets that ship inside scikit-learn."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pandas as pd

from ferry.data.fraud import DEFAULT_ROWS, fraud
from ferry.data.reviews import DEFAULT_ROWS as REVIEW_ROWS
from ferry.data.reviews import reviews
from ferry.errors import DataError

__all__ = ["BUILTIN_NAMES", "fraud", "load_builtin"]

BUILTIN_NAMES: tuple[str, ...] = ("fraud", "reviews", "breast_cancer", "wine", "digits", "diabetes")
TARGET = "target"


def load_builtin(name: str, rows: int | None = None, seed: int = 0) -> pd.DataFrame:
    """A built-in dataset by name, features plus its target column.

    ``rows`` is how many rows to generate for ``fraud`` and ``reviews`` and, for the fixed
    scikit-learn sets, the size of a seeded random sample (all rows when ``rows`` is at least the
    set's size).
    """
    _check_rows(rows)
    if name == "fraud":
        return fraud(rows=DEFAULT_ROWS if rows is None else rows, seed=seed)
    if name == "reviews":
        return reviews(rows=REVIEW_ROWS if rows is None else rows, seed=seed)
    loader = _sklearn_loaders().get(name)
    if loader is None:
        raise DataError(
            f"unknown built-in dataset {name!r}: expected one of {', '.join(BUILTIN_NAMES)}. "
            f"Use e.g. source: builtin:{BUILTIN_NAMES[0]}"
        )
    frame = loader()
    if rows is not None and rows < len(frame):
        # Sorted back into file order: some sets (wine) are ordered by class, and a sample that
        # keeps that order is still a fair sample.
        frame = frame.sample(n=rows, random_state=seed).sort_index().reset_index(drop=True)
    return frame


def _check_rows(rows: int | None) -> None:
    if rows is None:
        return
    if isinstance(rows, bool) or not isinstance(rows, int | np.integer) or rows < 1:
        raise DataError(
            f"rows must be a positive whole number or None (all rows); received {rows!r}. "
            "Set data.rows to e.g. 10000 or remove it."
        )


def _sklearn_loaders() -> dict[str, Callable[[], pd.DataFrame]]:
    return {
        "breast_cancer": lambda: _sklearn_frame("load_breast_cancer", classes=True),
        "wine": lambda: _sklearn_frame("load_wine", classes=True),
        "digits": _digits,
        "diabetes": lambda: _sklearn_frame("load_diabetes", classes=False),
    }


def _sklearn_frame(loader_name: str, *, classes: bool) -> pd.DataFrame:
    # Imported here: scikit-learn costs about a second to import and most callers never need it.
    from sklearn import datasets

    bunch = getattr(datasets, loader_name)(as_frame=True)
    features = bunch.data.rename(columns=_column_name)
    target = bunch.target.astype(np.int64 if classes else np.float64)
    return features.assign(**{TARGET: target.to_numpy()})


def _column_name(name: str) -> str:
    """``mean radius`` -> ``mean_radius``: names that need no quoting in YAML, JSON or ONNX."""
    return re.sub(r"[^0-9A-Za-z_]+", "_", str(name)).strip("_")


def _digits() -> pd.DataFrame:
    frame = _sklearn_frame("load_digits", classes=True)
    pixels = [column for column in frame.columns if column != TARGET]
    return frame.rename(columns={old: f"pixel_{i}" for i, old in enumerate(pixels)})


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as images: ``uint8 [1797, 8, 8]`` (ink is bright, 0-16 scaled to
    0-255) and their ``int64`` labels 0-9; the image models' ``builtin:digits``."""
    from sklearn import datasets

    bunch = datasets.load_digits()
    pixels = np.rint(np.asarray(bunch.images, dtype=np.float64) * (255 / 16)).astype(np.uint8)
    return pixels, np.asarray(bunch.target, dtype=np.int64)
