import numpy as np
import pytest

from ferry.errors import SpecError
from ferry.evaluation.threshold import choose_threshold

Y = np.array([0, 0, 1, 1, 0, 1])
SCORE = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.9])


def _f1_at(t: float) -> float:
    pred = t <= SCORE
    tp = np.sum(pred & (Y == 1))
    return 2 * tp / (pred.sum() + Y.sum())


def _recall_at(t: float) -> float:
    return float(np.sum((t <= SCORE) & (Y == 1)) / Y.sum())


def test_f1_strategy_picks_the_best_f1_threshold() -> None:
    chosen = choose_threshold(Y, SCORE)
    # Brute force: at 0.8 the two top positives are caught, no false positive: F1 0.8.
    assert chosen == 0.8
    assert _f1_at(chosen) == pytest.approx(max(_f1_at(t) for t in SCORE))


@pytest.mark.parametrize(("target", "expected"), [(1.0, 0.35), (0.6, 0.8), (0.3, 0.9)])
def test_recall_strategy_takes_the_highest_threshold_meeting_the_target(
    target: float, expected: float
) -> None:
    chosen = choose_threshold(Y, SCORE, "recall", recall_target=target)
    assert chosen == expected
    assert _recall_at(chosen) >= target
    higher = SCORE[chosen < SCORE]
    assert all(_recall_at(t) < target for t in higher)


@pytest.mark.parametrize(
    ("y", "score"),
    [
        (np.array([1, 1, 1]), np.array([0.2, 0.3, 0.9])),  # one class only
        (np.array([], dtype=int), np.array([])),  # empty
        (np.array([0, 1]), np.array([np.nan, np.nan])),  # no finite score
        (np.array([0, 1, 1]), np.array([0.2, 0.3])),  # mismatched lengths
    ],
)
def test_degenerate_inputs_fall_back_to_one_half(y: np.ndarray, score: np.ndarray) -> None:
    assert choose_threshold(y, score) == 0.5


def test_non_finite_scores_are_ignored() -> None:
    y = np.append(Y, 1)
    score = np.append(SCORE, np.nan)
    assert choose_threshold(y, score) == 0.8


def test_bad_strategy_or_missing_target_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="recall_target"):
        choose_threshold(Y, SCORE, "recall")
    with pytest.raises(SpecError, match="unknown 'youden'"):
        choose_threshold(Y, SCORE, "youden")
