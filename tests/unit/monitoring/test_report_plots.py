"""Reference vs live shares on the reference's own bins, and figures that carry no URL."""

import numpy as np
import pytest

from ferry.core.stats import categorical_reference, numeric_reference
from ferry.monitoring import report_plots as plots


def test_numeric_shares_use_the_reference_edges_and_a_missing_bin() -> None:
    ref = numeric_reference(np.arange(100, dtype=float), bins=4)  # edges 24.75, 49.5, 74.25
    live = np.array([0.0, 30.0, 30.0, 99.0, np.nan])
    shares = plots.numeric_shares(ref, live)
    assert shares.labels == ["< 24.8", "[24.8, 49.5)", "[49.5, 74.2)", "≥ 74.2", "missing"]
    assert shares.reference.tolist() == pytest.approx([0.25, 0.25, 0.25, 0.25, 0.0])
    assert shares.live.tolist() == pytest.approx([0.2, 0.4, 0.0, 0.2, 0.2])


def test_bins_empty_on_both_sides_are_dropped() -> None:
    ref = numeric_reference(np.array([0.0] * 60 + [1.0] * 40))  # ties: one edge at 0 and at 1
    shares = plots.numeric_shares(ref, np.array([0.0, 1.0, 1.0]))
    assert "missing" not in shares.labels and len(shares.labels) == 2
    assert shares.live.tolist() == pytest.approx([1 / 3, 2 / 3])


def test_categorical_shares_name_a_flooding_new_category_and_pool_the_rest() -> None:
    names = [f"c{i:02d}" for i in range(20)]
    ref = categorical_reference(np.repeat(names, 5).tolist() + ["__missing__"] * 25, "__missing__")
    live = np.array(["brand-new"] * 50 + ["c00"] * 30 + ["c19"] * 10 + ["__missing__"] * 10)
    shares = plots.categorical_shares(ref, live)
    assert shares.labels[0] == "brand-new" and len(shares.labels) == plots.TOP_CATEGORIES + 2
    assert shares.labels[-2:] == ["other", "missing"]
    assert shares.reference.sum() == pytest.approx(1.0) and shares.live.sum() == pytest.approx(1.0)
    assert shares.reference[-1] == pytest.approx(0.2) and shares.live[-1] == pytest.approx(0.1)
    assert shares.live[shares.labels.index("c00")] == pytest.approx(0.3)


def test_class_indices_are_shown_by_name() -> None:
    ref = categorical_reference(np.array(["0", "1", "1", "2"]), "__missing__")
    shares = plots.categorical_shares(
        ref, np.array(["1", "2"]), {"0": "cat", "1": "dog", "2": "eel"}
    )
    assert shares.labels == ["dog", "eel", "cat"]  # by the larger share: eel is half the live rows


def test_figures_render_to_png_without_urls() -> None:
    ref = numeric_reference(np.random.default_rng(0).normal(size=500))
    live = np.random.default_rng(1).normal(0.5, size=300)
    figures = [
        plots.distribution_figure("x", ref, live, drifted=True),
        plots.drift_time_figure([1.7e9], [0.5], [True]),  # one window: the axis still has a span
        plots.quality_time_figure([1.7e9, 1.7e9 + 600], {"f1": [0.5, 0.4]}, {"f1": 0.6}),
    ]
    for figure in figures:
        png = plots.to_png(figure)
        assert png.startswith(b"\x89PNG") and b"http" not in png
