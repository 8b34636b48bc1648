"""Monitoring inside a served app: metrics, live drift, feedback join, prediction log."""

from pathlib import Path
from typing import Any

import orjson
import pytest

from ferry.data.builtin import fraud as fraud_rows
from ferry.monitoring.drift import DriftConfig
from ferry.monitoring.metrics import Metrics, scrape
from ferry.monitoring.monitor import Monitor, MonitorConfig
from ferry.monitoring.predlog import LogConfig, PredictionLog

pytestmark = pytest.mark.anyio


def attach(plane: Any, tmp_path: Path, **config: Any) -> Monitor:
    metrics = Metrics()
    log = PredictionLog(LogConfig(tmp_path / "predictions"))
    monitor = Monitor(metrics, MonitorConfig(**config), log)
    plane.on_infer.append(monitor.on_infer)
    plane.on_request.append(monitor.on_request)
    plane.on_in_flight.append(monitor.on_in_flight)
    for model in plane.pool.loaded.values():
        metrics.watch_model(model)
    plane.feedback_handler = monitor.add_feedback
    plane.scraper = lambda: scrape(metrics)
    return monitor


def series(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def send(client: Any, case: Any, shift: float, rows: int, seed: int) -> list[str]:
    frame = fraud_rows(rows=rows, seed=seed, shift=shift)
    ids = []
    for start in range(0, rows, 50):
        body = {"instances": case.records(frame.iloc[start : start + 50])}
        response = await client.post("/v1/models/fraud:predict", json=body)
        assert response.status_code == 200
        ids.append(response.json()["id"])
    return ids


async def test_drift_alarms_on_shifted_traffic_only(serve: Any, fraud: Any, tmp_path: Path) -> None:
    async with serve([str(fraud.bundle)]) as served:
        monitor = attach(served.plane, tmp_path, drift=DriftConfig(window=200, alpha=0.001))
        await send(served.client, fraud, 0.0, 1000, seed=11)
        await monitor.flush()
        text = (await served.client.get("/metrics")).text
        assert series(text, "ferry_drift_alarm", model="fraud") == 0.0
        await send(served.client, fraud, 2.0, 600, seed=12)
        await monitor.flush()
        text = (await served.client.get("/metrics")).text
        assert series(text, "ferry_drift_alarm", model="fraud") == 1.0
        assert series(text, "ferry_drift_flag", model="fraud", feature="amount") == 1.0
        assert (series(text, "ferry_drift_share_ratio", model="fraud") or 0) > 0


async def test_feedback_joins_logged_predictions(serve: Any, fraud: Any, tmp_path: Path) -> None:
    async with serve([str(fraud.bundle)]) as served:
        monitor = attach(served.plane, tmp_path)
        frame = fraud_rows(rows=100, seed=13)
        ids = await send(served.client, fraud, 0.0, 100, seed=13)
        labels = [
            {"id": f"{ids[i // 50]}/{i % 50}", "label": str(int(frame.is_fraud.iloc[i]))}
            for i in range(100)
        ]
        response = await served.client.post(
            "/v2/models/fraud/feedback", json=[*labels, {"id": "never-served", "label": "1"}]
        )
        assert response.json() == {"matched": 100, "unknown": 1}
        await monitor.flush()
        text = (await served.client.get("/metrics")).text
        accuracy = series(text, "ferry_feedback_quality", model="fraud", metric="accuracy")
        assert accuracy is not None and 0.0 <= accuracy <= 1.0
        assert series(text, "ferry_feedback_labels_total", result="unknown") == 1.0
        logged = [
            orjson.loads(line)
            for path in (tmp_path / "predictions" / "fraud").glob("*.jsonl")
            for line in path.read_bytes().splitlines()
        ]
        assert len(logged) == 100 and {row["id"] for row in logged} == {i["id"] for i in labels}
        bad = await served.client.post("/v2/models/fraud/feedback", json=[{"id": 1}])
        assert bad.status_code == 400


async def test_request_metrics_and_bounded_queue(serve: Any, fraud: Any, tmp_path: Path) -> None:
    async with serve([str(fraud.bundle)]) as served:
        monitor = attach(served.plane, tmp_path, max_pending=2)
        await send(served.client, fraud, 0.0, 250, seed=14)  # 5 requests, 2 fit in the queue
        assert (await served.client.post("/v2/models/fraud/infer", content=b"{")).status_code == 400
        text = (await served.client.get("/metrics")).text
        assert series(text, "ferry_serving_requests_total", status="200") == 5.0
        assert series(text, "ferry_serving_requests_total", status="400") == 1.0
        assert series(text, "ferry_log_dropped_rows_total", model="fraud") == 150.0
        assert series(text, "ferry_serving_in_flight_requests", model="fraud") == 0.0
        assert series(text, "ferry_batching_batch_rows_count", model="fraud") == 5.0
        await monitor.flush()
        assert (
            series(
                (await served.client.get("/metrics")).text,
                "ferry_quality_missing_values_total",
                input="customer_age",
            )
            is not None
        )
