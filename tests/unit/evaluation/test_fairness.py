import math

import numpy as np
import pandas as pd
import pytest

from ferry.errors import DataError
from ferry.evaluation.fairness import fairness_report, max_gap

# Group A: truth 1 1 0 0, decisions 1 0 0 0 -> selection .25, TPR .5, FPR 0.
# Group B: truth 1 0 0 0, decisions 1 1 0 0 -> selection .5, TPR 1, FPR 1/3.
TRUTH = np.array([1, 1, 0, 0, 1, 0, 0, 0])
PRED = np.array([1, 0, 0, 0, 1, 1, 0, 0])
GROUPS = pd.DataFrame({"sex": ["A"] * 4 + ["B"] * 4}, index=range(100, 108))


def test_per_group_rates_and_gaps() -> None:
    report = fairness_report(TRUTH, PRED, GROUPS)
    a, b = report["sex"]["groups"]["A"], report["sex"]["groups"]["B"]
    assert a == pytest.approx(
        {"n": 4, "selection_rate": 0.25, "tpr": 0.5, "fpr": 0.0, "accuracy": 0.75, "precision": 1}
    )
    assert b == pytest.approx(
        {
            "n": 4,
            "selection_rate": 0.5,
            "tpr": 1.0,
            "fpr": 1 / 3,
            "accuracy": 0.75,
            "precision": 0.5,
        }
    )
    assert report["sex"]["demographic_parity_difference"] == pytest.approx(0.25)
    # TPR gap .5 beats FPR gap 1/3.
    assert report["sex"]["equalized_odds_difference"] == pytest.approx(0.5)


def test_missing_values_form_their_own_group() -> None:
    groups = pd.DataFrame({"region": ["n", "n", None, np.nan, "s", "s", "s", "s"]})
    report = fairness_report(TRUTH, PRED, groups)
    assert set(report["region"]["groups"]) == {"n", "s", "missing"}
    assert report["region"]["groups"]["missing"]["n"] == 2


def test_undefined_rates_are_left_out_of_the_gaps() -> None:
    # Group C has no positives: its TPR is undefined and must not count as 0.
    truth = np.array([1, 0, 1, 0, 0, 0])
    pred = np.array([1, 0, 0, 0, 1, 0])
    groups = pd.DataFrame({"g": ["A", "A", "B", "B", "C", "C"]})
    report = fairness_report(truth, pred, groups)
    assert math.isnan(report["g"]["groups"]["C"]["tpr"])
    tpr_gap = 1.0 - 0.0  # A: 1, B: 0
    assert report["g"]["equalized_odds_difference"] == pytest.approx(tpr_gap)


def test_max_gap_takes_the_largest_difference_of_any_column() -> None:
    groups = GROUPS.assign(age=["y", "o"] * 4)
    report = fairness_report(TRUTH, PRED, groups)
    expected = max(
        report[c][k]
        for c in ("sex", "age")
        for k in ("demographic_parity_difference", "equalized_odds_difference")
    )
    assert max_gap(report) == pytest.approx(expected)
    assert math.isnan(max_gap({}))


def test_lengths_must_agree() -> None:
    with pytest.raises(DataError, match="one sensitive row per prediction"):
        fairness_report(TRUTH, PRED, GROUPS.iloc[:3])
