"""Column conversions shared by training and by retraining's scoring of logged rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ferry.training.features import as_bool, epoch_seconds


def test_as_bool_reads_bools_words_and_logged_numbers_alike() -> None:
    expected = np.asarray([1, 0, np.nan], dtype=np.float32)
    for values in (
        pd.Series([True, False, None], dtype=object),
        pd.Series(["yes", "no", None]),
        pd.Series([1.0, 0.0, np.nan]),  # the prediction log's float32 0/1
        pd.Series([1, 0, None], dtype="Int64"),
    ):
        np.testing.assert_array_equal(as_bool(values), expected)


def test_epoch_seconds_keeps_logged_epochs_and_converts_timestamps() -> None:
    stamps = pd.Series(pd.to_datetime(["2024-03-01T02:00:00Z", None], utc=True))
    seconds = epoch_seconds(stamps)
    np.testing.assert_array_equal(seconds, [1709258400.0, np.nan])
    np.testing.assert_array_equal(epoch_seconds(pd.Series(seconds)), seconds)
