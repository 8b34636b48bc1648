"""The evaluation report: report.html, metrics.json and model_card.md for one trained model.

The HTML report is one self-contained file (inline CSS, plots as base64 PNG, no external URL):
it is attached to registry versions and opened offline, so it must not depend on a network.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ferry.evaluation import plots
from ferry.evaluation.assessment import Evaluation, evaluate_classifier, evaluate_regressor
from ferry.evaluation.card import model_card
from ferry.evaluation.gates import GateResult
from ferry.evaluation.metrics import encode_labels

# Evaluation and the evaluate_* functions are part of this module's API (the trainer imports
# them from here); they live in assessment.py to keep this module about rendering.
__all__ = [
    "Evaluation",
    "ReportPaths",
    "evaluate_classifier",
    "evaluate_regressor",
    "jsonable",
    "render_html",
    "write_report",
]


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    metrics_json: Path
    model_card: Path


# ----------------------------------------------------------------------------- metrics.json


def jsonable(value: Any) -> Any:
    """Plain JSON types only: NaN and infinities become null, numpy values Python ones."""
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def _metrics_document(
    name: str, evaluation: Evaluation, leaderboard: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "name": name,
        "task": evaluation.task,
        "labels": evaluation.labels,
        "metrics": evaluation.metrics,
        "threshold": evaluation.threshold,
        "confusion": evaluation.confusion,
        "fairness": evaluation.fairness,
        "importance": evaluation.importance,
        "gates": evaluation.gates,
        "passed": evaluation.passed,
        "notes": evaluation.notes,
        "leaderboard": leaderboard,
    }


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
.pass{color:#17803d;font-weight:600}.fail{color:#c0262d;font-weight:600}
tr.chosen td{background:#fff6d6}.grid{display:flex;flex-wrap:wrap;gap:16px}
.grid figure{margin:0}img{max-width:100%;height:auto}.note{background:#fff4e0;
border-left:4px solid #e8a33a;padding:6px 12px;margin:8px 0}code{font-size:12px}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        return f"{number:.4f}" if abs(number) < 1e4 else f"{number:.4g}"
    return str(value)


class _Raw(str):
    """Markup built here, inserted into a table cell without escaping."""


def _verdict(passed: bool) -> _Raw:
    return _Raw('<span class="pass">PASS</span>' if passed else '<span class="fail">FAIL</span>')


def _cell(value: Any) -> str:
    if isinstance(value, _Raw):
        return f"<td>{value}</td>"
    numeric = isinstance(value, int | float | np.number) and not isinstance(value, bool)
    return (
        f'<td class="num">{_esc(_fmt(value))}</td>' if numeric else f"<td>{_esc(_fmt(value))}</td>"
    )


def _table(headers: list[str], rows: list[list[Any]], row_classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    classes = row_classes or [""] * len(rows)
    body = "".join(
        f'<tr class="{css}">' + "".join(_cell(v) for v in row) + "</tr>"
        for row, css in zip(rows, classes, strict=True)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(figure: Any, alt: str) -> str:
    data = base64.b64encode(plots.to_png(figure)).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(alt)}"></figure>'


def _section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{_esc(title)}</h2>{body}</section>'


def _summary(evaluation: Evaluation) -> str:
    rows: list[list[Any]] = [[k, v] for k, v in evaluation.metrics.items()]
    if evaluation.threshold is not None:
        rows.append(["decision threshold", evaluation.threshold])
    notes = "".join(f'<p class="note">{_esc(n)}</p>' for n in evaluation.notes)
    if not evaluation.gates:
        return notes + _table(["metric", "test value"], rows)
    verdict = "pass" if evaluation.passed else "fail"
    word = "all gates passed" if evaluation.passed else "some gates FAILED"
    return f'<p class="{verdict}">{word}</p>{notes}' + _table(["metric", "test value"], rows)


def _gates_html(gates: list[GateResult]) -> str:
    if not gates:
        return "<p>No gates are configured (<code>gates:</code> in ferry.yaml).</p>"
    rows = [[_verdict(g.passed), g.name, g.value, g.limit, g.detail] for g in gates]
    return _table(["result", "gate", "value", "limit", "detail"], rows)


def _curves(evaluation: Evaluation) -> list[plots.Curve]:
    labels = evaluation.labels or []
    codes = encode_labels(evaluation.y_true, labels)
    if len(labels) == 2:
        return [(labels[1], codes == 1, evaluation.score)]
    return [(label, codes == i, evaluation.score[:, i]) for i, label in enumerate(labels)]


def _calibration(evaluation: Evaluation) -> str:
    labels = evaluation.labels or []
    if len(labels) == 2:
        target = encode_labels(evaluation.y_true, labels) == 1
        return _img(plots.calibration_figure(target, evaluation.score, labels[1]), "calibration")
    # Multiclass: top-label calibration -- is the model right as often as its confidence says?
    correct = encode_labels(evaluation.y_true, labels) == evaluation.score.argmax(axis=1)
    figure = plots.calibration_figure(correct, evaluation.score.max(axis=1), "top-label")
    return _img(figure, "calibration")


def _classifier_plots(evaluation: Evaluation) -> str:
    labels = evaluation.labels or []
    curves = _curves(evaluation)
    images = [
        _img(plots.confusion_figure(evaluation.confusion or [], labels), "confusion matrix"),
        _img(plots.roc_figure(curves), "ROC curve"),
        _img(plots.pr_figure(curves), "precision-recall curve"),
        _calibration(evaluation),
    ]
    return f'<div class="grid">{"".join(images)}</div>'


def _regression_plots(evaluation: Evaluation) -> str:
    images = [
        _img(plots.predicted_actual_figure(evaluation.y_true, evaluation.score), "predicted"),
        _img(plots.residuals_figure(evaluation.y_true, evaluation.score), "residuals"),
    ]
    return f'<div class="grid">{"".join(images)}</div>'


def _importance_html(importance: dict[str, float] | None) -> str:
    if not importance:
        return "<p>Permutation importance was not computed for this run.</p>"
    return _img(plots.importance_figure(importance), "permutation importance")


LEADERBOARD_COLUMNS = [
    "rank",
    "family",
    "score",
    "cv_std",
    "latency_p99_ms",
    "size_mb",
    "fit_s",
    "pareto",
    "chosen",
    "within_budget",
]


def _params_text(params: Any) -> str:
    text = json.dumps(jsonable(params or {}), sort_keys=True)
    return text if len(text) <= 160 else text[:157] + "..."


def _leaderboard_html(leaderboard: list[dict[str, Any]], metric: str) -> str:
    if not leaderboard:
        return "<p>No leaderboard was recorded.</p>"
    rows = [
        [row.get(c) for c in LEADERBOARD_COLUMNS] + [_params_text(row.get("params"))]
        for row in leaderboard
    ]
    css = ["chosen" if row.get("chosen") else "" for row in leaderboard]
    table = _table([*LEADERBOARD_COLUMNS, "params"], rows, css)
    figure = plots.leaderboard_figure(leaderboard, metric)
    return table + (_img(figure, "score vs latency") if figure is not None else "")


def _fairness_html(fairness: dict[str, Any] | None) -> str:
    if not fairness:
        return "<p>No sensitive columns were given (<code>data.sensitive</code>).</p>"
    parts = []
    keys = ["n", "selection_rate", "tpr", "fpr", "accuracy", "precision"]
    for column, entry in fairness.items():
        rows = [[group, *(rates[k] for k in keys)] for group, rates in entry["groups"].items()]
        parts.append(
            f"<h3>{_esc(column)}</h3><p>demographic parity difference "
            f"<b>{_esc(_fmt(entry['demographic_parity_difference']))}</b>, equalized odds "
            f"difference <b>{_esc(_fmt(entry['equalized_odds_difference']))}</b></p>"
            + _table(["group", *keys], rows)
        )
    return "".join(parts)


def _extra_html(extra: dict[str, Any]) -> str:
    sections = {k: v for k, v in extra.items() if isinstance(v, dict) and v}
    if not sections:
        return ""
    body = "".join(
        f"<h3>{_esc(key)}</h3>"
        + _table(
            ["field", "value"],
            [[k, _params_text(v) if isinstance(v, dict | list) else v] for k, v in value.items()],
        )
        for key, value in sections.items()
    )
    return _section("Data and lineage", body, "data")


def _title(name: str, evaluation: Evaluation) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    classes = f" · classes: {', '.join(evaluation.labels)}" if evaluation.labels else ""
    meta = _esc(f"{evaluation.task}{classes} · {stamp}")
    return f'<h1>{_esc(name)}</h1><p class="meta">{meta}</p>'


def render_html(
    name: str, evaluation: Evaluation, leaderboard: list[dict[str, Any]], extra: dict[str, Any]
) -> str:
    is_classifier = evaluation.task == "classification"
    plots_html = _classifier_plots(evaluation) if is_classifier else _regression_plots(evaluation)
    metric = str(extra.get("metric", "score"))
    parts = [
        _title(name, evaluation),
        _section("Summary (test data)", _summary(evaluation), "summary"),
        _section("Gates", _gates_html(evaluation.gates), "gates"),
        _section("Plots", plots_html, "plots"),
        _section("Permutation importance", _importance_html(evaluation.importance), "importance"),
        _section("Leaderboard", _leaderboard_html(leaderboard, metric), "leaderboard"),
    ]
    if is_classifier:
        parts.append(_section("Fairness", _fairness_html(evaluation.fairness), "fairness"))
    parts.append(_extra_html(extra))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Ferry report: {_esc(name)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(parts)}</main></body></html>"
    )


def write_report(
    out_dir: Path,
    *,
    name: str,
    evaluation: Evaluation,
    leaderboard: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> ReportPaths:
    """Write report.html, metrics.json and model_card.md into ``out_dir``.

    ``extra`` may hold "data", "lineage" and "chosen" dicts (shown in the report and the card)
    and "metric", the name of the search metric the leaderboard's scores are in.
    """
    extra = extra or {}
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(
        out_dir / "report.html", out_dir / "metrics.json", out_dir / "model_card.md"
    )
    document = jsonable(_metrics_document(name, evaluation, leaderboard))
    paths.metrics_json.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    paths.html.write_text(render_html(name, evaluation, leaderboard, extra), encoding="utf-8")
    paths.model_card.write_text(model_card(name, evaluation, extra), encoding="utf-8")
    return paths
