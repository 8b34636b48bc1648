from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ferry.data.builtin import load_builtin
from ferry.data.quality import QualityReport, check_quality
from ferry.data.schema import infer_schema
from ferry.errors import DataError

ROWS = 600


def _report(frame: pd.DataFrame, target: str | None, task: str | None = None) -> QualityReport:
    return check_quality(frame, target, infer_schema(frame, target=target), task=task)


@pytest.fixture(scope="module")
def labelled() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    label = rng.choice([0, 1], ROWS, p=[0.7, 0.3])
    return pd.DataFrame(
        {
            "x": rng.normal(size=ROWS) + 0.5 * label,
            "colour": rng.choice(["red", "green", "blue"], ROWS),
            "label": label,
        }
    )


def test_clean_data_has_no_warnings_or_errors(labelled: pd.DataFrame) -> None:
    report = _report(labelled, "label")
    assert report.errors() == [] and report.warnings() == []
    assert (report.rows, report.columns) == (ROWS, 3)
    assert report.class_balance == {
        "0": int((labelled["label"] == 0).sum()),
        "1": int(labelled["label"].sum()),
    }


def test_planted_numeric_leak_is_an_error_naming_the_column(labelled: pd.DataFrame) -> None:
    noise = np.random.default_rng(1).normal(0, 0.05, ROWS)
    frame = labelled.assign(refund_amount=labelled["label"] * 100 + noise)
    (leak,) = _report(frame, "label").by_check("leak")
    assert (leak.column, leak.severity) == ("refund_amount", "error")
    assert "data.drop" in leak.detail


def test_planted_categorical_leak_is_found(labelled: pd.DataFrame) -> None:
    status = np.where(labelled["label"] == 1, "chargeback", "settled")
    frame = labelled.assign(status=status)
    assert [issue.column for issue in _report(frame, "label").by_check("leak")] == ["status"]


def test_regression_leak_by_correlation() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(size=ROWS)
    frame = pd.DataFrame(
        {"y": y, "y_in_cents": y * 100 + rng.normal(0, 0.5, ROWS), "x": rng.normal(size=ROWS)}
    )
    leaks = _report(frame, "y", task="regression").by_check("leak")
    assert [issue.column for issue in leaks] == ["y_in_cents"]
    assert "correlation" in leaks[0].detail


def test_fraud_has_no_leak_but_imbalance_and_an_id(fraud_frame: pd.DataFrame) -> None:
    report = _report(fraud_frame, "is_fraud")
    assert report.by_check("leak") == []
    (imbalance,) = report.by_check("class_imbalance")
    assert imbalance.severity == "warning" and "%" in imbalance.detail and ":1" in imbalance.detail
    assert [issue.column for issue in report.by_check("id_column")] == ["transaction_id"]
    missing = {issue.column for issue in report.by_check("missing")}
    assert missing == {"country", "device", "customer_age", "distance_from_home_km"}


def test_duplicates_and_constant_columns(labelled: pd.DataFrame) -> None:
    frame = labelled.assign(x_copy=labelled["x"], source="web")
    frame = pd.concat([frame, frame.iloc[:7]], ignore_index=True)
    report = _report(frame, "label")
    (rows,) = report.by_check("duplicate_rows")
    assert rows.count == 7
    (copy,) = report.by_check("duplicate_column")
    assert copy.column == "x_copy" and "'x'" in copy.detail
    (constant,) = report.by_check("constant")
    assert constant.column == "source" and "'web'" in constant.detail


def test_duplicate_rows_ignore_id_columns(labelled: pd.DataFrame) -> None:
    frame = pd.concat([labelled, labelled.iloc[:5]], ignore_index=True)
    frame.insert(0, "record_id", np.arange(len(frame)))
    (rows,) = _report(frame, "label").by_check("duplicate_rows")
    assert rows.count == 5 and "record_id" in rows.detail


def test_missing_target_column_is_an_error_listing_the_columns(labelled: pd.DataFrame) -> None:
    report = _report(labelled, "is_fraud")
    (error,) = report.errors()
    assert error.check == "target_missing"
    assert all(name in error.detail for name in ["x", "colour", "label"])


def test_missing_labels_are_an_error_and_features_only_info(labelled: pd.DataFrame) -> None:
    frame = labelled.astype({"label": "float64"})
    frame.loc[:4, "label"] = np.nan
    frame.loc[:59, "x"] = np.nan
    report = _report(frame, "label", task="classification")
    by_column = {issue.column: issue for issue in report.by_check("missing")}
    assert by_column["label"].severity == "error" and by_column["label"].count == 5
    assert by_column["x"].severity == "info" and "10.0%" in by_column["x"].detail


def test_a_single_class_target_is_an_error(labelled: pd.DataFrame) -> None:
    report = _report(labelled.assign(label=1), "label", task="classification")
    assert [(issue.check, issue.column) for issue in report.errors()] == [("constant", "label")]


def test_builtin_sets_pass_without_errors() -> None:
    for name in ["breast_cancer", "wine", "diabetes"]:
        assert _report(load_builtin(name), "target").errors() == [], name


def test_an_unknown_task_is_refused(labelled: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="received 'binary'"):
        _report(labelled, "label", task="binary")
