"""Drift tests keep their false-alarm rate at any window size and catch real shifts quickly."""

import numpy as np
import pytest

from ferry.core.stats import ReferenceStats, categorical_reference, chi2_sf, numeric_reference
from ferry.monitoring.drift import DriftConfig, DriftDetector, merge_adjacent

CATS = np.array(list("abcdefghij"))
P = np.array([0.3, 0.2, 0.15, 0.1, 0.08, 0.06, 0.05, 0.03, 0.02, 0.01])


def reference(rows: int, seed: int = 0) -> ReferenceStats:
    rng = np.random.default_rng(seed)
    ref = ReferenceStats()
    for i in range(10):
        ref.numeric[f"x{i}"] = numeric_reference(rng.normal(size=rows))
    ref.categorical["c"] = categorical_reference(rng.choice(CATS, rows, p=P), "__missing__")
    return ref


def window(rng: np.random.Generator, rows: int, shift: float = 0.0, shifted: int = 0) -> dict:
    cols = {f"x{i}": rng.normal(shift if i < shifted else 0.0, size=rows) for i in range(10)}
    cols["c"] = rng.choice(CATS, rows, p=P)
    return cols


@pytest.mark.parametrize(("ref_rows", "rows"), [(5000, 50), (5000, 20), (1000, 3000)])
def test_false_alarm_rate_holds_for_any_window_size(ref_rows: int, rows: int) -> None:
    detector = DriftDetector(reference(ref_rows), DriftConfig(window=rows, alpha=0.01))
    rng = np.random.default_rng(1)
    trials = 300
    alarms = sum(detector.test_window(window(rng, rows)).drifted for _ in range(trials))
    # Binomial(300, 0.01): mean 3; 10 or more happens with probability < 0.001.
    assert alarms < 10


def test_half_sigma_shift_on_half_the_features_alarms_within_three_windows() -> None:
    detector = DriftDetector(reference(5000), DriftConfig(window=500, alpha=0.001, k=2, n=3))
    rng = np.random.default_rng(2)
    alarms = [detector.test_window(window(rng, 500, 0.5, 5)).alarm for _ in range(3)]
    assert any(alarms)


def test_drifted_share_counts_features_not_prediction() -> None:
    detector = DriftDetector(reference(5000), DriftConfig(window=1000, alpha=0.001))
    result = detector.test_window(window(np.random.default_rng(3), 1000, 1.0, 5))
    assert 0.4 <= result.drifted_share <= 0.6
    assert {f.feature for f in result.features if f.drifted} <= {f"x{i}" for i in range(5)}


def test_unseen_categories_and_missing_values_count_as_drift() -> None:
    detector = DriftDetector(reference(5000), DriftConfig(window=400, alpha=0.001))
    rng = np.random.default_rng(4)
    cols = window(rng, 400)
    cols["c"] = np.where(rng.random(400) < 0.3, "brand-new", cols["c"])
    cols["x0"][:100] = np.nan
    drifted = {f.feature for f in detector.test_window(cols).features if f.drifted}
    assert drifted == {"c", "x0"}


def test_add_buffers_rows_into_windows() -> None:
    detector = DriftDetector(reference(2000), DriftConfig(window=100))
    rng = np.random.default_rng(5)
    assert detector.add(window(rng, 60)) == []
    windows = detector.add(window(rng, 150))
    assert [w.rows for w in windows] == [100, 100]
    assert detector.buffered == 10


def test_merge_adjacent_reaches_minimum_expectation() -> None:
    ref, live = merge_adjacent(np.full(10, 100.0), np.arange(10.0), 20)
    assert ref.sum() == 1000 and live.sum() == 45
    assert (ref / ref.sum() * 20 >= 5).all()


def test_chi2_sf_matches_known_values() -> None:
    assert chi2_sf(3.841458820694124, 1) == pytest.approx(0.05, rel=1e-9)
    assert chi2_sf(18.307038053275146, 10) == pytest.approx(0.05, rel=1e-9)
    assert chi2_sf(0.0, 4) == 1.0
