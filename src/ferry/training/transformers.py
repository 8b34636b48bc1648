"""Preprocessing steps that scikit-learn lacks in an ONNX-convertible form.

Both compute in float32, the dtype of the ONNX graph, so the exported model reproduces the
trained one to rounding (see ``ferry.export.converters`` for their graphs).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class NumericPrep(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Impute, clip to training quantiles, scale, and append missing-value indicators.

    Indicators are added only for columns that had missing values in training, so the width
    of the output does not depend on the data seen at serving time.
    """

    def __init__(
        self,
        impute: str = "median",
        clip_quantiles: tuple[float, float] | None = (0.005, 0.995),
        indicators: bool = True,
        scale: bool = True,
    ) -> None:
        self.impute = impute
        self.clip_quantiles = clip_quantiles
        self.indicators = indicators
        self.scale = scale

    def fit(self, X: Any, y: Any = None) -> NumericPrep:
        x = np.asarray(X, dtype=np.float32)
        width = x.shape[1]
        all_nan = np.isnan(x).all(axis=0)
        safe = np.where(all_nan, 0.0, x) if all_nan.any() else x
        if self.clip_quantiles:
            lo, hi = self.clip_quantiles
            self.lower_ = np.nanquantile(safe, lo, axis=0).astype(np.float32)
            self.upper_ = np.nanquantile(safe, hi, axis=0).astype(np.float32)
        else:
            self.lower_ = np.full(width, -np.inf, dtype=np.float32)
            self.upper_ = np.full(width, np.inf, dtype=np.float32)
        center = np.nanmedian if self.impute == "median" else np.nanmean
        self.fill_ = np.clip(center(safe, axis=0), self.lower_, self.upper_).astype(np.float32)
        missing = np.isnan(x).any(axis=0)
        self.indicator_columns_ = np.flatnonzero(missing) if self.indicators else np.array([], int)
        filled = self._impute_clip(x)
        self.mean_ = (
            filled.mean(axis=0).astype(np.float32) if self.scale else np.zeros(width, np.float32)
        )
        std = filled.std(axis=0) if self.scale else np.ones(width)
        self.scale_ = np.where(std > 1e-12, std, 1.0).astype(np.float32)
        self.n_features_in_ = width
        return self

    def _impute_clip(self, x: np.ndarray) -> np.ndarray:
        filled = np.where(np.isnan(x), self.fill_, x)
        return np.minimum(np.maximum(filled, self.lower_), self.upper_).astype(np.float32)

    def transform(self, X: Any) -> np.ndarray:
        x = np.asarray(X, dtype=np.float32)
        out = (self._impute_clip(x) - self.mean_) / self.scale_
        flags = np.isnan(x[:, self.indicator_columns_]).astype(np.float32)
        return np.hstack([out.astype(np.float32), flags])

    def output_width(self) -> int:
        return int(self.n_features_in_ + len(self.indicator_columns_))


SECONDS_PER_DAY = 86400.0


def civil_month(days: np.ndarray) -> np.ndarray:
    """Month (1-12) of days since 1970-01-01 (H. Hinnant's civil_from_days, in floats)."""
    z = days + 719468.0
    era = np.floor(z / 146097.0)
    doe = z - era * 146097.0
    yoe = np.floor(
        (doe - np.floor(doe / 1460.0) + np.floor(doe / 36524.0) - np.floor(doe / 146096.0)) / 365.0
    )
    doy = doe - (365.0 * yoe + np.floor(yoe / 4.0) - np.floor(yoe / 100.0))
    mp = np.floor((5.0 * doy + 2.0) / 153.0)
    return mp + 3.0 - 12.0 * (mp >= 10.0)


class DatetimeParts(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Epoch seconds (UTC, float64, NaN for missing) to hour, day of week and month per column."""

    PARTS = ("hour", "dayofweek", "month")

    def fit(self, X: Any, y: Any = None) -> DatetimeParts:
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        t = np.asarray(X, dtype=np.float64)
        days = np.floor(t / SECONDS_PER_DAY)
        hour = np.floor((t - days * SECONDS_PER_DAY) / 3600.0)
        # 1970-01-01 was a Thursday; Monday is 0 as in pandas.
        dow = (days + 3.0) - 7.0 * np.floor((days + 3.0) / 7.0)
        parts = [hour, dow, civil_month(days)]
        stacked = np.stack(parts, axis=2).reshape(t.shape[0], -1)
        return stacked.astype(np.float32)
