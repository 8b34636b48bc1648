"""``ferry monitor report``: an HTML report of what a served model saw over a period."""

from __future__ import annotations

import csv
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from ferry.cli.console import console
from ferry.errors import DataError
from ferry.settings import Settings

if TYPE_CHECKING:  # matplotlib, numpy and SQLAlchemy load only when a report is built
    from ferry.core.bundle import BundleManifest
    from ferry.monitoring.predlog import PredictionStore

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SINCE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_since(text: str) -> float:
    """``90s``, ``30m``, ``24h``, ``7d`` or ``2w`` to seconds."""
    match = _SINCE.fullmatch(text.strip().lower())
    if match is None or float(match.group(1)) <= 0:
        raise typer.BadParameter(
            f"{text!r} is not a period: expected a positive number and a unit "
            "(s, m, h, d or w), e.g. 90s, 30m, 24h or 7d",
            param_hint="'--since'",
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def read_labels(path: Path) -> dict[str, str]:
    """``id,label`` rows: the id a server returned with a prediction and the true label."""
    if not path.is_file():
        raise DataError(f"labels file {path} does not exist: pass a CSV with id,label columns")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "id" not in columns or "label" not in columns:
            raise DataError(
                f"labels file {path.name} has columns {columns}: expected 'id' (the prediction "
                "id a server returned) and 'label' (the true label)"
            )
        return {row["id"]: row["label"] for row in reader if row["id"]}


def _served(log: PredictionStore, model: str, since: float) -> Iterator[dict[str, Any]]:
    # A shadow's rows repeat the primary's inputs and its answers were never returned.
    return (row for row in log.read(model, since=since) if row.get("role") != "shadow")


def _versions(log: PredictionStore, model: str, since: float) -> Counter[int]:
    # A first pass over the log, then ``_rows`` a second: twice the parsing, but the rows of a
    # long period are never all held in memory at once.
    return Counter(int(row.get("version", 0)) for row in _served(log, model, since))


def _rows(log: PredictionStore, model: str, since: float, version: int) -> Iterator[dict[str, Any]]:
    return (row for row in _served(log, model, since) if int(row.get("version", 0)) == version)


def _choose_version(seen: Counter[int], model: str, period: str, asked: int | None) -> int:
    listing = ", ".join(f"{v} ({n} rows)" for v, n in sorted(seen.items()))
    if not seen:
        raise DataError(
            f"no logged predictions of {model!r} in the last {period}: nothing to report. "
            "`ferry serve` logs every prediction under FERRY_HOME/predictions (monitoring is on "
            "by default): serve the model, send it requests, or pass a longer --since"
        )
    if asked is not None and asked not in seen:
        raise DataError(
            f"no logged predictions of {model}:{asked} in the last {period}; the log holds "
            f"version(s) {listing}: pass one of them to --version"
        )
    if asked is None and len(seen) > 1:
        console.print(f"log holds versions {listing}; reporting the newest (choose: --version)")
    return asked if asked is not None else max(seen)


def _manifest(settings: Settings, model: str, version: int) -> BundleManifest:
    from ferry.cli.context import open_registry
    from ferry.core.bundle import BundleManifest

    registry = open_registry(settings)
    try:
        # The registry database holds each version's full manifest, reference statistics
        # included: no need to download the model itself.
        found = registry.resolve(f"{model}:{version}")
    finally:
        registry.close()
    return BundleManifest.model_validate(found.manifest)


def _summary(path: Path) -> None:
    from ferry.monitoring.drift import PREDICTION

    document = json.loads((path.parent / "monitor_report.json").read_text())
    names = ["prediction" if f == PREDICTION else f for f in document["drifted"]]
    drifted = ", ".join(names) or "none"
    alarms = sum(w["alarm"] for w in document["windows"])
    console.print(f"rows: {document['rows']}; drifted over the period: {escape(drifted)}")
    console.print(f"drift windows: {len(document['windows'])}, alarmed: {alarms}")
    console.print(f"report: {escape(str(path))}")


def report_command(
    model: str = typer.Argument(..., help="Model name."),
    since: str = typer.Option("24h", "--since", help="Period to report: 90s, 30m, 24h, 7d."),
    version: int | None = typer.Option(
        None, "--version", help="Version to report (default: the newest one in the log)."
    ),
    labels: Path | None = typer.Option(
        None, "--labels", help="CSV with id,label columns: true labels for quality over time."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Directory for the report (default: FERRY_HOME/reports/)."
    ),
    window: int = typer.Option(500, "--window", min=1, help="Rows per drift and quality window."),
) -> None:
    """Build an HTML report from a model's prediction log over a period.

    Drift per feature (test, p-value, PSI) with its distribution against the training data,
    prediction drift, drift and quality over time, and data-quality counts.
    """
    from ferry.monitoring.predlog import open_store
    from ferry.monitoring.report import build_monitor_report

    start = time.time() - parse_since(since)
    truth = read_labels(labels) if labels is not None else None
    settings = Settings()
    log = open_store(settings.home / "predictions", settings.prediction_log_url)
    chosen = _choose_version(_versions(log, model, start), model, since, version)
    manifest = _manifest(settings, model, chosen)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    out_dir = output or settings.home / "reports" / f"{model}-{chosen}-{stamp}"
    path = build_monitor_report(
        _rows(log, model, start, chosen),
        manifest,
        out_dir,
        title=f"{model}:{chosen}, last {since}",
        labels=truth,
        window=window,
    )
    _summary(path)


def register(monitor_app: typer.Typer) -> None:
    monitor_app.command("report")(report_command)
