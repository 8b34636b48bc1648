"""`ferry monitor rules` and `ferry monitor feedback` as a user runs them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from ferry.monitoring.predlog import LogConfig, PredictionLog


def _ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def test_rules_file_passes_promtool(ferry: Any, bc_spec: Callable[..., Path]) -> None:
    spec = bc_spec(
        ferry.cwd / "ferry.yaml",
        constraints={"max_latency_p99_ms": 20},
        monitoring={
            "alerts": [
                {"kind": "drift_share", "threshold": 0.4, "for_s": 120},
                {"kind": "accuracy_below", "threshold": 0.9, "severity": "critical"},
                {"kind": "accuracy_drop", "drop": 0.03},
                {"kind": "latency_p99"},
                {"kind": "error_rate", "threshold": 0.01},
            ]
        },
    )
    bad = bc_spec(ferry.cwd / "bad.yaml", monitoring={"alerts": [{"kind": "latency_p99"}]})
    written, printed, failed = ferry.many(
        ("monitor", "rules", spec, "-o", "rules.yml"),
        ("monitor", "rules", spec),
        ("monitor", "rules", bad),
    )
    assert "wrote rules.yml: 5 alert rule(s) for bc" in written.ok().stdout
    on_disk = (ferry.cwd / "rules.yml").read_text()
    assert printed.ok().stdout == on_disk
    rules = yaml.safe_load(on_disk)["groups"][0]["rules"]
    assert [r["alert"] for r in rules][:2] == ["FerryDriftShareHigh", "FerryLiveQualityLow"]
    assert rules[0]["for"] == "120s" and "> 20" in rules[3]["expr"]
    assert failed.error_line() == "error: bad.yaml is invalid:"  # then one line per problem
    assert "  - monitoring.alerts.0.threshold_ms: required because" in failed.stderr

    promtool = shutil.which("promtool")
    if promtool is None:
        reason = "promtool (Debian package prometheus) is not installed"
        if _ci():
            pytest.fail(f"{reason}; CI is set, so the promtool check must run")
        pytest.skip(f"{reason}; `apt-get install prometheus` to run the promtool check")
    checked = subprocess.run(
        [promtool, "check", "rules", "rules.yml"],
        cwd=ferry.cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout


def _log_predictions(home: Path) -> list[dict[str, Any]]:
    """What `ferry serve` logs: rows of two versions of "fraud" with labels "0"/"1"."""
    log = PredictionLog(LogConfig(home / "predictions", max_file_bytes=2000))
    rows = [
        {
            "id": f"req{i // 10}/{i % 10}",
            "time": time.time(),
            "model": "fraud",
            "version": 1 if i < 60 else 2,
            "inputs": {"amount": float(i)},
            "prediction": "1" if i % 4 == 0 else "0",
            "score": 0.9 if i % 4 == 0 else 0.1,
        }
        for i in range(100)
    ]
    for start in range(0, 100, 25):  # several flushes, several rotated files
        log.write("fraud", rows[start : start + 25])
    return rows


def test_feedback_joins_labels_with_the_prediction_log(ferry: Any) -> None:
    rows = _log_predictions(ferry.home)
    assert len(list((ferry.home / "predictions" / "fraud").glob("*.jsonl"))) > 1
    # Truth: version 1 is always right; version 2 is wrong on every predicted "1".
    lines = ["id,label"]
    for row in rows:
        truth = row["prediction"] if row["version"] == 1 or row["prediction"] == "0" else "0"
        lines.append(f"{row['id']},{truth}")
    lines += ["never-served,1", "req99/0,0"]
    (ferry.cwd / "labels.csv").write_text("\n".join(lines) + "\n")
    (ferry.cwd / "labels.json").write_text(
        json.dumps({"labels": [{"id": "req0/0", "label": 1}, {"id": "nope", "label": 0}]})
    )
    (ferry.cwd / "bad.csv").write_text("request,label\nreq0/0,1\n")
    csv_run, json_run, bad, missing = ferry.many(
        ("monitor", "feedback", "fraud", "labels.csv", "--home", ferry.home),
        ("monitor", "feedback", "fraud", "labels.json"),  # FERRY_HOME from the environment
        ("monitor", "feedback", "fraud", "bad.csv"),
        ("monitor", "feedback", "other", "labels.csv"),
    )
    out = csv_run.ok().stdout
    assert "matched: 100" in out and "unknown: 2" in out
    table = {m[0]: m[1:] for m in re.findall(r"│\s*(\d+)\s*│\s*(\d+)\s*│\s*([\d.]+)", out)}
    # version 1: 60 labels, all right; version 2: 40 labels, its 10 predicted "1"s wrong.
    assert table == {"1": ("60", "1.0000"), "2": ("40", "0.7500")}
    json_out = json_run.ok().stdout
    assert "matched: 1" in json_out and "unknown: 1" in json_out
    assert "expected a header with columns id,label; found ['request', 'label']" in (
        bad.single_error_line()
    )
    assert "no prediction log for model 'other'" in missing.single_error_line()


def test_feedback_for_a_regression_model_reports_errors(ferry: Any) -> None:
    log = PredictionLog(LogConfig(ferry.home / "predictions"))
    rows = [
        {"id": f"r{i}", "time": 0.0, "model": "dia", "version": 4, "prediction": 100.0 + i}
        for i in range(10)
    ]
    log.write("dia", rows)
    good = "\n".join(["id,label", *(f"r{i},{103.0 + i}" for i in range(10))])  # off by 3
    (ferry.cwd / "good.csv").write_text(good + "\n")
    (ferry.cwd / "bad.csv").write_text("id,label\nr1,tall\n")
    ok, bad = ferry.many(
        ("monitor", "feedback", "dia", "good.csv"), ("monitor", "feedback", "dia", "bad.csv")
    )
    out = ok.ok().stdout
    assert "matched: 10" in out and "unknown: 0" in out
    assert re.search(r"│\s*4\s*│\s*10\s*│\s*3\.0000\s*│\s*3\.0000\s*│", out), out  # rmse, mae
    assert "label 'tall' for id 'r1' is not a number" in bad.single_error_line()


class _Feedback(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str | None, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((self.path, self.headers.get("Authorization"), body))
        if not self.path.startswith("/v2/models/fraud/"):
            reply, status = {"error": "model 'x' is not served here"}, 404
        else:
            reply, status = {"matched": len(body) - 1, "unknown": 1}, 200
        payload = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def feedback_server() -> Iterator[str]:
    _Feedback.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Feedback)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_feedback_sends_labels_to_a_running_server(ferry: Any, feedback_server: str) -> None:
    (ferry.cwd / "labels.csv").write_text("id,label\na,1\nb,0\nc,1\n")
    sent, refused, down = ferry.many(
        ("monitor", "feedback", "fraud", "labels.csv", "--url", feedback_server),
        ("monitor", "feedback", "x", "labels.csv", "--url", feedback_server),
        ("monitor", "feedback", "fraud", "labels.csv", "--url", "http://127.0.0.1:9"),
        timeout=60,
    )
    out = sent.ok().stdout
    assert "matched: 2" in out and "unknown: 1" in out
    path, auth, body = next(r for r in _Feedback.received if "fraud" in r[0])
    assert path == "/v2/models/fraud/feedback" and auth is None
    assert body == [{"id": "a", "label": "1"}, {"id": "b", "label": "0"}, {"id": "c", "label": "1"}]
    assert "refused the labels: HTTP 404: model 'x' is not served here" in refused.error_line()
    assert "cannot send labels to http://127.0.0.1:9/v2/models/fraud/feedback" in down.error_line()
    with_token = ferry(
        "monitor", "feedback", "fraud", "labels.csv", "--url", feedback_server,
        env={"FERRY_TOKEN": "s3cret"},
    )  # fmt: skip
    with_token.ok()
    assert _Feedback.received[-1][1] == "Bearer s3cret"
