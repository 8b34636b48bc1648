"""The paired bootstrap that decides whether a challenger beats the champion."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from ferry.retraining.compare import Scored, binary_auc, paired_bootstrap

LABELS = ["0", "1"]


def _proba(score: np.ndarray) -> np.ndarray:
    score = np.clip(score, 0, 1)
    return np.column_stack([1 - score, score])


def _data(seed: int = 0, rows: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = (rng.random(rows) < 0.1).astype(np.int64)
    return truth, rng.normal(size=rows)


def test_auc_matches_scikit_learn_with_ties() -> None:
    truth, noise = _data()
    score = np.round(truth * 0.5 + noise, 1)  # many ties
    assert abs(binary_auc(truth, score) - roc_auc_score(truth, score)) < 1e-12


def test_a_clearly_better_challenger_has_an_interval_above_zero() -> None:
    truth, noise = _data()
    champion = _proba(0.5 + 0.1 * noise + 0.05 * truth)
    challenger = _proba(0.5 + 0.1 * noise + 0.2 * truth)
    result = paired_bootstrap(
        "recent", "roc_auc", truth, Scored(champion), Scored(challenger), LABELS
    )
    assert result.delta > 0 and result.ci_low > 0
    assert result.ci_low <= result.delta <= result.ci_high


def test_the_same_model_twice_has_an_interval_around_zero() -> None:
    truth, noise = _data(1)
    model = _proba(0.5 + 0.1 * noise + 0.1 * truth)
    result = paired_bootstrap("test", "roc_auc", truth, Scored(model), Scored(model), LABELS)
    assert result.delta == 0 and result.ci_low == 0 and result.ci_high == 0


def test_a_worse_challenger_has_a_negative_difference() -> None:
    truth, noise = _data(2)
    champion = _proba(0.5 + 0.1 * noise + 0.2 * truth)
    challenger = _proba(0.5 + 0.1 * noise + 0.02 * truth)
    result = paired_bootstrap(
        "recent", "roc_auc", truth, Scored(champion), Scored(challenger), LABELS
    )
    assert result.delta < 0 and result.ci_high < 0


def test_lower_is_better_metrics_are_oriented_so_positive_means_better() -> None:
    rng = np.random.default_rng(3)
    truth = rng.normal(size=2000)
    champion = truth + rng.normal(scale=1.0, size=2000)
    challenger = truth + rng.normal(scale=0.3, size=2000)
    result = paired_bootstrap("recent", "rmse", truth, Scored(champion), Scored(challenger), None)
    assert result.challenger < result.champion and result.delta > 0 and result.ci_low > 0


def test_threshold_metrics_judge_each_model_at_its_own_threshold() -> None:
    truth = np.asarray([0, 0, 1, 1] * 50)
    score = np.asarray([0.1, 0.2, 0.3, 0.4] * 50)
    # At 0.5 nothing is positive (f1 0); at 0.25 every positive is found and no negative.
    low = paired_bootstrap(
        "t", "f1", truth, Scored(_proba(score), 0.5), Scored(_proba(score), 0.25), LABELS, draws=100
    )
    assert low.champion == 0.0 and low.challenger == 1.0
