from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ferry.data.builtin import fraud
from ferry.data.load import fingerprint, load_dataset
from ferry.errors import DataError


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return fraud(rows=500, seed=3)


@pytest.mark.parametrize("name", ["data.csv", "data.csv.gz"])
def test_csv_round_trip_parses_datetimes_back(
    tmp_path: Path, small: pd.DataFrame, name: str
) -> None:
    path = tmp_path / name
    small.to_csv(path, index=False)
    loaded = load_dataset(str(path))
    assert loaded["timestamp"].dtype == np.dtype("datetime64[ns]")
    pd.testing.assert_frame_equal(loaded, small)


@pytest.mark.parametrize("name", ["data.parquet", "data.pq"])
def test_parquet_round_trip_keeps_dtypes_and_content(
    tmp_path: Path, small: pd.DataFrame, name: str
) -> None:
    path = tmp_path / name
    small.to_parquet(path)
    loaded = load_dataset(str(path))
    pd.testing.assert_frame_equal(loaded, small)
    assert fingerprint(loaded) == fingerprint(small)


def test_csv_datetimes_with_offsets_become_naive_utc(tmp_path: Path) -> None:
    path = tmp_path / "times.csv"
    path.write_text("when,label\n2024-01-01T10:00:00+02:00,a\n2024-01-02T10:00:00Z,b\n")
    loaded = load_dataset(str(path))
    assert loaded["when"].dtype == np.dtype("datetime64[ns]")
    assert loaded["when"].tolist() == [
        pd.Timestamp("2024-01-01 08:00"),
        pd.Timestamp("2024-01-02 10:00"),
    ]
    assert loaded["label"].tolist() == ["a", "b"]


def test_csv_column_with_some_non_dates_stays_text(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text("when\n2024-01-01\nyesterday\n")
    assert load_dataset(str(path))["when"].tolist() == ["2024-01-01", "yesterday"]


def test_builtin_source_and_row_sampling(tmp_path: Path, small: pd.DataFrame) -> None:
    assert len(load_dataset("builtin:wine")) == 178
    path = tmp_path / "data.parquet"
    small.to_parquet(path)
    sampled = load_dataset(str(path), rows=100, seed=1)
    assert len(sampled) == 100
    assert sampled["timestamp"].is_monotonic_increasing  # file order is kept
    assert sampled.equals(load_dataset(str(path), rows=100, seed=1))


def _write(path: Path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)


def test_missing_file_names_the_path_and_what_was_expected(tmp_path: Path) -> None:
    path = tmp_path / "absent.csv"
    with pytest.raises(DataError, match="not found") as info:
        load_dataset(str(path))
    assert str(path) in str(info.value)
    assert "CSV or Parquet" in str(info.value)


def test_unsupported_extension_lists_the_supported_ones(tmp_path: Path) -> None:
    source = _write(tmp_path / "data.xlsx", b"x")
    with pytest.raises(DataError, match="unsupported") as info:
        load_dataset(source)
    for suffix in [".csv", ".csv.gz", ".parquet", ".pq"]:
        assert suffix in str(info.value)


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("ragged.csv", b"a,b\n1,2\n3,4,5,6\n", ["could not be parsed as CSV", "Expected 2 fields"]),
        ("bad.parquet", b"definitely not parquet", ["could not be parsed as Parquet", "magic"]),
        ("bad.csv.gz", b"not gzip at all", ["could not be parsed as CSV", "gzip"]),
        ("empty.csv", b"", ["empty"]),
        ("empty.parquet", b"", ["empty"]),
        ("blank.csv", b"\n\n", ["no columns"]),
        ("header.csv", b"a,b\n", ["no rows", "'a'"]),
        ("dup.csv", b"a,b,a\n1,2,3\n", ["duplicate column names", "'a'"]),
    ],
)
def test_bad_files_give_a_data_error_saying_why(
    tmp_path: Path, name: str, content: bytes, words: list[str]
) -> None:
    source = _write(tmp_path / name, content)
    with pytest.raises(DataError) as info:
        load_dataset(source)
    message = str(info.value)
    assert all(word in message for word in words), message
    assert "Traceback" not in message


def test_duplicate_parquet_columns_are_named(tmp_path: Path) -> None:
    path = tmp_path / "dup.parquet"
    pq.write_table(pa.table([pa.array([1]), pa.array([2])], names=["x", "x"]), path)
    with pytest.raises(DataError, match=r"duplicate column names: \['x'\]"):
        load_dataset(str(path))


def test_parquet_without_rows_is_refused(tmp_path: Path, small: pd.DataFrame) -> None:
    path = tmp_path / "none.parquet"
    small.head(0).to_parquet(path)
    with pytest.raises(DataError, match="no rows"):
        load_dataset(str(path))


def test_fingerprint_follows_content_not_index(small: pd.DataFrame) -> None:
    print_ = fingerprint(small)
    assert len(print_) == 64
    assert fingerprint(small.copy()) == print_
    assert fingerprint(small.set_axis(range(1, len(small) + 1))) == print_
    changed = small.copy()
    changed.loc[10, "amount"] += 0.01
    assert fingerprint(changed) != print_
    assert fingerprint(small.rename(columns={"amount": "value"})) != print_
    assert fingerprint(small.astype({"txn_count_24h": "float64"})) != print_
