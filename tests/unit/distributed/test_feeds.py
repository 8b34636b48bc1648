"""Arrow columns to graph feeds: the same values the lab's ``model_frame`` gives the graph."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ferry.core.signature import MISSING_CATEGORY, InputSpec
from ferry.distributed.feeds import TRUE_WORDS, column_feed
from ferry.errors import SignatureError
from ferry.training import features
from ferry.training.features import FeatureLayout, epoch_seconds, model_frame


def _spec(kind: str, nullable: bool = True) -> InputSpec:
    dtype = {"categorical": "string", "datetime": "float64"}.get(kind, "float32")
    return InputSpec(name="x", dtype=dtype, kind=kind, nullable=nullable)  # type: ignore[arg-type]


def _lab(kind: str, values: list[object]) -> np.ndarray:
    """What training feeds the graph for this column (via pandas, as the lab reads files)."""
    frame = pd.DataFrame({"x": pd.Series(values, dtype=object if kind != "numeric" else None)})
    layout = FeatureLayout(**{kind: ["x"]})  # type: ignore[arg-type]
    return model_frame(frame, layout)["x"].to_numpy().reshape(-1, 1)


def test_the_true_words_are_the_labs() -> None:
    assert TRUE_WORDS == features.TRUE_WORDS


@pytest.mark.parametrize(
    "column",
    [
        pa.array(["a", None, "", "b", "a"]),
        pa.array(["a", None, "", "b", "a"], pa.large_string()),
        pa.array(["a", None, "", "b", "a"]).dictionary_encode(),
    ],
)
def test_categories_spell_missing_as_the_lab_does(column: pa.Array) -> None:
    fed = column_feed(_spec("categorical"), column)
    assert fed.shape == (5, 1) and fed.dtype == object
    assert fed.ravel().tolist() == ["a", MISSING_CATEGORY, MISSING_CATEGORY, "b", "a"]
    assert fed.ravel().tolist() == _lab("categorical", column.to_pylist()).ravel().tolist()


def test_numbers_held_as_categories_are_spelled_like_python() -> None:
    fed = column_feed(_spec("categorical"), pa.array([3, None, 7]))
    assert fed.ravel().tolist() == ["3.0", MISSING_CATEGORY, "7.0"]  # pandas: int + null -> float


@pytest.mark.parametrize(
    "column",
    [
        pa.array([1, None, 3, 2**40], pa.int64()),
        pa.array([1.5, None, float("nan"), 1e30]),
        pa.array([True, None, False]),
    ],
)
def test_numbers_are_float32_with_nan_for_missing(column: pa.Array) -> None:
    fed = column_feed(_spec("numeric"), column)
    expected = np.asarray(
        [np.nan if v is None else float(v) for v in column.to_pylist()], dtype=np.float32
    )
    assert fed.dtype == np.float32 and fed.shape == (len(column), 1)
    np.testing.assert_array_equal(fed.ravel(), expected)


def test_boolean_words_read_as_the_lab_reads_them() -> None:
    words = ["Yes", " true ", "no", None, "T", "0", "1"]
    fed = column_feed(_spec("boolean"), pa.array(words))
    np.testing.assert_array_equal(fed, _lab("boolean", words))
    np.testing.assert_array_equal(
        column_feed(_spec("boolean"), pa.array([True, None, False])).ravel(),
        np.asarray([1.0, np.nan, 0.0], dtype=np.float32),
    )


STAMPS = [dt.datetime(2024, 3, 1, 12, 30, 15, 250000), None, dt.datetime(1999, 12, 31, 23, 59, 59)]


@pytest.mark.parametrize(
    "column",
    [
        pa.array(STAMPS, pa.timestamp("ns")),
        pa.array(STAMPS, pa.timestamp("ms")),
        pa.array(STAMPS, pa.timestamp("us", tz="UTC")),
        pa.array(STAMPS, pa.timestamp("s", tz="Europe/Paris")),
        pa.array([s.date() if s else None for s in STAMPS], pa.date32()),
    ],
)
def test_datetimes_are_epoch_seconds_like_the_labs(column: pa.Array) -> None:
    fed = column_feed(_spec("datetime"), column)
    expected = epoch_seconds(column.to_pandas())
    assert fed.dtype == np.float64
    np.testing.assert_array_equal(fed.ravel(), expected)


@pytest.mark.parametrize(
    "texts",
    [
        ["2024-03-01 12:30:15.25", None, "1999-12-31T23:59:59"],
        ["2024-03-01T12:30:15Z", None, "1999-12-31T23:59:59+00:00"],
        ["2024-03-01T12:30:15+02:00", "2024-03-01 12:30:00.123456789", None],
    ],
)
def test_datetime_text_is_parsed_like_the_labs(texts: list[str | None]) -> None:
    fed = column_feed(_spec("datetime"), pa.array(texts))
    # As the lab reads ISO 8601 text from a CSV file (data.load), then feeds it.
    stamps = pd.to_datetime(pd.Series(texts), format="ISO8601", utc=True)
    np.testing.assert_array_equal(fed.ravel(), epoch_seconds(stamps.dt.tz_localize(None)))


def test_datetime_text_that_is_not_iso_is_refused() -> None:
    with pytest.raises(SignatureError, match=r"not an ISO 8601 datetime, such as \['March 1"):
        column_feed(_spec("datetime"), pa.array(["2024-03-01T12:30:15+02:00", "March 1, 2024"]))


def test_missing_values_where_training_had_none_name_the_row() -> None:
    with pytest.raises(SignatureError, match=r"'x' is empty .* at data row 1003 \(2 such rows"):
        column_feed(_spec("numeric", nullable=False), pa.array([1.0, None, 2.0, None]), 1001)


def test_text_in_a_numeric_column_is_refused_with_examples() -> None:
    with pytest.raises(SignatureError, match=r"'x' holds text such as \['lots'\].*numbers"):
        column_feed(_spec("numeric"), pa.array(["1.5", "lots", None]))
    fed = column_feed(_spec("numeric"), pa.array(["1.5", None, "2"]))
    np.testing.assert_array_equal(fed.ravel(), np.asarray([1.5, np.nan, 2.0], np.float32))
