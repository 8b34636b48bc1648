import numpy as np
import pytest

from ferry.evaluation import plots


def test_reliability_bins_hold_mean_score_observed_rate_and_count() -> None:
    target = np.array([0, 1, 1, 1, 0])
    score = np.array([0.05, 0.15, 0.95, 0.92, 0.99])
    table = plots.reliability(target, score)
    assert table[:, 2].tolist() == [1, 1, 3]
    assert table[2, 0] == pytest.approx((0.95 + 0.92 + 0.99) / 3)
    assert table[:, 1].tolist() == pytest.approx([0.0, 1.0, 2 / 3])


def test_leaderboard_without_latency_draws_nothing() -> None:
    assert plots.leaderboard_figure([{"score": 0.9, "latency_p99_ms": None}], "roc_auc") is None


def test_png_carries_no_url_metadata() -> None:
    png = plots.to_png(plots.residuals_figure(np.arange(5.0), np.arange(5.0) + 1))
    assert png.startswith(b"\x89PNG")
    assert b"http" not in png
