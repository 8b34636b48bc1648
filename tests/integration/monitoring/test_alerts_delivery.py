"""Alert delivery for real: an Alertmanager-shaped POST to a local HTTP receiver, registry
events in SQLite, failures that never raise, and the engine wired into a served app."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.core.bundle import BundleManifest, Metrics, write_bundle
from ferry.core.signature import InputSpec, OutputSpec, Signature
from ferry.core.spec import AccuracyDropRule, DriftShareRule, LatencyP99Rule, parse_spec
from ferry.monitoring import alerts as alerts_module
from ferry.monitoring.alerts import AlertEngine, attach_alerts
from ferry.monitoring.drift import FeatureDrift, WindowDrift
from ferry.monitoring.metrics import Metrics as PromMetrics
from ferry.monitoring.metrics import scrape
from ferry.monitoring.monitor import Monitor
from ferry.registry import Registry, open_registry

T0 = 1_700_000_000.0


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1:0 that records JSON bodies and answers ``status``."""

    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    delay_s: float = 0.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.bodies.append(json.loads(body))
            time.sleep(state.delay_s)
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield state
    server.shutdown()
    server.server_close()


def _tiny_bundle(root: Path, name: str) -> Path:
    manifest = BundleManifest(
        name=name,
        task="binary",
        signature=Signature(
            inputs=[InputSpec(name="x", dtype="float32")],
            outputs=[OutputSpec(name="label", dtype="int64", shape=[-1])],
        ),
        metrics=Metrics(test={"accuracy": 0.9}),
    )
    directory = root / "bundles" / name
    write_bundle(directory, manifest, b"fake-onnx-bytes")
    return directory


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with open_registry(f"sqlite:///{tmp_path}/r.db", str(tmp_path / "art")) as opened:
        opened.register("fraud", _tiny_bundle(tmp_path, "fraud"), actor="tester")
        yield opened


def drifted(share_of_four: int) -> WindowDrift:
    features = [
        FeatureDrift(f"x{i}", "chi2", 0.0, 0.5, 0.0, 5, i < share_of_four) for i in range(4)
    ]
    return WindowDrift(500, features, share_of_four > 0)


def test_firing_and_resolved_reach_the_webhook_and_the_registry(
    receiver: Receiver, registry: Registry
) -> None:
    monitor = Monitor(PromMetrics())
    engine = AlertEngine(
        [DriftShareRule(threshold=0.3, for_s=60, severity="critical")],
        monitor,
        registry,
        receiver.url,
        actor="ferry-test",
        external_url="http://ferry.example:8080",
    )

    async def scenario() -> None:
        monitor.last_windows[("fraud", 1)] = drifted(3)
        assert await engine.tick(T0) == []  # pending: nothing sent
        assert len(await engine.tick(T0 + 60)) == 1
        monitor.last_windows[("fraud", 1)] = drifted(0)
        assert len(await engine.tick(T0 + 90)) == 1
        await engine.aclose()

    asyncio.run(scenario())
    assert [b["status"] for b in receiver.bodies] == ["firing", "resolved"]
    firing, resolved = receiver.bodies
    assert firing["version"] == "4" and firing["receiver"] == "ferry"
    assert firing["groupKey"] == '{}:{alertname="FerryDriftShareHigh", model="fraud"}'
    labels = {
        "alertname": "FerryDriftShareHigh",
        "model": "fraud",
        "version": "1",
        "severity": "critical",
    }
    assert firing["commonLabels"] == labels
    (alert,) = firing["alerts"]
    assert alert["labels"] == labels
    assert alert["startsAt"] == "2023-11-14T22:14:20.000Z"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["generatorURL"] == "http://ferry.example:8080/metrics"
    assert alert["annotations"]["summary"] == "fraud:1: 0.75 of the features drifted"
    assert "above 0.3" in alert["annotations"]["description"]
    assert len(alert["fingerprint"]) == 16
    (ended,) = resolved["alerts"]
    assert ended["fingerprint"] == alert["fingerprint"] and ended["startsAt"] == alert["startsAt"]
    assert ended["endsAt"] == "2023-11-14T22:14:50.000Z"

    events = [e for e in registry.events("fraud") if e.kind.startswith("alert_")]
    assert [e.kind for e in events] == ["alert_resolved", "alert_firing"]  # newest first
    fired = events[1]
    assert (fired.actor, fired.version) == ("ferry-test", 1)
    assert fired.reason == "fraud:1: 0.75 of the features drifted"
    assert fired.details["alertname"] == "FerryDriftShareHigh"
    assert fired.details["value"] == 0.75 and fired.details["severity"] == "critical"
    assert fired.details["fingerprint"] == alert["fingerprint"]
    assert events[0].details["endsAt"] == "2023-11-14T22:14:50.000Z"
    assert engine.webhook_failures == 0 and engine.event_failures == 0


def test_delivery_failures_are_counted_and_never_raise(
    receiver: Receiver, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(alerts_module, "WEBHOOK_TIMEOUT_S", 0.2)
    monitor = Monitor(PromMetrics())
    engine = AlertEngine([DriftShareRule(for_s=0)], monitor, registry, receiver.url)
    # "ghost" is not in the registry (served from a bundle directory, say): no event, no raise.
    monitor.last_windows[("ghost", 1)] = drifted(4)

    async def scenario() -> None:
        receiver.status = 500
        await engine.tick(T0)  # fires: webhook answers 500
        monitor.last_windows.clear()
        receiver.status, receiver.delay_s = 200, 1.0
        await engine.tick(T0 + 1)  # resolves: webhook too slow
        engine.webhook_url = "http://127.0.0.1:9/closed"  # nothing listens on the discard port
        monitor.last_windows[("ghost", 1)] = drifted(4)
        await engine.tick(T0 + 2)
        await engine.aclose()

    asyncio.run(scenario())
    assert engine.webhook_failures == 3
    assert engine.event_failures == 3
    assert len(receiver.bodies) == 2  # both were sent; neither was acknowledged
    assert [e.kind for e in registry.events("fraud")] == ["registered"]


def test_run_loop_survives_a_failing_evaluation(registry: Registry) -> None:
    monitor = Monitor(PromMetrics())
    engine = AlertEngine([DriftShareRule(for_s=0)], monitor)
    calls = []

    def broken(now: float | None = None) -> list[Any]:
        calls.append(now)
        raise RuntimeError("boom")

    engine.evaluate = broken  # type: ignore[method-assign]

    async def scenario() -> None:
        task = asyncio.create_task(engine.run(0.01))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert len(calls) >= 2  # kept evaluating after the first failure


# ---- wired into a served app -----------------------------------------------------------------


@pytest.fixture(scope="module")
def cancer_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ferry.lab import train

    spec = parse_spec(
        {
            "name": "cancer",
            "task": "classification",
            "data": {"source": "builtin:breast_cancer", "target": "target"},
            "search": {"families": ["logistic"], "trials": 1, "time_budget_s": 10, "folds": 2},
        }
    )
    return train(spec, tmp_path_factory.mktemp("lab")).bundle_dir


@asynccontextmanager
async def served_app(registry: Registry, cache: Path, refs: list[str]) -> Any:
    from ferry.serving.dataplane import DataPlane
    from ferry.serving.pool import ModelPool, PoolConfig
    from ferry.serving.rest import build_app

    pool = ModelPool(registry, cache, PoolConfig())
    plane = DataPlane(pool)
    metrics = PromMetrics()
    monitor = Monitor(metrics)
    plane.on_infer.append(monitor.on_infer)
    plane.on_request.append(monitor.on_request)
    plane.feedback_handler = monitor.add_feedback
    plane.scraper = lambda: scrape(metrics)
    for ref in refs:
        await pool.add(ref)
    app = build_app(plane)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield plane, monitor, client
    finally:
        await pool.close()


def test_attached_engine_alerts_on_served_traffic_and_late_labels(
    receiver: Receiver, tmp_path: Path, cancer_bundle: Path
) -> None:
    from ferry.data.load import load_dataset

    registry = open_registry(f"sqlite:///{tmp_path}/r.db", str(tmp_path / "art"))
    registry.register("cancer", cancer_bundle, actor="tester")
    frame = load_dataset("builtin:breast_cancer").drop(columns=["target"]).head(100)
    rows = [{k: float(v) for k, v in row.items()} for row in frame.to_dict("records")]
    rules = [
        LatencyP99Rule(threshold_ms=0.0001, for_s=0, min_requests=5),  # every request is over
        AccuracyDropRule(drop=0.05, min_labels=50, for_s=0),
    ]

    async def scenario() -> tuple[AlertEngine, list[Any]]:
        async with served_app(registry, tmp_path / "cache", ["cancer:1"]) as (plane, monitor, c):
            engine = attach_alerts(plane, monitor, rules, webhook_url=receiver.url)
            assert engine.registry is registry  # the pool's, by default
            ids = []
            for start in range(0, 100, 20):
                body = {"instances": rows[start : start + 20]}
                answer = (await c.post("/v1/models/cancer:predict", json=body)).json()
                ids += [
                    (f"{answer['id']}/{i}", p["label"]) for i, p in enumerate(answer["predictions"])
                ]
            await monitor.flush()
            wrong = [{"id": i, "label": "1" if label == "0" else "0"} for i, label in ids]
            reply = await c.post("/v2/models/cancer/feedback", json=wrong)
            assert reply.json() == {"matched": 100, "unknown": 0}
            changes = await engine.tick()
            await engine.aclose()
            return engine, changes

    engine, changes = asyncio.run(scenario())
    assert sorted(c.alert.rule.alertname for c in changes) == [
        "FerryLatencyP99High",
        "FerryLiveQualityDropped",
    ]
    by_name = {b["alerts"][0]["labels"]["alertname"]: b for b in receiver.bodies}
    latency = by_name["FerryLatencyP99High"]["alerts"][0]
    assert latency["labels"] == {
        "alertname": "FerryLatencyP99High",
        "model": "cancer",
        "severity": "warning",
    }
    dropped = by_name["FerryLiveQualityDropped"]["alerts"][0]
    assert dropped["labels"]["version"] == "1"
    baseline = registry.get("cancer", 1).metrics["test"]["accuracy"]
    change = next(c for c in changes if c.alert.rule.alertname == "FerryLiveQualityDropped")
    assert change.alert.details == {"live": 0.0, "baseline": baseline}
    assert math.isclose(change.alert.value, baseline)
    kinds = [(e.kind, e.version) for e in registry.events("cancer")]
    assert ("alert_firing", None) in kinds and ("alert_firing", 1) in kinds
    assert engine.webhook_failures == 0 and engine.event_failures == 0
    registry.close()
