import math
import warnings

import numpy as np
import pytest

from ferry.errors import DataError, SpecError
from ferry.evaluation.metrics import classification_metrics, regression_metrics, score

LABELS = ["a", "b"]
Y = np.array(["a", "b", "b", "a", "b"])
POSITIVE = np.array([0.1, 0.8, 0.4, 0.7, 0.9])
PROBA = np.column_stack([1 - POSITIVE, POSITIVE])


def test_binary_metrics_match_hand_computed_values() -> None:
    m = classification_metrics(Y, PROBA, LABELS)
    # At 0.5: predictions a b a b b -> tp 2, fp 1, fn 1, tn 1.
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # Positive scores .8 .4 .9 against negatives .1 .7: 5 of 6 pairs ordered right.
    assert m["roc_auc"] == pytest.approx(5 / 6)
    # Ranked: + + - + -  -> precision at each positive 1, 1, 3/4.
    assert m["pr_auc"] == pytest.approx((1 + 1 + 0.75) / 3)
    assert m["brier"] == pytest.approx((0.01 + 0.04 + 0.36 + 0.49 + 0.01) / 5)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4, 0.3, 0.9])))


def test_threshold_moves_the_decisions() -> None:
    m = classification_metrics(Y, PROBA, LABELS, threshold=0.35)
    # At 0.35 every positive is caught and one negative (0.7) is flagged.
    assert m["recall"] == 1.0
    assert m["precision"] == pytest.approx(3 / 4)


def test_one_dimensional_binary_score_is_the_positive_probability() -> None:
    assert classification_metrics(Y, POSITIVE, LABELS) == classification_metrics(Y, PROBA, LABELS)


def test_absent_class_gives_nan_not_an_error_or_warning() -> None:
    y = np.array(["a", "a", "a"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics(y, PROBA[:3], LABELS)
    assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"]) and math.isnan(m["recall"])
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["precision"] == 0.0  # one negative was flagged positive


def test_no_positive_predictions_leaves_precision_undefined() -> None:
    m = classification_metrics(Y, PROBA, LABELS, threshold=0.95)
    assert math.isnan(m["precision"])
    assert m["recall"] == 0.0 and m["f1"] == 0.0


MULTI_LABELS = ["x", "y", "z"]
MULTI_Y = np.array(["x", "y", "z", "x"])
MULTI_PROBA = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])


def test_multiclass_macro_metrics() -> None:
    m = classification_metrics(MULTI_Y, MULTI_PROBA, MULTI_LABELS)
    # Predictions x y y x: class x P1 R1, y P.5 R1, z never predicted (P0 R0).
    assert m["accuracy"] == pytest.approx(3 / 4)
    assert m["precision"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["recall"] == pytest.approx((1 + 1 + 0) / 3)
    assert m["f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    assert "brier" not in m
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.7, 0.8, 0.3, 0.6])))


def test_multiclass_with_an_absent_class_averages_the_present_ones() -> None:
    y = np.array(["x", "y", "x", "y"])
    proba = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1]])
    m = classification_metrics(y, proba, MULTI_LABELS)
    assert m["roc_auc"] == 1.0 and m["pr_auc"] == 1.0
    assert m["balanced_accuracy"] == 1.0


def test_unknown_labels_and_bad_shapes_are_rejected() -> None:
    with pytest.raises(DataError, match="not among the model's classes"):
        classification_metrics(np.array(["a", "q", "b", "a", "b"]), PROBA, LABELS)
    with pytest.raises(DataError, match="expected \\(5, 3\\)"):
        classification_metrics(Y, PROBA, ["a", "b", "c"])
    with pytest.raises(DataError, match="empty"):
        classification_metrics(np.array([], dtype=str), np.zeros((0, 2)), LABELS)


def test_regression_metrics() -> None:
    m = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert m == pytest.approx({"rmse": math.sqrt(1 / 3), "mae": 1 / 3, "r2": 0.5})
    assert math.isnan(regression_metrics(np.ones(3), np.array([1.0, 2.0, 3.0]))["r2"])
    with pytest.raises(DataError):
        regression_metrics(np.ones(3), np.ones(2))


def test_score_computes_one_metric() -> None:
    assert score("roc_auc", Y, PROBA, LABELS) == pytest.approx(5 / 6)
    assert score("f1", MULTI_Y, MULTI_PROBA, MULTI_LABELS) == pytest.approx(5 / 9)
    assert score("mae", np.array([1.0, 2.0]), np.array([2.0, 2.0])) == 0.5
    with pytest.raises(SpecError, match="unknown metric 'auc'"):
        score("auc", Y, PROBA, LABELS)
    with pytest.raises(DataError, match="labels"):
        score("accuracy", Y, PROBA)
