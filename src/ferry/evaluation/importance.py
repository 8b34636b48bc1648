"""Model-agnostic permutation importance on raw input columns.

It works on the frame the model receives (before any preprocessing), so the importance is about
columns a user knows, not about one-hot slots, and the same code serves every model family.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ferry.errors import DataError


def _sample(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    if len(frame) > max_rows:
        frame = frame.sample(n=max_rows, random_state=seed)
    return frame.reset_index(drop=True).copy()


def _column_drop(
    predict_score: Callable[[pd.DataFrame], float],
    work: pd.DataFrame,
    column: str,
    baseline: float,
    rng: np.random.Generator,
    n_repeats: int,
) -> float:
    original = work[column]
    drops = []
    for _ in range(n_repeats):
        # Shuffle in place on one working copy: copying a wide frame per repeat costs more than
        # scoring it. iloc keeps the dtype (a categorical stays categorical for the pipeline).
        work[column] = original.iloc[rng.permutation(len(work))].reset_index(drop=True)
        drops.append(baseline - predict_score(work))
    work[column] = original
    return float(np.mean(drops))


def permutation_importance_frame(
    predict_score: Callable[[pd.DataFrame], float],
    frame: pd.DataFrame,
    columns: list[str],
    *,
    n_repeats: int = 3,
    seed: int = 0,
    max_rows: int = 5000,
) -> dict[str, float]:
    """Mean score drop when each column is shuffled (higher score is better), largest first."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"importance columns {missing} are not in the frame; it has {list(frame)}")
    if n_repeats < 1 or max_rows < 1:
        raise ValueError(f"n_repeats and max_rows must be >= 1; got {n_repeats}, {max_rows}")
    work = _sample(frame, max_rows, seed)
    baseline = predict_score(work)
    rng = np.random.default_rng(seed)
    drops = {
        column: _column_drop(predict_score, work, column, baseline, rng, n_repeats)
        for column in columns
    }
    return dict(sorted(drops.items(), key=lambda item: (bool(np.isnan(item[1])), -item[1])))
