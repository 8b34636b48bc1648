"""The monitoring report: what a model's prediction log says about one period.

``monitor_report.html`` is one self-contained file (inline CSS, plots as base64 PNG, no external
URL) so it can be mailed or attached to an incident and opened offline; ``monitor_report.json``
holds the same numbers for scripts. Drift uses the same test, bins and Holm correction as live
monitoring (``ferry.monitoring.drift``), so the report explains the alarms operators saw.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ferry.core.bundle import BundleManifest
from ferry.errors import DataError
from ferry.monitoring import report_plots as plots
from ferry.monitoring.drift import PREDICTION, DriftConfig, DriftDetector, FeatureDrift
from ferry.monitoring.report_data import (
    Analysis,
    analyse,
    document,
    read_columns,
    tabular_inputs,
    versions_seen,
)

__all__ = ["REPORT_HTML", "REPORT_JSON", "build_monitor_report", "render_html"]

REPORT_HTML = "monitor_report.html"
REPORT_JSON = "monitor_report.json"
# Past this many features the page gets heavy; the most drifted ones are drawn.
MAX_FEATURE_PLOTS = 40


# ----------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2430;
background:#f5f6f8}main{max-width:1180px;margin:0 auto;padding:24px}
h1{margin:0 0 4px}h2{border-bottom:2px solid #dde1e7;padding-bottom:4px;margin-top:32px}
.meta{color:#5a6475}section{background:#fff;border-radius:8px;padding:4px 20px 16px;
margin-top:18px;box-shadow:0 1px 3px rgba(0,0,0,.08)}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
th,td{border-bottom:1px solid #e3e6ea;padding:5px 10px;text-align:left;vertical-align:top}
th{background:#f0f2f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.fail{color:#c0262d;font-weight:600}tr.flag td{background:#fde8e8}
.grid{display:flex;flex-wrap:wrap;gap:16px}.grid figure{margin:0}img{max-width:100%;height:auto}
.note{background:#fff4e0;border-left:4px solid #e8a33a;padding:6px 12px;margin:8px 0}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _table(headers: list[str], rows: list[list[Any]], flagged: list[bool] | None = None) -> str:
    def cell(value: Any) -> str:
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        return (
            f'<td class="num">{_esc(_fmt(value))}</td>'
            if numeric
            else f"<td>{_esc(_fmt(value))}</td>"
        )

    marks = flagged or [False] * len(rows)
    body = "".join(
        f'<tr class="{"flag" if mark else ""}">{"".join(cell(v) for v in row)}</tr>'
        for row, mark in zip(rows, marks, strict=True)
    )
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    thead = f"<thead><tr>{head}</tr></thead>" if headers else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def _img(figure: Figure, alt: str) -> str:
    data = base64.b64encode(plots.to_png(figure)).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(alt)}"></figure>'


def _section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{_esc(title)}</h2>{body}</section>'


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _header(title: str, analysis: Analysis) -> str:
    columns = analysis.columns
    versions = ", ".join(f"{v} ({n} rows)" for v, n in versions_seen(columns).items())
    rows: list[list[Any]] = [
        ["model", analysis.manifest.name],
        ["task", analysis.manifest.task],
        ["versions seen", versions],
        ["rows", len(columns)],
        ["first prediction", _when(float(columns.times[0]))],
        ["last prediction", _when(float(columns.times[-1]))],
        ["drift test", f"chi-square on the reference bins, Holm at α={DriftConfig().alpha}"],
    ]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f'<h1>{_esc(title)}</h1><p class="meta">generated {stamp}</p>' + _table([], rows)


def _display(feature: str) -> str:
    return "prediction" if feature == PREDICTION else feature


def _drift_table(features: list[FeatureDrift]) -> str:
    if not features:
        return _note("The bundle holds no reference statistics, so drift cannot be tested.")
    rows = [
        [_display(f.feature), f.test, f.statistic, f.p_value, f.psi, f.bins, f.drifted]
        for f in features
    ]
    drifted = [f.drifted for f in features]
    names = ", ".join(_display(f.feature) for f in features if f.drifted) or "none"
    summary = f'<p class="{"fail" if any(drifted) else ""}">drifted: {_esc(names)}</p>'
    # Over a long period the test finds even tiny shifts; PSI says how big a shift is.
    caveat = _note("Over many rows even a small shift is significant: read PSI for its size.")
    headers = ["feature", "test", "statistic", "p-value", "PSI", "bins", "drifted"]
    return summary + caveat + _table(headers, rows, drifted)


def _distribution(analysis: Analysis, result: FeatureDrift) -> str:
    assert analysis.manifest.reference is not None  # no features were tested otherwise
    ref = DriftDetector(analysis.manifest.reference).references()[result.feature]
    title = f"{_display(result.feature)}: p={result.p_value:.3g}, PSI={result.psi:.3f}"
    # The reference holds class indices; the plot names the classes.
    labels = analysis.manifest.labels if result.feature == PREDICTION else None
    names = {str(i): label for i, label in enumerate(labels or [])}
    values = analysis.tested[result.feature]
    figure = plots.distribution_figure(title, ref, values, result.drifted, names)
    return _img(figure, f"distribution of {_display(result.feature)}")


def _distributions(analysis: Analysis) -> str:
    features = [f for f in analysis.features if f.feature != PREDICTION]
    if not features:
        return _note("No input has reference statistics in the bundle.")
    shown = features[:MAX_FEATURE_PLOTS]
    more = len(features) - len(shown)
    extra = _note(f"{more} more features are in the table above.") if more else ""
    images = "".join(_distribution(analysis, f) for f in shown)
    legend = "<p>Grey: training data; coloured: live rows (red if drifted), on the same bins.</p>"
    return extra + legend + f'<div class="grid">{images}</div>'


def _prediction(analysis: Analysis) -> str:
    found = [f for f in analysis.features if f.feature == PREDICTION]
    if not found:
        return _note("The bundle holds no reference for its predictions.")
    what = {"binary": "positive-class score", "multiclass": "class mix"}.get(
        analysis.manifest.task, "predicted value"
    )
    return f"<p>Reference: the {what} on the held-out test data.</p>" + _distribution(
        analysis, found[0]
    )


def _drift_over_time(analysis: Analysis) -> str:
    windows = analysis.windows
    if not windows:
        return _note(f"Fewer than {analysis.window} rows: no full window (choose a smaller one).")
    alarms = sum(w["alarm"] for w in windows)
    figure = plots.drift_time_figure(
        [w["end"] for w in windows],
        [w["drifted_share"] for w in windows],
        [w["alarm"] for w in windows],
    )
    config = DriftConfig()
    text = (
        f"<p>{len(windows)} windows of {analysis.window} rows; an alarm needs {config.k} drifted "
        f"windows among the last {config.n}. Alarmed windows: <b>{alarms}</b>.</p>"
    )
    return text + _img(figure, "drift over time")


def _quality(analysis: Analysis) -> str:
    if analysis.quality is None:
        return (
            "<p>No labels were given (<code>--labels labels.csv</code> with id,label columns).</p>"
        )
    matched = sum(int(w["metrics"].get("n", 0)) for w in analysis.quality)
    text = f"<p>{analysis.labels_given} labels given, {matched} matched a logged prediction.</p>"
    if not analysis.quality:
        return text
    names = ["rmse", "mae"] if analysis.manifest.task == "regression" else ["accuracy", "f1"]
    series = {
        name: [w["metrics"].get(name, math.nan) for w in analysis.quality]
        for name in names
        if any(name in w["metrics"] for w in analysis.quality)
    }
    reference = {k: v for k, v in analysis.manifest.metrics.test.items() if k in series}
    figure = plots.quality_time_figure([w["end"] for w in analysis.quality], series, reference)
    rows = [
        [_when(w["end"]), *(w["metrics"].get(n, math.nan) for n in series), int(w["metrics"]["n"])]
        for w in analysis.quality
    ]
    return text + _img(figure, "quality over time") + _table(["window end", *series, "rows"], rows)


def _data_quality(analysis: Analysis) -> str:
    total = len(analysis.columns)
    rows = [
        [name, c["missing"], c["out_of_range"], c["unseen"], f"{sum(c.values()) / total:.2%}"]
        for name, c in analysis.data_quality.items()
    ]
    # Missing values are flagged nowhere: the server only accepts them where training had some.
    flagged = [bool(c["out_of_range"] or c["unseen"]) for c in analysis.data_quality.values()]
    intro = "<p>Out of range: outside the training min/max. Unseen: a category not in training.</p>"
    headers = ["input", "missing", "out of range", "unseen", "rows affected (at most)"]
    return intro + _table(headers, rows, flagged)


def render_html(title: str, analysis: Analysis) -> str:
    parts = [
        _header(title, analysis),
        _section("Drift over the period", _drift_table(analysis.features), "drift"),
        _section("Distributions: reference vs live", _distributions(analysis), "distributions"),
        _section("Prediction drift", _prediction(analysis), "prediction"),
        _section("Drift over time", _drift_over_time(analysis), "drift-over-time"),
        _section("Quality over time", _quality(analysis), "quality"),
        _section("Data quality", _data_quality(analysis), "data-quality"),
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(parts)}</main></body></html>"
    )


# ----------------------------------------------------------------------------- entry


def build_monitor_report(
    rows: Iterable[dict[str, Any]],
    manifest: BundleManifest,
    out_dir: Path,
    *,
    title: str,
    labels: dict[str, str] | None = None,
    window: int = 500,
) -> Path:
    """Write ``monitor_report.html`` and ``monitor_report.json`` into ``out_dir``; return the
    HTML's path. ``rows`` are prediction-log rows; ``labels`` maps row ids to true labels."""
    if window < 1:
        raise DataError(f"invalid window {window}: expected a positive number of rows")
    columns = read_columns(rows, tabular_inputs(manifest.signature))
    if not len(columns):
        raise DataError(
            f"no logged predictions of {manifest.name!r} in the period: nothing to report. "
            "Serve the model with `ferry serve` (its prediction log is on by default), send it "
            "requests, or choose a longer period"
        )
    analysis = analyse(columns, manifest, labels, window)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document(title, analysis), indent=2, allow_nan=False)
    (out_dir / REPORT_JSON).write_text(text + "\n", encoding="utf-8")
    path = out_dir / REPORT_HTML
    path.write_text(render_html(title, analysis), encoding="utf-8")
    return path
