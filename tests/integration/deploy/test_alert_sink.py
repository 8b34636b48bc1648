"""deploy/compose/config/alert_sink.py, the compose stack's webhook receiver: it answers what
Alertmanager and the Ferry server post, prints one line per alert and survives bad bodies."""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

SINK = Path(__file__).resolve().parents[3] / "deploy" / "compose" / "config" / "alert_sink.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("alert_sink", SINK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def sink_url() -> Iterator[str]:
    module = _module()
    server = module.ThreadingHTTPServer(("127.0.0.1", 0), module.Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def notification(status: str) -> dict[str, Any]:
    """An Alertmanager webhook body (version 4), as both senders post it."""
    return {
        "version": "4",
        "status": status,
        "receiver": "ferry-webhook",
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": "FerryDriftShareHigh", "model": "fraud", "version": "3"},
                "annotations": {"summary": "fraud:3: 0.4 of the features drifted"},
            },
            {
                "status": status,
                "labels": {"alertname": "FerryErrorRateHigh", "model": "fraud"},
                "annotations": {"summary": "fraud: 0.1 of requests failed"},
            },
        ],
    }


def test_prints_one_line_per_alert(sink_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with httpx.Client(timeout=10) as client:
        assert client.get(f"{sink_url}/").status_code == 200  # the health check
        posted = client.post(f"{sink_url}/alertmanager", json=notification("firing"))
        assert posted.status_code == 200
        assert client.post(f"{sink_url}/ferry", json=notification("resolved")).status_code == 200
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(x["from"], x["status"], x["labels"]["alertname"]) for x in lines] == [
        ("/alertmanager", "firing", "FerryDriftShareHigh"),
        ("/alertmanager", "firing", "FerryErrorRateHigh"),
        ("/ferry", "resolved", "FerryDriftShareHigh"),
        ("/ferry", "resolved", "FerryErrorRateHigh"),
    ]
    assert lines[0]["summary"] == "fraud:3: 0.4 of the features drifted"


def test_bad_bodies_are_refused_and_the_sink_keeps_serving(
    sink_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with httpx.Client(timeout=10) as client:
        bad = client.post(f"{sink_url}/alertmanager", content=b"{not json")
        assert bad.status_code == 400
        assert client.post(f"{sink_url}/alertmanager", json=[1, 2]).status_code == 200
        assert client.post(f"{sink_url}/ferry", json=notification("firing")).status_code == 200
    assert len(capsys.readouterr().out.splitlines()) == 2
