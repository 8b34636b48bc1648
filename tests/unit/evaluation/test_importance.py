import numpy as np
import pandas as pd
import pytest

from ferry.errors import DataError
from ferry.evaluation.importance import permutation_importance_frame


def _frame(n: int = 400) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "noise": rng.normal(size=n),
            "signal": rng.normal(size=n),
            "kind": pd.Categorical(rng.choice(["u", "v"], n)),
        }
    )
    return frame, frame["signal"] * 3.0


def test_informative_column_ranks_first_and_unused_ones_score_zero() -> None:
    frame, target = _frame()

    def predict_score(f: pd.DataFrame) -> float:
        return -float(np.mean((target.to_numpy()[: len(f)] - 3.0 * f["signal"].to_numpy()) ** 2))

    before = frame.copy()
    importance = permutation_importance_frame(predict_score, frame, ["noise", "signal", "kind"])
    assert next(iter(importance)) == "signal"
    assert importance["signal"] > 1.0
    assert importance["noise"] == 0.0 and importance["kind"] == 0.0
    pd.testing.assert_frame_equal(frame, before)  # the caller's frame is untouched


def test_sampling_caps_the_rows_and_shuffling_keeps_dtypes() -> None:
    frame, _ = _frame(1000)
    seen: list[tuple[int, str]] = []

    def predict_score(f: pd.DataFrame) -> float:
        seen.append((len(f), str(f["kind"].dtype)))
        return 0.0

    permutation_importance_frame(predict_score, frame, ["kind"], n_repeats=2, max_rows=100)
    assert seen == [(100, "category")] * 3  # baseline + 2 repeats


def test_unknown_column_is_rejected() -> None:
    frame, _ = _frame(10)
    with pytest.raises(DataError, match="not in the frame"):
        permutation_importance_frame(lambda f: 0.0, frame, ["nope"])
