"""The champion/challenger verdict: every gate with its numbers, as JSON and as an HTML page."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ferry.evaluation.plots import to_png
from ferry.retraining.compare import Comparison


@dataclass(frozen=True)
class GateCheck:
    name: str
    passed: bool
    detail: str
    values: dict[str, float | None] = field(default_factory=dict)


@dataclass
class Verdict:
    model: str
    champion: int | None
    challenger: int | None
    checks: list[GateCheck]
    comparisons: list[Comparison]
    data: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def failed(self) -> list[GateCheck]:
        return [check for check in self.checks if not check.passed]

    def summary(self) -> str:
        if self.passed:
            return f"challenger passed all {len(self.checks)} gates"
        return "challenger rejected: " + "; ".join(f"{c.name}: {c.detail}" for c in self.failed())

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "champion": self.champion,
            "challenger": self.challenger,
            "passed": self.passed,
            "summary": self.summary(),
            "checks": [asdict(c) for c in self.checks],
            "comparisons": [c.as_dict() for c in self.comparisons],
            "data": self.data,
            "at": self.at,
        }

    def write(self, directory: Path) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        json_path, html_path = directory / "verdict.json", directory / "verdict.html"
        json_path.write_text(json.dumps(self.as_dict(), indent=2, allow_nan=False, default=str))
        html_path.write_text(render_html(self))
        return json_path, html_path


def interval_figure(comparisons: list[Comparison]) -> Figure:
    """Challenger minus champion with its bootstrap interval, one row per data set."""
    figure = Figure(figsize=(6.4, 0.9 + 0.7 * len(comparisons)))
    axes = figure.add_subplot()
    for row, c in enumerate(comparisons):
        color = "#2e7d32" if c.ci_low > 0 else ("#c62828" if c.ci_high < 0 else "#616161")
        axes.errorbar(
            c.delta,
            row,
            xerr=[[c.delta - c.ci_low], [c.ci_high - c.delta]],
            fmt="o",
            color=color,
            capsize=4,
        )
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_yticks(range(len(comparisons)), [f"{c.dataset} ({c.rows} rows)" for c in comparisons])
    metric = comparisons[0].metric if comparisons else ""
    axes.set_xlabel(f"{metric}: challenger − champion (better →)")
    axes.set_ylim(-0.7, len(comparisons) - 0.3)
    figure.tight_layout()
    return figure


def _row(cells: list[Any], klass: str = "") -> str:
    inner = "".join(f"<td>{html.escape(str(cell))}</td>" for cell in cells)
    return f'<tr class="{klass}">{inner}</tr>'


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def render_html(verdict: Verdict) -> str:
    checks = "".join(
        _row([c.name, "pass" if c.passed else "FAIL", c.detail], "ok" if c.passed else "bad")
        for c in verdict.checks
    )
    comparisons = "".join(
        _row(
            [
                c.dataset,
                c.rows,
                c.metric,
                _number(c.champion),
                _number(c.challenger),
                f"{c.delta:+.4f}",
                f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}] ({c.confidence:.0%})",
            ]
        )
        for c in verdict.comparisons
    )
    image = ""
    if verdict.comparisons:
        png = base64.b64encode(to_png(interval_figure(verdict.comparisons))).decode()
        image = f'<img alt="challenger minus champion" src="data:image/png;base64,{png}">'
    data = "".join(_row([k, v]) for k, v in verdict.data.items())
    title = f"{verdict.model}: challenger {verdict.challenger} vs champion {verdict.champion}"
    status = "PROMOTABLE" if verdict.passed else "REJECTED"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;max-width:60em}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px}}
.ok td:nth-child(2){{color:#2e7d32;font-weight:bold}}.bad td:nth-child(2){{color:#c62828;
font-weight:bold}}.status{{font-size:1.4em;font-weight:bold}}</style></head><body>
<h1>{html.escape(title)}</h1><p class="status">{status}: {html.escape(verdict.summary())}</p>
<h2>Gates</h2><table><tr><th>gate</th><th>result</th><th>detail</th></tr>{checks}</table>
<h2>Paired bootstrap</h2><table><tr><th>data</th><th>rows</th><th>metric</th><th>champion</th>
<th>challenger</th><th>difference</th><th>interval</th></tr>{comparisons}</table>{image}
<h2>Data</h2><table>{data}</table><p>{html.escape(verdict.at)}</p></body></html>
"""
