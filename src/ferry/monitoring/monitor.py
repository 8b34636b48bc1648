"""The server's monitor: takes finished requests from the data plane and, in a background loop,
updates metrics, live drift, the prediction log and the feedback join.

The request path only appends a reference to a bounded deque; when the deque is full the
request is still served and the dropped row is counted.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ferry.monitoring.drift import PREDICTION, DriftConfig, DriftDetector, WindowDrift
from ferry.monitoring.feedback import FeedbackWindow
from ferry.monitoring.metrics import Metrics
from ferry.monitoring.predlog import PredictionStore
from ferry.serving.dataplane import InferResult
from ferry.serving.inputs import concat
from ferry.serving.pool import LoadEvent

log = logging.getLogger("ferry.monitoring")


@dataclass
class MonitorConfig:
    drift: DriftConfig = field(default_factory=DriftConfig)
    max_pending: int = 10_000
    flush_interval_s: float = 0.1  # small batches: the worker thread holds the GIL briefly
    remembered_predictions: int = 100_000
    feedback_window: int = 1000


class Monitor:
    def __init__(
        self,
        metrics: Metrics,
        config: MonitorConfig | None = None,
        predictions: PredictionStore | None = None,
    ) -> None:
        self.metrics, self.config, self.predictions = (
            metrics,
            config or MonitorConfig(),
            predictions,
        )
        self.pending: deque[InferResult] = deque()
        self.detectors: dict[tuple[str, int], DriftDetector] = {}
        self.last_windows: dict[tuple[str, int], WindowDrift] = {}
        self.recent: OrderedDict[str, tuple[str, int, Any, float | None]] = OrderedDict()
        self.feedback: dict[tuple[str, int], FeedbackWindow] = {}
        self.unwritten: dict[str, list[dict[str, Any]]] = {}
        self.unwritten_labels: dict[str, list[dict[str, Any]]] = {}
        # Retraining's scheduler listens to drift windows (called from the worker thread).
        self.window_listeners: list[Callable[[str, int, WindowDrift], None]] = []
        self.lock = threading.Lock()  # collect() runs in a worker thread and on feedback

    # hot path --------------------------------------------------------------------------
    def on_infer(self, result: InferResult) -> None:
        if len(self.pending) >= self.config.max_pending:
            self.metrics.log_dropped.labels(result.model.name).inc(result.rows)
            return
        self.pending.append(result)

    def on_request(self, protocol: str, model: str, status: str, seconds: float) -> None:
        self.metrics.requests.labels(model, protocol, status).inc()
        self.metrics.latency.labels(model, protocol).observe(seconds)

    def on_in_flight(self, model: str, change: int) -> None:
        self.metrics.in_flight.labels(model).inc(change)

    def on_load(self, event: LoadEvent) -> None:
        self.metrics.loads.labels(event.name, "ok" if event.ok else "failed").inc()

    # background ------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_interval_s)
            await self.flush()

    def collect(self) -> None:
        """Process every pending request; log rows wait in ``unwritten`` for the next flush.

        Requests are merged per model version first, so the numpy work runs once per batch of
        requests rather than once per request.
        """
        with self.lock:
            batch = [self.pending.popleft() for _ in range(len(self.pending))]
            for group in _by_model(batch):
                try:
                    rows = self.process(*_merge(group))
                except Exception:  # monitoring must never take serving down
                    log.exception("monitoring failed for %s", group[0].model.name)
                    continue
                self.unwritten.setdefault(group[0].model.name, []).extend(rows)

    async def flush(self) -> None:
        # In a thread: the event loop keeps answering requests while a large batch is processed.
        await asyncio.to_thread(self.collect)
        unwritten, self.unwritten = self.unwritten, {}
        labels, self.unwritten_labels = self.unwritten_labels, {}
        if self.predictions is not None:
            for model, logged in unwritten.items():
                await asyncio.to_thread(self.predictions.write, model, logged)
            # Every label is kept, matched here or not: another replica may have logged its row,
            # and retraining joins labels with the whole log.
            for model, rows in labels.items():
                await asyncio.to_thread(self.predictions.write_labels, model, rows)

    def process_result(self, result: InferResult) -> list[dict[str, Any]]:
        """Process one finished request now; returns its prediction-log rows."""
        return self.process(*_merge([result]))

    def process(
        self, result: InferResult, ids: list[str], times: list[float], requests: int = 1
    ) -> list[dict[str, Any]]:
        model = result.model
        version = str(model.version)
        if result.role == "shadow":
            # Never returned to anyone: logged for comparison, but kept out of the served
            # counts, drift and the feedback join (late labels judge the answer given).
            labels, scores = self._predictions(result)
            return self._log_rows(result, ids, times, labels, scores)
        self.metrics.rollout_requests.labels(model.name, version, result.role).inc(requests)
        quality = model.count_quality(result.feeds)
        for kind in ("missing", "out_of_range", "unseen"):
            self.metrics.count_quality(model.name, version, kind, getattr(quality, kind))
        labels, scores = self._predictions(result)
        self._count_predictions(model.name, version, labels, scores)
        self._drift(result, labels, scores)
        self._remember(ids, model.name, model.version, labels, scores)
        return self._log_rows(result, ids, times, labels, scores)

    def _predictions(self, result: InferResult) -> tuple[np.ndarray, np.ndarray | None]:
        model = result.model
        if model.manifest.task == "regression":
            values = next(iter(result.outputs.values())).reshape(-1)
            return values, None
        proba = result.outputs["probabilities"]
        scores = proba[:, 1] if model.manifest.task == "binary" else None
        return model.decide(result.outputs), scores

    def _count_predictions(
        self, name: str, version: str, labels: np.ndarray, scores: np.ndarray | None
    ) -> None:
        if labels.dtype == object:
            values, counts = np.unique(labels.astype(str), return_counts=True)
            for value, count in zip(values, counts, strict=True):
                self.metrics.classes.labels(name, version, value).inc(int(count))
        if scores is not None:
            histogram = self.metrics.scores.labels(name, version)
            for score in scores:
                histogram.observe(float(score))

    def _drift(self, result: InferResult, labels: np.ndarray, scores: np.ndarray | None) -> None:
        model = result.model
        if model.manifest.reference is None:
            return
        key = (model.name, model.version)
        detector = self.detectors.get(key)
        if detector is None:
            detector = self.detectors[key] = DriftDetector(
                model.manifest.reference, self.config.drift
            )
        columns = {n: v.reshape(-1) for n, v in result.feeds.items()}
        columns[PREDICTION] = _prediction_column(model.manifest.task, result, labels, scores)
        for window in detector.add(columns):
            self.last_windows[key] = window
            self._export_window(model.name, str(model.version), window)
            for listener in self.window_listeners:
                listener(model.name, model.version, window)

    def _export_window(self, name: str, version: str, window: WindowDrift) -> None:
        for feature in window.features:
            self.metrics.drift_p.labels(name, version, feature.feature).set(feature.p_value)
            self.metrics.drift_flag.labels(name, version, feature.feature).set(feature.drifted)
        self.metrics.drift_share.labels(name, version).set(window.drifted_share)
        self.metrics.drift_alarm.labels(name, version).set(window.alarm)

    def _remember(
        self, ids: list[str], name: str, version: int, labels: np.ndarray, scores: np.ndarray | None
    ) -> None:
        for i, row_id in enumerate(ids):
            score = None if scores is None else float(scores[i])
            self.recent[f"{name}/{row_id}"] = (name, version, labels[i], score)
        while len(self.recent) > self.config.remembered_predictions:
            self.recent.popitem(last=False)

    def _log_rows(
        self,
        result: InferResult,
        ids: list[str],
        times: list[float],
        labels: np.ndarray,
        scores: np.ndarray | None,
    ) -> list[dict[str, Any]]:
        if self.predictions is None:
            return []
        inputs = {n: v.reshape(-1).tolist() for n, v in result.feeds.items()}
        rows = []
        for i, row_id in enumerate(ids):
            if not self.predictions.sampled():
                continue
            row = {
                "id": row_id,
                "time": times[i],
                "model": result.model.name,
                "version": result.model.version,
                "inputs": {n: _plain(values[i]) for n, values in inputs.items()},
                "prediction": _plain(labels[i]),
            }
            if scores is not None:
                row["score"] = float(scores[i])
            if result.role != "primary":  # primary rows stay as they always were
                row["role"] = result.role
            rows.append(row)
        return rows

    # feedback --------------------------------------------------------------------------
    def add_feedback(self, name: str, items: list[dict[str, Any]]) -> dict[str, int]:
        self.collect()  # labels may arrive before the background loop has seen their rows
        now = time.time()
        self.unwritten_labels.setdefault(name, []).extend(
            {"id": str(item["id"]), "time": now, "label": item["label"]} for item in items
        )
        matched = unknown = 0
        for item in items:
            remembered = self.recent.get(f"{name}/{item['id']}")
            if remembered is None:
                unknown += 1
                continue
            _, version, predicted, score = remembered
            window = self.feedback.setdefault(
                (name, version), FeedbackWindow(self.config.feedback_window)
            )
            window.add(item["label"], predicted, score)
            matched += 1
        self.metrics.feedback.labels(name, "matched").inc(matched)
        self.metrics.feedback.labels(name, "unknown").inc(unknown)
        self._export_feedback(name)
        return {"matched": matched, "unknown": unknown}

    def _export_feedback(self, name: str) -> None:
        for (model, version), window in self.feedback.items():
            if model != name:
                continue
            for metric, value in window.metrics().items():
                self.metrics.live_quality.labels(model, str(version), metric).set(value)


def _by_model(results: list[InferResult]) -> list[list[InferResult]]:
    groups: dict[tuple[int, str], list[InferResult]] = {}
    for result in results:
        # By role too: one version can answer as primary and run as another's shadow.
        groups.setdefault((id(result.model), result.role), []).append(result)
    return list(groups.values())


def _merge(group: list[InferResult]) -> tuple[InferResult, list[str], list[float], int]:
    """One InferResult holding every row of the group (one model and role), with each row's
    id and time, and how many requests it merges."""
    ids = [row_id for r in group for row_id in row_ids(r.request_id, r.rows)]
    times = [r.at for r in group for _ in range(r.rows)]
    if len(group) == 1:
        return group[0], ids, times, 1
    first = group[0]
    merged = InferResult(
        first.model,
        sum(r.rows for r in group),
        first.protocol,
        first.request_id,
        concat([r.feeds for r in group]),
        concat([r.outputs for r in group]),
        group[-1].at,
        first.role,
    )
    return merged, ids, times, len(group)


def row_ids(request_id: str, rows: int) -> list[str]:
    """Single-row requests keep the request id; rows of a batch are ``id/0``, ``id/1``, ..."""
    return [request_id] if rows == 1 else [f"{request_id}/{i}" for i in range(rows)]


def _prediction_column(
    task: str, result: InferResult, labels: np.ndarray, scores: np.ndarray | None
) -> np.ndarray:
    if task == "binary" and scores is not None:
        return scores.astype(np.float64)
    if task == "multiclass":
        return np.argmax(result.outputs["probabilities"], axis=1).astype(str)
    return labels.astype(np.float64)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    return value.item() if isinstance(value, np.generic) else value


__all__ = ["Monitor", "MonitorConfig", "row_ids", "time"]
