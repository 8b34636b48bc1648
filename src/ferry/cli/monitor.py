"""``ferry monitor``: alert rules for Prometheus, and late labels joined with served predictions."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from ferry.cli.console import console
from ferry.core.refs import check_name
from ferry.errors import DataError, ErrorCode, FerryError
from ferry.settings import Settings

if TYPE_CHECKING:
    from ferry.monitoring.feedback import FeedbackWindow
    from ferry.monitoring.predlog import PredictionStore

monitor_app = typer.Typer(
    help="Alert rules and late labels for served models.",
    no_args_is_help=True,
)
POST_BATCH = 5000  # labels per feedback request when sending to a server


@monitor_app.command("rules")
def rules_command(
    spec_path: Path = typer.Argument(..., help="Path to ferry.yaml."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the rules file here instead of printing it."
    ),
) -> None:
    """Write the spec's alert rules as a Prometheus alerting-rules file (promtool-checked)."""
    from ferry.core.spec import load_spec
    from ferry.monitoring.rules import render_rules, rules_of

    spec = load_spec(spec_path)
    text = render_rules(spec)
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text)
    count = len(rules_of(spec))
    console.print(
        f"wrote {output}: {count} alert rule(s) for {spec.name}; "
        f"check them with `promtool check rules {output}`"
    )


@monitor_app.command("feedback")
def feedback_command(
    model: str = typer.Argument(..., help="Model name, as served."),
    labels: Path = typer.Argument(..., help="CSV with columns id,label (or a JSON list)."),
    home: Path | None = typer.Option(
        None, "--home", help="FERRY_HOME whose predictions/ were written by `ferry serve`."
    ),
    url: str | None = typer.Option(
        None, help="Send the labels to a running server (e.g. http://127.0.0.1:8080) instead."
    ),
    token: str | None = typer.Option(
        None, envvar="FERRY_TOKEN", help="Bearer token for --url (env FERRY_TOKEN)."
    ),
) -> None:
    """Join late labels with logged predictions and print live quality; unknown ids are counted."""
    check_name(model)
    items = read_labels(labels)
    if url is not None:
        counts = post_labels(url, model, items, token)
        _print_counts(counts["matched"], counts["unknown"])
        return
    from ferry.monitoring.predlog import open_store

    settings = Settings(home=home) if home is not None else Settings()
    directory = settings.home / "predictions"
    if not settings.prediction_log_url and not (directory / model).is_dir():
        raise DataError(
            f"no prediction log for model {model!r} under {directory}: serve it with monitoring "
            "on (the default), or pass --home with the FERRY_HOME it was served from"
        )
    store = open_store(directory, settings.prediction_log_url)
    windows, unknown = join_labels(store, model, items)
    # Stored too, so `ferry retrain` can train on these rows as on labels sent to a server.
    now = time.time()
    store.write_labels(model, [{"id": i["id"], "time": now, "label": i["label"]} for i in items])
    _print_counts(sum(len(w.pairs) for w in windows.values()), unknown)
    if windows:
        console.print(_quality_table(windows))


def read_labels(path: Path) -> list[dict[str, Any]]:
    """``[{"id": ..., "label": ...}]`` from a CSV (columns id,label) or a JSON file."""
    if not path.is_file():
        raise DataError(f"labels file {str(path)!r} not found; give a CSV with columns id,label")
    if path.suffix.lower() == ".json":
        items = _json_labels(path)
    else:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            if "id" not in columns or "label" not in columns:
                raise DataError(
                    f"{path.name}: expected a header with columns id,label; found {columns}"
                )
            items = [{"id": row["id"], "label": row["label"]} for row in reader]
    for number, item in enumerate(items, start=1):
        if item["id"] in (None, "") or item["label"] in (None, ""):
            raise DataError(f"{path.name}: label {number} has an empty id or label: {item}")
    if not items:
        raise DataError(f"{path.name} holds no labels")
    return items


def _json_labels(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path.name} is not valid JSON: {exc}") from None
    items = data.get("labels") if isinstance(data, dict) else data
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and "id" in i and "label" in i for i in items
    ):
        raise DataError(f'{path.name}: expected a list of {{"id": ..., "label": ...}} objects')
    return [{"id": str(i["id"]), "label": i["label"]} for i in items]


def join_labels(
    log: PredictionStore, model: str, items: list[dict[str, Any]]
) -> tuple[dict[int, FeedbackWindow], int]:
    """Quality per model version from the labels whose ids were logged; and the unknown count."""
    from ferry.monitoring.feedback import FeedbackWindow

    wanted: dict[str, list[Any]] = {}
    for item in items:
        wanted.setdefault(str(item["id"]), []).append(item["label"])
    windows: dict[int, FeedbackWindow] = {}
    for row in log.read(model):
        if row.get("role") == "shadow":  # its answer was never returned: labels judge the primary
            continue
        found = wanted.pop(str(row.get("id")), None)
        if found is None:
            continue
        window = windows.setdefault(int(row["version"]), FeedbackWindow(len(items)))
        for label in found:
            window.add(_truth(label, row), row["prediction"], row.get("score"))
    return windows, sum(len(labels) for labels in wanted.values())


def _truth(label: Any, row: dict[str, Any]) -> Any:
    """Labels compare as the logged prediction does: text for classes, numbers for regression."""
    predicted = row["prediction"]
    if isinstance(predicted, int | float) and not isinstance(predicted, bool):
        try:
            return float(label)
        except (TypeError, ValueError):
            raise DataError(
                f"label {label!r} for id {row['id']!r} is not a number; this model predicts "
                "numbers, so its labels must be numbers too"
            ) from None
    return str(label)


def post_labels(url: str, model: str, items: list[dict[str, Any]], token: str | None) -> Any:
    """POST to a running server's feedback route in batches; the summed counts it answers."""
    import httpx

    endpoint = f"{url.rstrip('/')}/v2/models/{model}/feedback"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    totals = {"matched": 0, "unknown": 0}
    with httpx.Client(timeout=30.0) as client:
        for start in range(0, len(items), POST_BATCH):
            try:
                response = client.post(
                    endpoint, json=items[start : start + POST_BATCH], headers=headers
                )
            except httpx.HTTPError as exc:
                raise FerryError(
                    f"cannot send labels to {endpoint}: {exc}; check --url and that "
                    "`ferry serve` is running there",
                    code=ErrorCode.UNAVAILABLE,
                ) from None
            if response.status_code != 200:
                raise FerryError(f"{endpoint} refused the labels: {_server_error(response)}")
            answer = response.json()
            for key in totals:
                totals[key] += int(answer.get(key, 0))
    return totals


def _server_error(response: Any) -> str:
    try:
        message = response.json().get("error")
    except ValueError:
        message = None
    return f"HTTP {response.status_code}" + (f": {message}" if message else "")


def _print_counts(matched: int, unknown: int) -> None:
    console.print(f"matched: {matched}")
    console.print(f"unknown: {unknown}")


def _quality_table(windows: dict[int, FeedbackWindow]) -> Table:
    metrics = {version: window.metrics() for version, window in sorted(windows.items())}
    names = ("accuracy", "precision", "recall", "f1", "rmse", "mae")
    shown = [n for n in names if any(n in m for m in metrics.values())]
    table = Table("version", "labels", *shown, title="Live quality from late labels")
    for version, values in metrics.items():
        cells = [f"{values[n]:.4f}" if n in values else "-" for n in shown]
        table.add_row(str(version), str(int(values.get("n", 0))), *cells)
    return table
