from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pandas.api import types
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from ferry.data.builtin import fraud
from ferry.errors import DataError

COLUMNS = [
    "transaction_id", "timestamp", "amount", "merchant_category", "country", "card_present",
    "customer_age", "account_age_days", "distance_from_home_km", "txn_count_24h", "device",
    "customer_segment", "is_fraud",
]  # fmt: skip
CATEGORICAL = ["merchant_category", "country", "device", "customer_segment"]


def test_same_seed_gives_the_same_frame_and_another_seed_does_not() -> None:
    pd.testing.assert_frame_equal(fraud(rows=2_000, seed=7), fraud(rows=2_000, seed=7))
    assert not fraud(rows=2_000, seed=7).equals(fraud(rows=2_000, seed=8))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fraud_rate_is_about_two_percent(seed: int) -> None:
    rate = fraud(rows=20_000, seed=seed)["is_fraud"].mean()
    assert 0.01 <= rate <= 0.03


def test_columns_and_dtypes(fraud_frame: pd.DataFrame) -> None:
    frame = fraud_frame
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 20_000
    assert frame["timestamp"].dtype == np.dtype("datetime64[ns]")
    assert frame["card_present"].dtype == np.dtype(bool)
    assert frame["is_fraud"].dtype == np.dtype(np.int64)
    assert set(frame["is_fraud"].unique()) == {0, 1}
    assert types.is_integer_dtype(frame["txn_count_24h"])
    for name in ["amount", "customer_age", "account_age_days", "distance_from_home_km"]:
        assert frame[name].dtype == np.dtype(np.float64), name
    for name in [*CATEGORICAL, "transaction_id"]:
        assert types.is_string_dtype(frame[name]), name


def test_ids_are_unique_and_categories_realistic(fraud_frame: pd.DataFrame) -> None:
    frame = fraud_frame
    assert frame["transaction_id"].is_unique
    assert 8 <= frame["merchant_category"].nunique() <= 12
    assert frame["merchant_category"].value_counts(normalize=True).min() < 0.02  # rare ones
    assert 6 <= frame["country"].nunique() <= 10
    assert set(frame["customer_segment"].unique()) == {"A", "B"}
    assert {"mobile", "desktop", "pos"} <= set(frame["device"].dropna().unique())
    for name in ["country", "device", "customer_age", "distance_from_home_km"]:
        assert 0 < frame[name].isna().mean() < 0.15, name


def test_time_spans_about_ninety_days_in_order_with_quiet_nights(fraud_frame: pd.DataFrame) -> None:
    times = fraud_frame["timestamp"]
    assert times.is_monotonic_increasing
    assert 85 <= (times.max() - times.min()).days <= 90
    hours = times.dt.hour
    assert (hours < 6).mean() < (hours.between(12, 17)).mean() / 3


def test_amount_is_heavy_tailed(fraud_frame: pd.DataFrame) -> None:
    amount = fraud_frame["amount"]
    assert (amount > 0).all()
    assert amount.max() > 50 * amount.median()


def test_shift_moves_amounts_distances_and_channels(fraud_frame: pd.DataFrame) -> None:
    shifted = fraud(rows=20_000, seed=0, shift=1.0)
    base = fraud_frame
    assert shifted["amount"].median() > 2 * base["amount"].median()
    assert shifted["distance_from_home_km"].median() > 2 * base["distance_from_home_km"].median()
    assert shifted["card_present"].mean() < base["card_present"].mean()


def test_fraud_is_learnable_but_not_trivially(fraud_frame: pd.DataFrame) -> None:
    frame = fraud_frame.drop(columns=["transaction_id"])
    features = frame.drop(columns=["is_fraud", "timestamp"]).assign(
        hour=frame["timestamp"].dt.hour,
        **{name: frame[name].astype("category") for name in CATEGORICAL},
    )
    cut = 14_000
    model = HistGradientBoostingClassifier(max_iter=100, categorical_features="from_dtype")
    model.fit(features[:cut], frame["is_fraud"][:cut])
    auc = roc_auc_score(frame["is_fraud"][cut:], model.predict_proba(features[cut:])[:, 1])
    assert 0.8 <= auc <= 0.97


@pytest.mark.parametrize("rows", [0, -5, 2.5, True])
def test_bad_row_count_is_a_data_error(rows: object) -> None:
    with pytest.raises(DataError, match="positive whole number"):
        fraud(rows=rows)  # type: ignore[arg-type]
