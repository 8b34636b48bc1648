from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ferry.data.split import Split, split_frame
from ferry.errors import DataError


def _split(frame: pd.DataFrame, target: str = "is_fraud", **options: object) -> Split:
    arguments: dict[str, object] = {"task": "classification", "test_size": 0.2, "valid_size": 0.1}
    arguments.update({"time_column": None, "seed": 0}, **options)
    return split_frame(frame, target, **arguments)  # type: ignore[arg-type]


def test_sizes_cover_every_row_once(fraud_frame: pd.DataFrame) -> None:
    split = _split(fraud_frame)
    assert (len(split.train), len(split.valid), len(split.test)) == (14_000, 2_000, 4_000)
    ids = pd.concat([split.train, split.valid, split.test])["transaction_id"]
    assert ids.is_unique and len(ids) == len(fraud_frame)
    assert list(split.test.index) == list(range(4_000))


def test_classification_is_stratified(fraud_frame: pd.DataFrame) -> None:
    split = _split(fraud_frame)
    rate = fraud_frame["is_fraud"].mean()
    for part in (split.train, split.valid, split.test):
        assert abs(part["is_fraud"].mean() - rate) < 0.001


def test_same_seed_same_split_other_seed_other_split(fraud_frame: pd.DataFrame) -> None:
    first, again, other = _split(fraud_frame), _split(fraud_frame), _split(fraud_frame, seed=1)
    assert first.test.equals(again.test)
    assert not first.test.equals(other.test)


def test_time_split_puts_the_latest_rows_in_test(fraud_frame: pd.DataFrame) -> None:
    shuffled = fraud_frame.sample(frac=1.0, random_state=3)
    split = _split(shuffled, time_column="timestamp")
    assert split.train["timestamp"].max() <= split.valid["timestamp"].min()
    assert split.valid["timestamp"].max() <= split.test["timestamp"].min()
    assert split.test["timestamp"].is_monotonic_increasing
    assert len(split.test) == 4_000


def test_zero_valid_size_gives_an_empty_frame_with_the_columns(fraud_frame: pd.DataFrame) -> None:
    split = _split(fraud_frame, task="regression", target="amount", valid_size=0.0)
    assert split.valid.empty and list(split.valid.columns) == list(fraud_frame.columns)
    assert len(split.train) + len(split.test) == len(fraud_frame)


def test_a_class_too_small_to_stratify_falls_back_to_random() -> None:
    frame = pd.DataFrame({"x": np.arange(50), "y": [0] * 49 + [1]})
    split = _split(frame, target="y")
    assert len(split.train) + len(split.valid) + len(split.test) == 50


def test_a_split_that_would_be_empty_says_how_to_fix_it() -> None:
    frame = pd.DataFrame({"x": [1, 2], "y": [0, 1]})
    with pytest.raises(DataError, match="every part needs at least one") as info:
        _split(frame, target="y")
    assert "smaller split sizes" in str(info.value)


def test_missing_time_column_is_named_with_the_fix(fraud_frame: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="'event_time' is not in the data") as info:
        _split(fraud_frame, time_column="event_time")
    assert "split.time_column" in str(info.value)


@pytest.mark.parametrize(("test_size", "valid_size"), [(0.0, 0.1), (0.6, 0.5), (1.2, 0.0)])
def test_impossible_sizes_are_refused(
    fraud_frame: pd.DataFrame, test_size: float, valid_size: float
) -> None:
    with pytest.raises(DataError, match="split sizes"):
        _split(fraud_frame, test_size=test_size, valid_size=valid_size)
