"""The report's figures, drawn on the Agg canvas and returned as PNG bytes.

Figures are built with ``matplotlib.figure.Figure`` directly, never through pyplot: no global
figure registry to leak memory in a long-running retraining process, and no GUI backend chosen
behind the caller's back.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import auc, precision_recall_curve, roc_curve

# One-vs-rest curves beyond this many classes are unreadable; the top ones by support are drawn.
MAX_CURVES = 10
# Scatter plots of more points than this only add file size.
MAX_POINTS = 5000
_SIZE = (5.6, 4.2)

Curve = tuple[str, np.ndarray, np.ndarray]  # (name, binary target, score)


def to_png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    # No "Software" text chunk: the report should carry no URL, not even inside an image.
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def _axes(title: str, size: tuple[float, float] = _SIZE) -> tuple[Figure, Axes]:
    figure = Figure(figsize=size, layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title, fontsize=11)
    axes.grid(True, alpha=0.3)
    return figure, axes


def _thin(rng_seed: int, *arrays: np.ndarray) -> list[np.ndarray]:
    n = len(arrays[0])
    if n <= MAX_POINTS:
        return list(arrays)
    keep = np.random.default_rng(rng_seed).choice(n, MAX_POINTS, replace=False)
    return [a[keep] for a in arrays]


def confusion_figure(confusion: Sequence[Sequence[int]], labels: Sequence[str]) -> Figure:
    matrix = np.asarray(confusion, dtype=float)
    # Colour by row share so a rare class's errors are as visible as a common one's.
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = max(3.6, 0.6 * len(labels) + 2.4)
    figure, axes = _axes("Confusion matrix (colour: share of true class)", (size + 1, size))
    axes.grid(False)
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, shrink=0.8)
    _annotate_cells(axes, matrix, shares)
    ticks = np.arange(len(labels))
    axes.set_xticks(ticks, [str(label) for label in labels], rotation=45, ha="right")
    axes.set_yticks(ticks, [str(label) for label in labels])
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    return figure


def _annotate_cells(axes: Axes, counts: np.ndarray, shares: np.ndarray) -> None:
    for (row, col), count in np.ndenumerate(counts):
        colour = "white" if shares[row, col] > 0.55 else "black"
        axes.text(col, row, f"{int(count)}", ha="center", va="center", color=colour, fontsize=10)


def _top_curves(axes: Axes, curves: Sequence[Curve]) -> list[Curve]:
    """Curves that are defined (both outcomes present), the best-supported first."""
    usable = [c for c in curves if 0 < c[1].sum() < c[1].size]
    if not usable:
        axes.text(0.5, 0.5, "undefined: the test data holds one class only", ha="center")
    return sorted(usable, key=lambda c: -int(c[1].sum()))[:MAX_CURVES]


def roc_figure(curves: Sequence[Curve]) -> Figure:
    """ROC curves; several curves are one-vs-rest, one per class."""
    figure, axes = _axes("ROC curve" if len(curves) == 1 else "ROC curves (one-vs-rest)")
    for name, target, score in _top_curves(axes, curves):
        fpr, tpr, _ = roc_curve(target, score)
        axes.plot(fpr, tpr, lw=1.8, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
    axes.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02))
    axes.legend(loc="lower right", fontsize=8)
    return figure


def pr_figure(curves: Sequence[Curve]) -> Figure:
    """Precision-recall curves, each with its class's prevalence as the chance line."""
    title = "Precision-recall curve" if len(curves) == 1 else "Precision-recall (one-vs-rest)"
    figure, axes = _axes(title)
    for name, target, score in _top_curves(axes, curves):
        precision, recall, _ = precision_recall_curve(target, score)
        line = axes.step(recall, precision, where="post", lw=1.8, label=name)[0]
        axes.axhline(target.mean(), ls=":", lw=1, color=line.get_color())
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    if axes.get_legend_handles_labels()[1]:
        axes.legend(loc="lower left", fontsize=8, title="dotted: prevalence", title_fontsize=8)
    return figure


def reliability(target: np.ndarray, score: np.ndarray, bins: int = 10) -> np.ndarray:
    """Rows of (mean score, observed frequency, count) for each non-empty equal-width bin."""
    truth = np.asarray(target, dtype=float)
    prob = np.clip(np.asarray(score, dtype=float), 0, 1)
    index = np.minimum((prob * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins)
    sums = np.bincount(index, weights=prob, minlength=bins)
    hits = np.bincount(index, weights=truth, minlength=bins)
    full = counts > 0
    return np.column_stack([sums[full] / counts[full], hits[full] / counts[full], counts[full]])


def calibration_figure(target: np.ndarray, score: np.ndarray, what: str) -> Figure:
    """Reliability diagram over a histogram of the scores: where the model's confidence lies."""
    figure = Figure(figsize=(_SIZE[0], 5.2), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.set_title(f"Calibration ({what}); marker area: rows in bin", fontsize=11)
    table = reliability(target, score)
    top.plot(table[:, 0], table[:, 1], lw=1.5, color="C0", label="model")
    # Marker area by row count: a wild point from five rows should look like five rows.
    sizes = 12 + 240 * np.sqrt(table[:, 2] / table[:, 2].max())
    top.scatter(table[:, 0], table[:, 1], s=sizes, color="C0", alpha=0.8, zorder=3)
    top.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
    top.set(ylabel="observed frequency", xlim=(0, 1), ylim=(-0.02, 1.02))
    top.grid(True, alpha=0.3)
    top.legend(loc="upper left", fontsize=8)
    bottom.hist(np.clip(score, 0, 1), bins=20, range=(0, 1), color="#5b8db8")
    bottom.set(xlabel=f"predicted probability ({what})", ylabel="count")
    return figure


def importance_figure(importance: dict[str, float], top: int = 20) -> Figure:
    ranked = sorted(
        ((k, v) for k, v in importance.items() if np.isfinite(v)), key=lambda kv: -kv[1]
    )[:top]
    height = max(2.5, 0.3 * len(ranked) + 1.2)
    figure, axes = _axes(f"Permutation importance (top {len(ranked)})", (_SIZE[0], height))
    names = [name for name, _ in reversed(ranked)]
    values = [value for _, value in reversed(ranked)]
    colours = ["#3b7dd8" if v >= 0 else "#d8613b" for v in values]
    axes.barh(names, values, color=colours)
    axes.axvline(0, color="black", lw=0.8)
    axes.set_xlabel("score drop when the column is shuffled")
    return figure


def _usable_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    def finite(value: Any) -> bool:
        return isinstance(value, int | float | np.number) and bool(np.isfinite(value))

    return [r for r in rows if finite(r.get("score")) and finite(r.get("latency_p99_ms"))]


def leaderboard_figure(rows: Sequence[dict[str, Any]], metric: str) -> Figure | None:
    """Score against single-row p99 latency, the Pareto front joined; None if nothing to draw."""
    usable = _usable_rows(rows)
    if not usable:
        return None
    figure, axes = _axes("Candidates: score vs latency")
    _scatter_families(axes, usable)
    front = sorted((r for r in usable if r.get("pareto")), key=lambda r: r["latency_p99_ms"])
    if front:
        axes.plot(
            [r["latency_p99_ms"] for r in front],
            [r["score"] for r in front],
            color="black",
            lw=1.2,
            ls="--",
            marker="o",
            mfc="none",
            ms=11,
            label="Pareto front",
        )
    for row in (r for r in usable if r.get("chosen")):
        axes.scatter(
            row["latency_p99_ms"],
            row["score"],
            marker="*",
            s=260,
            c="gold",
            edgecolors="black",
            zorder=5,
            label="chosen",
        )
    latencies = [r["latency_p99_ms"] for r in usable]
    if min(latencies) > 0 and max(latencies) / min(latencies) > 20:
        axes.set_xscale("log")
    axes.set(xlabel="p99 latency, one row (ms)", ylabel=f"CV {metric}")
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure


def _scatter_families(axes: Axes, rows: list[dict[str, Any]]) -> None:
    families = sorted({str(r.get("family")) for r in rows})
    for index, family in enumerate(families):
        colour = f"C{index % 10}"
        mine = [r for r in rows if str(r.get("family")) == family]
        axes.scatter([], [], s=36, color=colour, label=family)
        for inside in (True, False):
            part = [r for r in mine if bool(r.get("within_budget", True)) is inside]
            # Over-budget candidates are hollow: visible for context, plainly not eligible.
            axes.scatter(
                [r["latency_p99_ms"] for r in part],
                [r["score"] for r in part],
                s=36,
                facecolors=colour if inside else "none",
                edgecolors=colour,
                alpha=0.85,
            )
    if not all(r.get("within_budget", True) for r in rows):
        axes.scatter([], [], s=36, facecolors="none", edgecolors="grey", label="over budget")


def predicted_actual_figure(y_true: np.ndarray, y_pred: np.ndarray) -> Figure:
    truth, pred = _thin(0, np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float))
    figure, axes = _axes("Predicted vs actual")
    axes.scatter(truth, pred, s=10, alpha=0.5, edgecolors="none")
    low = float(np.nanmin([truth.min(), pred.min()]))
    high = float(np.nanmax([truth.max(), pred.max()]))
    axes.plot([low, high], [low, high], ls="--", color="grey", lw=1, label="perfect")
    axes.set(xlabel="actual", ylabel="predicted")
    axes.legend(fontsize=8, loc="upper left")
    return figure


def residuals_figure(y_true: np.ndarray, y_pred: np.ndarray) -> Figure:
    residual = np.asarray(y_pred, dtype=float) - np.asarray(y_true, dtype=float)
    figure, axes = _axes("Residuals (predicted - actual)")
    axes.hist(residual[np.isfinite(residual)], bins=40, color="#5b8db8")
    axes.axvline(0, color="black", lw=1)
    axes.set(xlabel="residual", ylabel="count")
    return figure
