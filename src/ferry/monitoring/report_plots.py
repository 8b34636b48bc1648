"""The monitoring report's figures: reference vs live distributions, drift and quality over time.

Drawn with ``matplotlib.figure.Figure`` on the Agg canvas, never through pyplot (no global
figure registry, no GUI backend), and kept apart from ``ferry.evaluation.plots`` so a monitoring
install does not pay for scikit-learn.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from matplotlib import dates
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ferry.core.signature import MISSING_CATEGORY
from ferry.core.stats import OTHER, CategoricalReference, NumericReference, bin_counts

# More named categories than this make the bars unreadable; the rest are pooled as "other".
TOP_CATEGORIES = 15
REFERENCE_COLOUR = "#b8c0cc"
LIVE_COLOUR = "#3b7dd8"
DRIFT_COLOUR = "#c0262d"
_SIZE = (4.6, 3.2)


@dataclass(frozen=True)
class Shares:
    """Reference and live shares of rows over the same named bins."""

    labels: list[str]
    reference: np.ndarray
    live: np.ndarray


def to_png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    # No "Software" text chunk: the report carries no URL, not even inside an image.
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def _short(value: float) -> str:
    return f"{value:.3g}"


def _normalise(counts: np.ndarray) -> np.ndarray:
    return counts / max(float(counts.sum()), 1.0)


def numeric_shares(ref: NumericReference, values: np.ndarray) -> Shares:
    """The reference's quantile bins (plus missing) and the live rows binned on the same edges."""
    values = np.asarray(values, dtype=float)
    edges = ref.edges
    if edges:
        inner = [f"[{_short(a)}, {_short(b)})" for a, b in itertools.pairwise(edges)]
        labels = [f"< {_short(edges[0])}", *inner, f"≥ {_short(edges[-1])}"]
    else:
        labels = ["all values"]
    reference = np.append(np.asarray(ref.counts, dtype=float), ref.missing_rate * ref.n)
    live = np.append(np.asarray(bin_counts(values, edges), dtype=float), np.isnan(values).sum())
    return _shares(labels, reference, live)


def _shares(labels: list[str], reference: np.ndarray, live: np.ndarray) -> Shares:
    # Bins empty on both sides (no missing values, ties at a quantile edge) are only noise.
    reference, live = _normalise(reference), _normalise(live)
    keep = (reference > 0) | (live > 0)
    names = np.asarray([*labels, "missing"], dtype=object)[keep].tolist()
    return Shares(names, reference[keep], live[keep])


def categorical_shares(
    ref: CategoricalReference, values: np.ndarray, names: Mapping[str, str] | None = None
) -> Shares:
    """Top categories by the larger of their two shares (a new category that floods the live
    data is named, not hidden in "other"), then other, then missing."""
    values = np.asarray(values, dtype=object)
    present = values[values != MISSING_CATEGORY].astype(str)
    seen, counts = np.unique(present, return_counts=True)
    live_freq = dict(zip(seen.tolist(), (counts / max(len(values), 1)).tolist(), strict=True))
    kept = 1 - ref.missing_rate
    ref_freq = {c: f * kept for c, f in ref.frequencies.items() if c != OTHER}
    ranked = sorted(
        set(ref_freq) | set(live_freq),
        # Ties break on the reference share, then the name, so the order never depends on
        # set iteration order.
        key=lambda c: (-max(ref_freq.get(c, 0), live_freq.get(c, 0)), -ref_freq.get(c, 0), c),
    )
    top = ranked[:TOP_CATEGORIES]
    reference = [ref_freq.get(c, 0.0) for c in top]
    live = [live_freq.get(c, 0.0) for c in top]
    reference.append(kept - sum(reference))
    live.append(len(present) / max(len(values), 1) - sum(live))
    reference.append(ref.missing_rate)
    live.append(float(np.mean(values == MISSING_CATEGORY)) if len(values) else 0.0)
    labels = [(names or {}).get(c, c) for c in top] + ["other"]
    return _shares(labels, np.clip(reference, 0, None), np.clip(live, 0, None))


def _axes(
    title: str, size: tuple[float, float] = _SIZE, colour: str = "black"
) -> tuple[Figure, Axes]:
    figure = Figure(figsize=size, layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title, fontsize=10, color=colour)
    axes.grid(True, alpha=0.3)
    axes.set_axisbelow(True)
    return figure, axes


def _legend(figure: Figure) -> None:
    # Below the axes: inside them it would hide a bar sooner or later.
    figure.legend(loc="outside lower center", ncols=2, fontsize=7, frameon=False)


def numeric_figure(title: str, shares: Shares, drifted: bool) -> Figure:
    """Reference bars with the live bars drawn narrower inside them, bin by bin."""
    figure, axes = _axes(title, colour=DRIFT_COLOUR if drifted else "black")
    x = np.arange(len(shares.labels))
    axes.bar(x, shares.reference, width=0.8, color=REFERENCE_COLOUR, label="reference")
    axes.bar(
        x, shares.live, width=0.4, color=DRIFT_COLOUR if drifted else LIVE_COLOUR, label="live"
    )
    axes.set_xticks(x, shares.labels, rotation=50, ha="right", fontsize=7)
    axes.set_xlabel("bins: quantiles of the training data", fontsize=7)
    axes.set_ylabel("share of rows", fontsize=8)
    axes.tick_params(axis="y", labelsize=8)
    _legend(figure)
    return figure


def categorical_figure(title: str, shares: Shares, drifted: bool) -> Figure:
    """Side-by-side horizontal bars per category, the most common at the top."""
    height = max(_SIZE[1], 0.32 * len(shares.labels) + 1.0)
    figure, axes = _axes(title, (_SIZE[0], height), DRIFT_COLOUR if drifted else "black")
    y = np.arange(len(shares.labels))[::-1]
    labels = [label if len(label) <= 20 else label[:19] + "…" for label in shares.labels]
    axes.barh(y + 0.2, shares.reference, height=0.4, color=REFERENCE_COLOUR, label="reference")
    live_colour = DRIFT_COLOUR if drifted else LIVE_COLOUR
    axes.barh(y - 0.2, shares.live, height=0.4, color=live_colour, label="live")
    axes.set_yticks(y, labels, fontsize=7)
    axes.set_xlabel("share of rows", fontsize=8)
    axes.tick_params(axis="x", labelsize=8)
    _legend(figure)
    return figure


def distribution_figure(
    title: str,
    ref: NumericReference | CategoricalReference,
    values: np.ndarray,
    drifted: bool,
    names: Mapping[str, str] | None = None,
) -> Figure:
    """One feature's (or the prediction's) live distribution against its reference."""
    if isinstance(ref, NumericReference):
        return numeric_figure(title, numeric_shares(ref, values), drifted)
    return categorical_figure(title, categorical_shares(ref, values, names), drifted)


def _moments(times: Sequence[float]) -> np.ndarray:
    return np.asarray(dates.date2num([datetime.fromtimestamp(t, UTC) for t in times]))


def _time_axis(axes: Axes, moments: np.ndarray) -> None:
    if len(moments) and np.ptp(moments) < 1 / 1440:
        # One window (or all in a minute): give the axis a span so it has ticks to draw.
        axes.set_xlim(moments.min() - 1 / 1440, moments.max() + 1 / 1440)
    locator = dates.AutoDateLocator(maxticks=8)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(dates.ConciseDateFormatter(locator))
    axes.tick_params(labelsize=8)


def drift_time_figure(
    ends: Sequence[float], shares: Sequence[float], alarms: Sequence[bool]
) -> Figure:
    """Share of features drifted per window; windows that raised the alarm are marked."""
    figure, axes = _axes("Drifted share of features per window (UTC, window end)", (7.6, 3.2))
    moments = _moments(ends)
    axes.plot(moments, shares, marker="o", ms=4, lw=1.5, color=LIVE_COLOUR, label="drifted share")
    alarm_at = [m for m, a in zip(moments, alarms, strict=True) if a]
    alarm_share = [s for s, a in zip(shares, alarms, strict=True) if a]
    if alarm_at:
        axes.scatter(
            alarm_at, alarm_share, s=70, marker="X", color=DRIFT_COLOUR, zorder=4, label="alarm"
        )
        for moment in alarm_at:
            axes.axvline(moment, color=DRIFT_COLOUR, alpha=0.15, lw=6)
    axes.set_ylim(-0.03, 1.03)
    axes.set_ylabel("share of features drifted", fontsize=8)
    _time_axis(axes, moments)
    axes.legend(fontsize=7, loc="upper left")
    return figure


def quality_time_figure(
    ends: Sequence[float], series: Mapping[str, Sequence[float]], reference: Mapping[str, float]
) -> Figure:
    """Live quality per window of labelled rows; dashed lines: the bundle's test metric."""
    figure, axes = _axes("Quality on labelled rows per window (UTC, window end)", (7.6, 3.2))
    moments = _moments(ends)
    for index, (metric, values) in enumerate(series.items()):
        colour = f"C{index % 10}"
        axes.plot(moments, values, marker="o", ms=4, lw=1.5, color=colour, label=f"{metric} (live)")
        if metric in reference:
            axes.axhline(reference[metric], color=colour, ls="--", lw=1, label=f"{metric} (test)")
    axes.set_ylabel("metric value", fontsize=8)
    _time_axis(axes, moments)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure
