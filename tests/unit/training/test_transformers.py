import numpy as np
import pandas as pd

from ferry.training.transformers import DatetimeParts, NumericPrep


def test_numeric_prep_imputes_clips_scales_and_flags() -> None:
    x = np.array([[1.0, 5.0], [2.0, np.nan], [3.0, 7.0], [100.0, 6.0]])
    prep = NumericPrep(clip_quantiles=(0.0, 0.75)).fit(x)
    out = prep.transform(x)
    assert out.shape == (4, 3)  # one indicator: only column 1 had missing values
    assert list(out[:, 2]) == [0, 1, 0, 0]
    assert prep.upper_[0] < 100  # the outlier is clipped to the 75% quantile
    assert np.allclose(out[:, :2].mean(axis=0), 0, atol=1e-6)


def test_numeric_prep_indicator_width_fixed_at_fit() -> None:
    prep = NumericPrep().fit(np.array([[1.0], [2.0]]))
    out = prep.transform(np.array([[np.nan]]))
    assert out.shape == (1, 1)
    assert np.isfinite(out).all()


def test_datetime_parts_match_pandas() -> None:
    stamps = pd.date_range("1969-12-25", "2101-03-01", periods=5000, tz="UTC")
    seconds = ((stamps - pd.Timestamp(0, tz="UTC")).total_seconds()).to_numpy().reshape(-1, 1)
    parts = DatetimeParts().fit(seconds).transform(seconds)
    assert (parts[:, 0] == stamps.hour).all()
    assert (parts[:, 1] == stamps.dayofweek).all()
    assert (parts[:, 2] == stamps.month).all()


def test_datetime_parts_missing_stays_missing() -> None:
    parts = DatetimeParts().fit(np.array([[0.0]])).transform(np.array([[np.nan]]))
    assert np.isnan(parts).all()
