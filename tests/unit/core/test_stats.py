import numpy as np

from ferry.core.stats import (
    bin_counts,
    categorical_reference,
    ks_binned,
    ks_pvalue,
    numeric_reference,
    psi,
)


def test_numeric_reference_bins_at_deciles() -> None:
    values = np.arange(1000, dtype=float)
    values[:10] = np.nan
    ref = numeric_reference(values)
    assert len(ref.edges) == 9
    assert sum(ref.counts) == 990
    assert max(ref.counts) - min(ref.counts) <= 2
    assert abs(ref.missing_rate - 0.01) < 1e-9


def test_categorical_reference_frequencies() -> None:
    ref = categorical_reference(["a", "a", "b", "__missing__"], "__missing__")
    assert ref.frequencies == {"a": 2 / 3, "b": 1 / 3}
    assert ref.missing_rate == 0.25


def test_psi_and_ks_detect_shift() -> None:
    rng = np.random.default_rng(0)
    ref = numeric_reference(rng.normal(size=5000))
    same = bin_counts(rng.normal(size=5000), ref.edges)
    shifted = bin_counts(rng.normal(1.0, size=5000), ref.edges)
    assert psi(ref.counts, same) < 0.02 < 0.25 < psi(ref.counts, shifted)
    assert ks_pvalue(ks_binned(ref.counts, same), 5000, 5000) > 0.01
    assert ks_pvalue(ks_binned(ref.counts, shifted), 5000, 5000) < 1e-6
