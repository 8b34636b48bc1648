"""``ferry monitor report`` end to end: a model trained and registered by the lab, a prediction
log written the way a server writes it (real graph outputs through ``Monitor.process``), and the
command run through Typer on that ``FERRY_HOME``.

The command is mounted on a small Typer app here: the ``ferry`` app's wiring is not this
module's concern, and running in-process keeps the test fast.
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner, Result

from ferry.cli.monitor_report import register
from ferry.core.signature import InputSpec
from ferry.core.spec import parse_spec
from ferry.data.builtin import fraud
from ferry.errors import DataError
from ferry.lab import train
from ferry.monitoring.metrics import Metrics
from ferry.monitoring.monitor import Monitor
from ferry.monitoring.predlog import LogConfig, PredictionLog
from ferry.registry import open_registry
from ferry.serving.batching import BatchConfig
from ferry.serving.dataplane import InferResult
from ferry.serving.inputs import feeds_from_records
from ferry.serving.model import LoadedModel

ACTOR = "e2e-monitor"
SPEC = {
    "name": "fraud",
    "task": "classification",
    "data": {"source": "builtin:fraud", "target": "is_fraud", "rows": 3000},
    "search": {"families": ["logistic"], "trials": 1, "time_budget_s": 10, "folds": 2},
}
# (hours ago, drift shift, seed) of each 500-row batch; the first is outside the default 24 h.
BATCHES = [(72.0, 0.0, 20), (4.0, 0.0, 21), (3.5, 0.0, 22), (3.0, 2.0, 23), (2.5, 2.0, 24)]
PAYLOAD = re.compile(r"base64,[A-Za-z0-9+/=]+")


@dataclass
class Home:
    path: Path
    labels: Path  # id,label for every logged row


def _json_value(spec: InputSpec, value: Any) -> Any:
    """A raw cell as a client sends it in JSON."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    if spec.kind == "datetime":
        return pd.Timestamp(value).isoformat()
    if spec.kind == "boolean":
        return bool(value)
    return str(value) if spec.dtype == "string" else float(value)


def _serve_batch(
    model: LoadedModel, monitor: Monitor, frame: pd.DataFrame, request_id: str, at: float
) -> list[dict[str, Any]]:
    """The log rows a server writes for one request of ``frame``'s rows."""
    specs = model.manifest.signature.inputs
    records = [{s.name: _json_value(s, row[s.name]) for s in specs} for _, row in frame.iterrows()]
    feeds, rows = feeds_from_records(model.manifest.signature, records)
    outputs = model.runtime.run(feeds)
    return monitor.process_result(
        InferResult(model, rows, "records", request_id, feeds, outputs, at)
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    path = tmp_path_factory.mktemp("monitor-home")
    registry = open_registry(f"sqlite:///{path}/registry.db", str(path / "artifacts"))
    try:
        outcome = train(parse_spec(SPEC), path / "run", registry=registry, actor=ACTOR)
    finally:
        registry.close()
    assert outcome.version is not None and outcome.version.version == 1
    log = PredictionLog(LogConfig(path / "predictions"))
    model = LoadedModel(outcome.bundle_dir, 1, BatchConfig())
    monitor = Monitor(Metrics(), predictions=log)
    now, labels = time.time(), []
    for index, (hours, shift, seed) in enumerate(BATCHES):
        frame = fraud(rows=500, seed=seed, shift=shift)
        rows = _serve_batch(model, monitor, frame, f"req{index}", now - hours * 3600)
        log.write("fraud", rows)
        labels += [(r["id"], str(y)) for r, y in zip(rows, frame["is_fraud"], strict=True)]
    labels_path = path / "labels.csv"
    with labels_path.open("w", newline="") as handle:
        csv.writer(handle).writerows([("id", "label"), *labels])
    return Home(path, labels_path)


def _ferry(home: Home, *args: str) -> Result:
    app, monitor_app = typer.Typer(), typer.Typer()
    app.add_typer(monitor_app, name="monitor")
    register(monitor_app)
    env = {"FERRY_HOME": str(home.path), "FERRY_REGISTRY_URL": None, "FERRY_ARTIFACTS_URL": None}
    return CliRunner().invoke(app, ["monitor", "report", *args], env=env)


def _printed_path(result: Result) -> Path:
    found = re.findall(r"^report: (\S.*?)\s*$", result.stdout, re.MULTILINE)
    assert len(found) == 1, result.stdout
    return Path(found[0])


def test_report_of_the_last_day_flags_the_shifted_amounts(home: Home, tmp_path: Path) -> None:
    result = _ferry(home, "fraud", "--labels", str(home.labels), "-o", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    path = _printed_path(result)
    assert path == tmp_path / "r" / "monitor_report.html"
    document = json.loads((path.parent / "monitor_report.json").read_text())
    assert document["rows"] == 2000 and document["versions"] == {"1": 2000}
    assert "amount" in document["drifted"] and "distance_from_home_km" in document["drifted"]
    # The alarm needs two drifted windows among the last three, as on a server.
    assert [w["drifted"] for w in document["windows"]] == [False, False, True, True]
    assert [w["alarm"] for w in document["windows"]] == [False, False, False, True]
    assert len(document["quality"]) == 4
    assert all(0.5 < w["metrics"]["accuracy"] <= 1.0 for w in document["quality"])
    assert document["labels_given"] == 2500  # the old batch's labels match no row in the period
    text = path.read_text()
    assert text.count("data:image/png;base64,") >= 5 and "http" not in PAYLOAD.sub("", text)
    assert "drifted over the period: " in result.stdout and "amount" in result.stdout


def test_since_selects_the_period_and_the_report_lands_under_ferry_home(home: Home) -> None:
    result = _ferry(home, "fraud", "--since", "200m", "--window", "250")
    assert result.exit_code == 0, result.output
    path = _printed_path(result)
    assert path.parent.parent == home.path / "reports"
    document = json.loads((path.parent / "monitor_report.json").read_text())
    assert document["rows"] == 1000 and document["quality"] is None
    assert len(document["windows"]) == 4 and document["window"] == 250


def test_bad_arguments_and_empty_logs_fail_with_clear_messages(home: Home) -> None:
    bad = _ferry(home, "fraud", "--since", "yesterday")
    assert bad.exit_code == 2
    assert "'yesterday' is not a period" in bad.output and "24h" in bad.output
    missing = _ferry(home, "fraud", "--version", "7")
    assert isinstance(missing.exception, DataError)
    assert "fraud:7" in str(missing.exception) and "1 (2000 rows)" in str(missing.exception)
    empty = _ferry(home, "fraud", "--since", "30m")
    assert isinstance(empty.exception, DataError)
    assert "no logged predictions of 'fraud' in the last 30m" in str(empty.exception)
    assert "ferry serve" in str(empty.exception)
