"""Alerts evaluated in the server: the rules of ``ferry.yaml`` on the monitor's live state.

Each rule is judged per served model (drift and live quality per model version) at every
evaluation. As in Prometheus, a condition that starts to hold makes the alert *pending*; once it
has held for ``for_s`` the alert *fires*, and when it stops holding a firing alert is
*resolved* (a pending one is dropped quietly). Every firing and resolved change is logged,
recorded as a registry event (``alert_firing`` / ``alert_resolved``) and POSTed to the webhook
in Alertmanager's webhook JSON (version 4). Delivery failures are logged and counted and never
reach the request path.

Request outcomes (error rate, p99 latency) come from the data plane's ``on_request`` hook into a
few seconds-wide buckets that hold Prometheus's latency histogram buckets, so the p99 here is
computed as ``histogram_quantile`` computes it from the exported series.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import httpx

from ferry.core.spec import (
    LIVE_METRICS,
    AccuracyBelowRule,
    AccuracyDropRule,
    AlertRule,
    DriftShareRule,
    ErrorRateRule,
    LatencyP99Rule,
    MonitoringSpec,
    Spec,
)
from ferry.errors import FerryError
from ferry.monitoring.metrics import LATENCY_BUCKETS
from ferry.monitoring.monitor import Monitor
from ferry.monitoring.rules import (
    Reading,
    RequestStats,
    describe,
    is_server_error,
    quality_reading,
    quantile,
    request_reading,
    rules_of,
)

if TYPE_CHECKING:
    from ferry.registry.service import Registry
    from ferry.serving.dataplane import DataPlane

log = logging.getLogger("ferry.monitoring.alerts")

Key = tuple[str, int]
Served = Callable[[], Mapping[Key, Mapping[str, float]]]  # (name, version) -> test metrics
NEVER = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert still firing
WEBHOOK_TIMEOUT_S = 5.0
BUCKET_S = 5.0
MAX_MODELS = 256  # request windows kept; model names come from request paths
LIVE_METRICS_ALL = frozenset(m for metrics in LIVE_METRICS.values() for m in metrics)


# ---- request outcomes ------------------------------------------------------------------------


@dataclass
class _Bucket:
    index: int
    count: int = 0
    errors: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))


class RequestWindow:
    """Per model: request counts, server errors and a latency histogram in time buckets."""

    def __init__(self, span_s: float = 3600.0) -> None:
        self.span_s = span_s
        self.models: dict[str, deque[_Bucket]] = {}

    def add(self, model: str, failed: bool, seconds: float, now: float) -> None:
        index = int(now // BUCKET_S)
        buckets = self.models.get(model)
        if buckets is None:
            if len(self.models) >= MAX_MODELS:
                return
            buckets = self.models[model] = deque()
        if not buckets or buckets[-1].index != index:
            buckets.append(_Bucket(index))
            oldest = int((now - self.span_s) // BUCKET_S)
            while buckets[0].index < oldest:
                buckets.popleft()
        bucket = buckets[-1]
        bucket.count += 1
        bucket.errors += failed
        bucket.latency[bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def stats(self, model: str, now: float, window_s: float) -> RequestStats:
        first = int((now - window_s) // BUCKET_S) + 1
        count = errors = 0
        histogram = [0] * (len(LATENCY_BUCKETS) + 1)
        for bucket in self.models.get(model, ()):
            if bucket.index >= first:
                count, errors = count + bucket.count, errors + bucket.errors
                histogram = [a + b for a, b in zip(histogram, bucket.latency, strict=True)]
        return RequestStats(count, errors, quantile(0.99, histogram) if count else None)


# ---- alerts ----------------------------------------------------------------------------------


@dataclass
class Alert:
    rule: AlertRule
    model: str
    version: int | None
    value: float
    active_since: float
    details: dict[str, float] = field(default_factory=dict)
    fired_at: float | None = None
    resolved_at: float | None = None

    @property
    def state(self) -> str:
        if self.resolved_at is not None:
            return "resolved"
        return "pending" if self.fired_at is None else "firing"

    @property
    def subject(self) -> str:
        return self.model if self.version is None else f"{self.model}:{self.version}"

    @property
    def labels(self) -> dict[str, str]:
        labels = {"alertname": self.rule.alertname, "model": self.model}
        if self.version is not None:
            labels["version"] = str(self.version)
        labels["severity"] = self.rule.severity
        return labels

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.labels)

    def annotations(self) -> dict[str, str]:
        return describe(self.rule, self.subject, f"{self.value:.3g}")


@dataclass(frozen=True)
class AlertChange:
    status: Literal["firing", "resolved"]
    alert: Alert


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint: FNV-1a 64 over the sorted labels, 0xff-separated."""
    value = 0xCBF29CE484222325
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode() + b"\xff":
                value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{value:016x}"


def rfc3339(at: float | None) -> str:
    if at is None:
        return NEVER
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AlertEngine:
    def __init__(
        self,
        rules: Sequence[AlertRule],
        monitor: Monitor,
        registry: Registry | None = None,
        webhook_url: str | None = None,
        *,
        actor: str = "ferry-server",
        served: Served | None = None,
        external_url: str = "",
        interval_s: float = 15.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rules, self.monitor, self.registry = list(rules), monitor, registry
        self.interval_s = interval_s
        self.webhook_url, self.actor, self.served = webhook_url, actor, served
        self.external_url, self.clock = external_url.rstrip("/"), clock
        spans = [r.window_s for r in self.rules if isinstance(r, LatencyP99Rule | ErrorRateRule)]
        self.requests = RequestWindow(max(spans, default=300))
        self.active: dict[tuple[int, str, int | None], Alert] = {}
        self.webhook_failures = 0
        self.event_failures = 0
        self.client: httpx.AsyncClient | None = None
        # Retraining's scheduler listens to firing alerts.
        self.listeners: list[Callable[[AlertChange], None]] = []

    # hot path: the same signature as the data plane's request hooks -----------------------
    def on_request(self, protocol: str, model: str, status: str, seconds: float) -> None:
        self.requests.add(model, is_server_error(status), seconds, self.clock())

    # evaluation ------------------------------------------------------------------------------
    def evaluate(self, now: float | None = None) -> list[AlertChange]:
        """Judge every rule; return the alerts that started firing or were resolved."""
        now = self.clock() if now is None else now
        served = dict(self.served()) if self.served is not None else None
        if served is not None:
            self.export_baselines(served)
        changes: list[AlertChange] = []
        for index, rule in enumerate(self.rules):
            readings = self._read(rule, now, served)
            for (model, version), reading in readings.items():
                if reading.breached:
                    changes += self._hold(index, rule, model, version, reading, now)
            for key in [k for k in self.active if k[0] == index]:
                reading_of = readings.get((key[1], key[2]))
                if reading_of is None or not reading_of.breached:
                    changes += self._clear(key, now)
        return changes

    def _hold(
        self, index: int, rule: AlertRule, model: str, version: int | None, r: Reading, now: float
    ) -> list[AlertChange]:
        key = (index, model, version)
        alert = self.active.get(key)
        if alert is None:
            alert = self.active[key] = Alert(rule, model, version, r.value, now, r.details)
        alert.value, alert.details = r.value, r.details
        if alert.fired_at is None and now - alert.active_since >= rule.for_s:
            alert.fired_at = now
            return [AlertChange("firing", alert)]
        return []

    def _clear(self, key: tuple[int, str, int | None], now: float) -> list[AlertChange]:
        alert = self.active.pop(key)
        if alert.fired_at is None:
            return []  # pending alerts end without a notification, as in Prometheus
        alert.resolved_at = now
        return [AlertChange("resolved", alert)]

    def _read(
        self, rule: AlertRule, now: float, served: dict[Key, Mapping[str, float]] | None
    ) -> dict[tuple[str, int | None], Reading]:
        if isinstance(rule, LatencyP99Rule | ErrorRateRule):
            names = {name for name, _ in served} if served is not None else None
            readings: dict[tuple[str, int | None], Reading] = {}
            for model in list(self.requests.models):
                stats = self.requests.stats(model, now, rule.window_s)
                reading = request_reading(rule, stats)
                if reading is not None and (names is None or model in names):
                    readings[(model, None)] = reading
            return readings
        if isinstance(rule, DriftShareRule):
            drift = {
                key: Reading(w.drifted_share, w.drifted_share > rule.threshold)
                for key, w in self.monitor.last_windows.items()
            }
            return {k: r for k, r in drift.items() if served is None or k in served}
        return {key: r for key, r in self._read_quality(rule, served).items()}

    def _read_quality(
        self,
        rule: AccuracyBelowRule | AccuracyDropRule,
        served: dict[Key, Mapping[str, float]] | None,
    ) -> dict[Key, Reading]:
        readings = {}
        for key, window in self.monitor.feedback.items():
            live = window.metrics()
            if served is not None and key not in served:
                continue
            if live.get("n", 0) < rule.min_labels or rule.metric not in live:
                continue
            baseline = (served or {}).get(key, {}).get(rule.metric)
            reading = quality_reading(rule, live[rule.metric], baseline)
            if reading is not None:
                readings[key] = reading
        return readings

    def export_baselines(self, served: Mapping[Key, Mapping[str, float]]) -> None:
        """The bundles' test metrics as the series Prometheus's accuracy_drop rule compares with."""
        gauge = getattr(self.monitor.metrics, "feedback_baseline", None)
        if gauge is None:
            return
        for (name, version), metrics in served.items():
            for metric, value in metrics.items():
                if metric in LIVE_METRICS_ALL and math.isfinite(value):
                    gauge.labels(name, str(version), metric).set(value)

    # delivery --------------------------------------------------------------------------------
    async def tick(self, now: float | None = None) -> list[AlertChange]:
        changes = self.evaluate(now)
        for change in changes:
            await self.deliver(change)
        return changes

    async def run(self, interval_s: float | None = None) -> None:
        """Evaluate and deliver every ``interval_s`` (default: the spec's) until cancelled."""
        try:
            while True:
                await asyncio.sleep(interval_s or self.interval_s)
                try:
                    await self.tick()
                except Exception:  # alerting must never take serving down
                    log.exception("alert evaluation failed")
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            await client.aclose()

    async def deliver(self, change: AlertChange) -> None:
        alert = change.alert
        summary = alert.annotations()["summary"]
        log.warning("alert %s %s: %s", alert.rule.alertname, change.status, summary)
        if self.registry is not None:
            await self._record(change)
        # After the record, so the audit trail shows the alert before what it set off.
        for listener in self.listeners:
            listener(change)
        if self.webhook_url:
            await self._post(webhook_payload(change, self.external_url))

    async def _record(self, change: AlertChange) -> None:
        alert = change.alert
        assert self.registry is not None
        try:
            await asyncio.to_thread(
                self.registry.record_event,
                alert.model,
                f"alert_{change.status}",
                actor=self.actor,
                reason=alert.annotations()["summary"],
                version=alert.version,
                details=event_details(change),
            )
        except FerryError as exc:  # e.g. a model served from a bundle directory
            self.event_failures += 1
            log.warning("alert %s not recorded in the registry: %s", alert.rule.alertname, exc)
        except Exception:
            self.event_failures += 1
            log.exception("alert %s not recorded in the registry", alert.rule.alertname)

    async def _post(self, payload: dict[str, Any]) -> None:
        assert self.webhook_url is not None
        if self.client is None:
            self.client = httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S)
        try:
            response = await self.client.post(self.webhook_url, json=payload)
            problem = None if response.is_success else f"answered {response.status_code}"
        except (httpx.HTTPError, OSError) as exc:
            problem = str(exc) or type(exc).__name__
        if problem is not None:
            self.webhook_failures += 1
            log.warning("alert webhook %s failed: %s", self.webhook_url, problem)


def event_details(change: AlertChange) -> dict[str, Any]:
    alert = change.alert
    details: dict[str, Any] = {
        "alertname": alert.rule.alertname,
        "kind": alert.rule.kind,
        "severity": alert.rule.severity,
        "rule": alert.rule.model_dump(mode="json", exclude_none=True),
        "value": alert.value if math.isfinite(alert.value) else None,
        "startsAt": rfc3339(alert.fired_at),
        "fingerprint": alert.fingerprint,
    }
    details.update({k: v for k, v in alert.details.items() if math.isfinite(v)})
    if change.status == "resolved":
        details["endsAt"] = rfc3339(alert.resolved_at)
    return details


def webhook_payload(change: AlertChange, external_url: str = "") -> dict[str, Any]:
    """Alertmanager's webhook body (version 4): a group of one alert, keyed by name and model."""
    alert = change.alert
    labels = alert.labels
    group = {"alertname": labels["alertname"], "model": labels["model"]}
    key = ", ".join(f'{k}="{v}"' for k, v in group.items())
    annotations = alert.annotations()
    return {
        "version": "4",
        "groupKey": f"{{}}:{{{key}}}",
        "truncatedAlerts": 0,
        "status": change.status,
        "receiver": "ferry",
        "groupLabels": group,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [
            {
                "status": change.status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": rfc3339(alert.fired_at),
                "endsAt": rfc3339(alert.resolved_at),
                "generatorURL": f"{external_url}/metrics" if external_url else "",
                "fingerprint": alert.fingerprint,
            }
        ],
    }


# ---- wiring ----------------------------------------------------------------------------------


def attach_alerts(
    plane: DataPlane,
    monitor: Monitor,
    rules: Spec | MonitoringSpec | Sequence[AlertRule] | None = None,
    *,
    webhook_url: str | None = None,
    registry: Registry | None = None,
    actor: str = "ferry-server",
    external_url: str = "",
) -> AlertEngine:
    """Build the engine for a server's data plane and register its request hook.

    The registry defaults to the pool's; ``webhook_url`` and the evaluation interval to the
    spec's ``monitoring`` section. Run ``engine.run()`` as a task next to ``monitor.run()``.
    """
    pool = plane.pool
    section = rules.monitoring if isinstance(rules, Spec) else rules
    if not isinstance(section, MonitoringSpec):
        section = MonitoringSpec()
    if webhook_url is None:
        webhook_url = section.webhook_url
    engine = AlertEngine(
        rules_of(rules),
        monitor,
        registry if registry is not None else pool.registry,
        webhook_url,
        actor=actor,
        served=lambda: {key: m.manifest.metrics.test for key, m in pool.loaded.items()},
        external_url=external_url,
        interval_s=section.evaluation_interval_s,
    )
    plane.on_request.append(engine.on_request)
    return engine
