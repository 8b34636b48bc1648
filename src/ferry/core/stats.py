"""Reference statistics stored in a bundle, and the distances drift monitoring compares them with.

Numeric features keep a histogram at fixed quantile edges of the training data, so a live window
is binned the same way without the training data at hand.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

OTHER = "__other__"


class NumericReference(BaseModel):
    edges: list[float]
    counts: list[int]
    missing_rate: float
    mean: float
    std: float
    min: float
    max: float
    n: int


class CategoricalReference(BaseModel):
    frequencies: dict[str, float]
    missing_rate: float
    n: int


class ReferenceStats(BaseModel):
    numeric: dict[str, NumericReference] = Field(default_factory=dict)
    categorical: dict[str, CategoricalReference] = Field(default_factory=dict)
    prediction: NumericReference | CategoricalReference | None = None


def quantile_edges(values: np.ndarray, bins: int = 10) -> list[float]:
    """Interior edges at the quantiles of ``values``; duplicates from ties are dropped."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return []
    qs = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
    return [float(edge) for edge in np.unique(qs)]


def bin_counts(values: np.ndarray, edges: Sequence[float]) -> list[int]:
    finite = values[np.isfinite(values)]
    index = np.searchsorted(np.asarray(edges, dtype=float), finite, side="right")
    return [int(c) for c in np.bincount(index, minlength=len(edges) + 1)]


def numeric_reference(values: np.ndarray, bins: int = 10) -> NumericReference:
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    edges = quantile_edges(values, bins)
    empty = finite.size == 0
    return NumericReference(
        edges=edges,
        counts=bin_counts(values, edges),
        missing_rate=float(1 - finite.size / max(values.size, 1)),
        mean=0.0 if empty else float(finite.mean()),
        std=0.0 if empty else float(finite.std()),
        min=0.0 if empty else float(finite.min()),
        max=0.0 if empty else float(finite.max()),
        n=int(values.size),
    )


def categorical_reference(
    values: Sequence[object] | np.ndarray, missing: str, top: int = 50
) -> CategoricalReference:
    array = np.asarray(values, dtype=object)
    present = array[array != missing]
    labels, counts = np.unique(present.astype(str), return_counts=True)
    order = np.argsort(-counts)
    total = max(int(counts.sum()), 1)
    frequencies = {str(labels[i]): float(counts[i] / total) for i in order[:top]}
    if len(order) > top:
        frequencies[OTHER] = float(counts[order[top:]].sum() / total)
    return CategoricalReference(
        frequencies=frequencies,
        missing_rate=float(1 - present.size / max(array.size, 1)),
        n=int(array.size),
    )


def psi(
    expected: Sequence[float] | np.ndarray,
    actual: Sequence[float] | np.ndarray,
    floor: float = 1e-4,
) -> float:
    """Population stability index between two histograms over the same bins."""
    e = np.maximum(np.asarray(expected, dtype=float), 0)
    a = np.maximum(np.asarray(actual, dtype=float), 0)
    e = np.maximum(e / max(e.sum(), 1e-12), floor)
    a = np.maximum(a / max(a.sum(), 1e-12), floor)
    return float(np.sum((a - e) * np.log(a / e)))


def chi_square(expected_freq: Sequence[float], observed: Sequence[int]) -> tuple[float, int]:
    """Chi-square statistic and degrees of freedom of observed counts against frequencies."""
    obs = np.asarray(observed, dtype=float)
    exp = np.asarray(expected_freq, dtype=float)
    exp = np.maximum(exp / max(exp.sum(), 1e-12), 1e-9) * obs.sum()
    stat = float(np.sum((obs - exp) ** 2 / exp))
    return stat, max(len(obs) - 1, 1)


def ks_binned(ref_counts: Sequence[int], live_counts: Sequence[int]) -> float:
    """Two-sample Kolmogorov-Smirnov distance on binned data (a lower bound of the exact one)."""
    r = np.cumsum(np.asarray(ref_counts, dtype=float))
    lv = np.cumsum(np.asarray(live_counts, dtype=float))
    if r[-1] == 0 or lv[-1] == 0:
        return 0.0
    return float(np.max(np.abs(r / r[-1] - lv / lv[-1])))


def ks_pvalue(distance: float, n_ref: int, n_live: int) -> float:
    """Asymptotic two-sample KS p-value (Kolmogorov distribution)."""
    if n_ref == 0 or n_live == 0:
        return 1.0
    en = math.sqrt(n_ref * n_live / (n_ref + n_live))
    lam = (en + 0.12 + 0.11 / en) * distance
    total = sum(2 * (-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return float(min(max(total, 0.0), 1.0))


def _gamma_series(a: float, x: float) -> float:
    """Regularized lower incomplete gamma P(a, x) by its power series (x < a + 1)."""
    term = total = 1.0 / a
    n = a
    for _ in range(1000):
        n += 1.0
        term *= x / n
        total += term
        if abs(term) < abs(total) * 1e-15:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_fraction(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) by Lentz's continued fraction (x >= a + 1)."""
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def chi2_sf(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X ~ chi-square(dof), without scipy (core stays pure)."""
    if statistic <= 0:
        return 1.0
    a, x = dof / 2.0, statistic / 2.0
    if x < a + 1.0:
        return float(min(max(1.0 - _gamma_series(a, x), 0.0), 1.0))
    return float(min(max(_gamma_fraction(a, x), 0.0), 1.0))


def contingency_chi2(
    reference: Sequence[float] | np.ndarray, live: Sequence[float] | np.ndarray
) -> tuple[float, int]:
    """Two-sample chi-square on two count vectors over the same bins.

    Both samples' sizes enter the expected counts, so the test stays calibrated whether the live
    window is far smaller or far larger than the reference (the pitfall in REFERENCES.md).
    Bins empty in both samples are dropped.
    """
    ref = np.asarray(reference, dtype=float)
    obs = np.asarray(live, dtype=float)
    keep = (ref + obs) > 0
    ref, obs = ref[keep], obs[keep]
    n_ref, n_obs = ref.sum(), obs.sum()
    if len(ref) < 2 or n_ref == 0 or n_obs == 0:
        return 0.0, 1
    total = ref + obs
    expected_ref = total * n_ref / (n_ref + n_obs)
    expected_obs = total * n_obs / (n_ref + n_obs)
    stat = float(
        np.sum((ref - expected_ref) ** 2 / expected_ref)
        + np.sum((obs - expected_obs) ** 2 / expected_obs)
    )
    return stat, len(ref) - 1


def single_call_p99_ms(
    call: Callable[[Any], object], inputs: Sequence[Any], runs: int = 100, rounds: int = 3
) -> float:
    """p99 latency of ``call`` cycling over ``inputs``: the lowest p99 of ``rounds`` rounds,
    since other processes on the machine (a server, a search's fits) only ever add time."""
    for item in inputs[:5]:
        call(item)
    times = np.empty((rounds, runs))
    for r in range(rounds):
        for i in range(runs):
            started = time.perf_counter()
            call(inputs[i % len(inputs)])
            times[r, i] = time.perf_counter() - started
    return float(np.min(np.percentile(times, 99, axis=1)) * 1000)
