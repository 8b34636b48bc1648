"""Live drift: windows of served rows tested against the bundle's reference statistics.

Each feature gets a two-sample chi-square test on the reference bins (numeric: the quantile
bins stored in the bundle, adjacent bins merged until every bin expects at least
``MIN_EXPECTED`` live rows; categorical: known categories, rare ones pooled; both with a
missing-value bin). The test's null distribution accounts for the sizes of both samples, so the
false-alarm rate holds for any window size. Holm's procedure controls the family-wise error
across features, and an alarm needs ``k`` drifted windows among the last ``n``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ferry.core.signature import MISSING_CATEGORY
from ferry.core.stats import (
    OTHER,
    CategoricalReference,
    NumericReference,
    ReferenceStats,
    bin_counts,
    chi2_sf,
    contingency_chi2,
    psi,
)

MIN_EXPECTED = 5.0
PREDICTION = "__prediction__"


@dataclass
class FeatureDrift:
    feature: str
    test: str
    statistic: float
    p_value: float
    psi: float
    bins: int
    drifted: bool = False


@dataclass
class WindowDrift:
    rows: int
    features: list[FeatureDrift]
    drifted: bool
    alarm: bool = False

    @property
    def drifted_share(self) -> float:
        tested = [f for f in self.features if f.feature != PREDICTION]
        return sum(f.drifted for f in tested) / max(len(tested), 1)


@dataclass
class DriftConfig:
    window: int = 500
    alpha: float = 0.001
    k: int = 2
    n: int = 3


def merge_adjacent(ref: np.ndarray, live: np.ndarray, n_live: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge neighbouring bins until each expects MIN_EXPECTED live rows under the reference."""
    share = ref / max(ref.sum(), 1.0)
    merged_ref, merged_live = [], []
    acc_ref = acc_live = acc_share = 0.0
    for r, lv, s in zip(ref, live, share, strict=True):
        acc_ref, acc_live, acc_share = acc_ref + r, acc_live + lv, acc_share + s
        if acc_share * n_live >= MIN_EXPECTED:
            merged_ref.append(acc_ref)
            merged_live.append(acc_live)
            acc_ref = acc_live = acc_share = 0.0
    if acc_ref or acc_live:
        if merged_ref:
            merged_ref[-1] += acc_ref
            merged_live[-1] += acc_live
        else:
            merged_ref, merged_live = [acc_ref], [acc_live]
    return np.asarray(merged_ref), np.asarray(merged_live)


def _numeric_counts(ref: NumericReference, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=float).reshape(-1)
    ref_counts = np.asarray(ref.counts, dtype=float)
    live_counts = np.asarray(bin_counts(values, ref.edges), dtype=float)
    missing_ref = ref.missing_rate * ref.n
    missing_live = float(np.isnan(values).sum())
    return np.append(ref_counts, missing_ref), np.append(live_counts, missing_live)


def _categorical_counts(
    ref: CategoricalReference, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=object).reshape(-1)
    present_ref = ref.n * (1 - ref.missing_rate)
    names = [c for c in ref.frequencies if c != OTHER]
    ref_counts = [ref.frequencies[c] * present_ref for c in names]
    live_counts = [float(np.sum(values == c)) for c in names]
    known = float(sum(live_counts))
    missing_live = float(np.sum(values == MISSING_CATEGORY))
    ref_counts.append(ref.frequencies.get(OTHER, 0.0) * present_ref)
    live_counts.append(len(values) - known - missing_live)  # unseen categories land here
    ref_counts.append(ref.missing_rate * ref.n)
    live_counts.append(missing_live)
    return _pool_rare(np.asarray(ref_counts), np.asarray(live_counts), len(values))


def _pool_rare(ref: np.ndarray, live: np.ndarray, n_live: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-ref)  # common categories first; the tail is pooled by merge_adjacent
    return merge_adjacent(ref[order], live[order], n_live)


def test_feature(
    name: str, ref: NumericReference | CategoricalReference, values: np.ndarray
) -> FeatureDrift:
    if isinstance(ref, NumericReference):
        ref_counts, live_counts = _numeric_counts(ref, values)
        ref_counts, live_counts = merge_adjacent(ref_counts, live_counts, len(values))
    else:
        ref_counts, live_counts = _categorical_counts(ref, values)
    stat, dof = contingency_chi2(ref_counts, live_counts)
    return FeatureDrift(
        name, "chi2", stat, chi2_sf(stat, dof), psi(ref_counts, live_counts), len(ref_counts)
    )


def holm(results: list[FeatureDrift], alpha: float) -> None:
    """Holm-Bonferroni: mark features drifted while their ordered p-values pass."""
    ordered = sorted(results, key=lambda r: r.p_value)
    m = len(ordered)
    for rank, result in enumerate(ordered):
        if result.p_value > alpha / (m - rank):
            break
        result.drifted = True


@dataclass
class DriftDetector:
    reference: ReferenceStats
    config: DriftConfig = field(default_factory=DriftConfig)
    history: deque[bool] = field(default_factory=deque)
    buffer: dict[str, list[np.ndarray]] = field(default_factory=dict)
    buffered: int = 0

    def references(self) -> dict[str, NumericReference | CategoricalReference]:
        refs: dict[str, NumericReference | CategoricalReference] = {
            **self.reference.numeric,
            **self.reference.categorical,
        }
        if self.reference.prediction is not None:
            refs[PREDICTION] = self.reference.prediction
        return refs

    def test_window(self, columns: Mapping[str, np.ndarray]) -> WindowDrift:
        refs = self.references()
        results = [test_feature(n, refs[n], np.asarray(v)) for n, v in columns.items() if n in refs]
        holm(results, self.config.alpha)
        rows = len(next(iter(columns.values()))) if columns else 0
        window = WindowDrift(rows, results, any(r.drifted for r in results))
        self.history.append(window.drifted)
        while len(self.history) > self.config.n:
            self.history.popleft()
        window.alarm = sum(self.history) >= self.config.k
        return window

    def add(self, columns: Mapping[str, np.ndarray]) -> list[WindowDrift]:
        """Buffer served rows; test and return every window that fills up."""
        for name, values in columns.items():
            self.buffer.setdefault(name, []).append(np.asarray(values).reshape(-1))
        self.buffered += len(next(iter(columns.values()))) if columns else 0
        windows = []
        while self.buffered >= self.config.window:
            joined = {n: np.concatenate(parts) for n, parts in self.buffer.items()}
            size = self.config.window
            windows.append(self.test_window({n: v[:size] for n, v in joined.items()}))
            self.buffer = {n: [v[size:]] for n, v in joined.items()}
            self.buffered -= size
        return windows
