from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ferry.core.signature import MISSING_CATEGORY
from ferry.data.schema import ColumnInfo, feature_columns, infer_schema, infer_task
from ferry.errors import DataError

ROWS = 200


@pytest.fixture(scope="module")
def crafted() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    words = ["the card was used", "at a shop far away", "late at night", "for a large amount"]
    return pd.DataFrame(
        {
            "order_id": np.arange(1000, 1000 + ROWS),
            "reference": [f"REF-{i:06d}" for i in rng.permutation(ROWS)],
            "amount": rng.lognormal(3, 1, ROWS),
            "quantity": rng.integers(1, 5, ROWS),
            "colour": rng.choice(["red", "green", "blue"], ROWS),
            "active": rng.choice([True, False], ROWS),
            "subscribed": rng.choice(["Yes", "no"], ROWS),
            "flag": rng.integers(0, 2, ROWS),
            "created": pd.date_range("2024-01-01", periods=ROWS, freq="h"),
            "signup": [
                f"2023-{m:02d}-{d:02d}"
                for m, d in zip(rng.integers(1, 13, ROWS), rng.integers(1, 29, ROWS), strict=True)
            ],
            "note": [" ".join(rng.choice(words, 3)) + f" #{i}" for i in range(ROWS)],
            "label": rng.choice(["fraud", "ok"], ROWS),
        }
    )


def _kinds(schema: list[ColumnInfo]) -> dict[str, str]:
    return {info.name: info.kind for info in schema}


def test_every_kind_is_inferred(crafted: pd.DataFrame) -> None:
    assert _kinds(infer_schema(crafted, target="label")) == {
        "order_id": "id",
        "reference": "id",
        "amount": "numeric",
        "quantity": "numeric",
        "colour": "categorical",
        "active": "boolean",
        "subscribed": "boolean",
        "flag": "boolean",
        "created": "datetime",
        "signup": "datetime",
        "note": "text",
        "label": "categorical",
    }


def test_column_info_counts_missing_and_unique() -> None:
    frame = pd.DataFrame({"colour": ["red", None, "blue", MISSING_CATEGORY, "red"]})
    (info,) = infer_schema(frame)
    assert info == ColumnInfo("colour", "categorical", str(frame["colour"].dtype), 2, 3)


def test_unique_integers_without_an_id_name_or_range_stay_numeric() -> None:
    frame = pd.DataFrame({"price_cents": np.random.default_rng(0).permutation(10**6)[:ROWS]})
    assert _kinds(infer_schema(frame)) == {"price_cents": "numeric"}


def test_small_frames_are_never_id_like() -> None:
    frame = pd.DataFrame({"user_id": range(10), "city": [f"c{i}" for i in range(10)]})
    assert _kinds(infer_schema(frame)) == {"user_id": "numeric", "city": "categorical"}


def test_the_target_is_never_an_id() -> None:
    frame = pd.DataFrame({"row_id": np.arange(ROWS), "x": np.ones(ROWS)})
    assert _kinds(infer_schema(frame, target="row_id"))["row_id"] == "numeric"


def test_numbers_and_versions_are_not_mistaken_for_dates() -> None:
    frame = pd.DataFrame(
        {"size": ["3", "12", "7"] * 20, "version": ["1.2.3", "2.0.1", "1.0.0"] * 20}
    )
    assert _kinds(infer_schema(frame)) == {"size": "categorical", "version": "categorical"}


def test_feature_columns_leave_out_target_drop_sensitive_id_and_text(crafted: pd.DataFrame) -> None:
    schema = infer_schema(crafted, target="label")
    features = feature_columns(schema, "label", drop=["quantity"], sensitive=["colour"])
    assert features == {
        "numeric": ["amount"],
        "categorical": [],
        "boolean": ["active", "subscribed", "flag"],
        "datetime": ["created", "signup"],
    }


def test_feature_columns_refuse_unknown_names(crafted: pd.DataFrame) -> None:
    schema = infer_schema(crafted)
    with pytest.raises(DataError, match=r"\['colur'\] are not in the data"):
        feature_columns(schema, "label", drop=["colur"], sensitive=[])


@pytest.mark.parametrize(
    ("values", "task"),
    [
        ([0, 1] * 30, "classification"),
        (["a", "b", "c"] * 20, "classification"),
        (list(range(5)) * 12, "classification"),
        (list(np.linspace(0, 1, 60)), "regression"),
        (list(range(60)), "regression"),
    ],
)
def test_infer_task_from_the_target(values: list[object], task: str) -> None:
    frame = pd.DataFrame({"y": values})
    assert infer_task(infer_schema(frame, target="y"), "y") == task
