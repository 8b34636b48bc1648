"""The alert engine on a real Monitor's state with a fake clock: pending, firing, resolved."""

import asyncio
import json
import logging
from collections.abc import Mapping

import pytest

from ferry.core.spec import (
    AccuracyBelowRule,
    AccuracyDropRule,
    AlertRule,
    DriftShareRule,
    ErrorRateRule,
    LatencyP99Rule,
)
from ferry.monitoring.alerts import (
    NEVER,
    AlertChange,
    AlertEngine,
    event_details,
    fingerprint,
    rfc3339,
    webhook_payload,
)
from ferry.monitoring.drift import FeatureDrift, WindowDrift
from ferry.monitoring.feedback import FeedbackWindow
from ferry.monitoring.metrics import Metrics
from ferry.monitoring.monitor import Monitor

T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def window(drifted: int, of: int) -> WindowDrift:
    features = [
        FeatureDrift(f"x{i}", "chi2", 0.0, 1e-9 if i < drifted else 0.5, 0.0, 5, i < drifted)
        for i in range(of)
    ]
    features.append(FeatureDrift("__prediction__", "chi2", 0.0, 1e-9, 0.0, 5, True))  # not counted
    return WindowDrift(500, features, drifted > 0)


def engine(
    *rules: AlertRule,
    served: Mapping[tuple[str, int], Mapping[str, float]] | None = None,
) -> tuple[AlertEngine, Monitor, Clock]:
    monitor, clock = Monitor(Metrics()), Clock()
    served_fn = (lambda: served) if served is not None else None
    return AlertEngine(list(rules), monitor, served=served_fn, clock=clock), monitor, clock


def statuses(changes: list[AlertChange]) -> list[tuple[str, str, str]]:
    return [(c.status, c.alert.rule.alertname, c.alert.subject) for c in changes]


def test_drift_alert_pends_fires_after_for_s_and_resolves() -> None:
    alerts, monitor, _ = engine(DriftShareRule(threshold=0.3, for_s=60))
    monitor.last_windows[("fraud", 3)] = window(2, 4)  # half the features drifted
    assert alerts.evaluate(T0) == []
    (pending,) = alerts.active.values()
    assert (pending.state, pending.value, pending.labels) == (
        "pending",
        0.5,
        {
            "alertname": "FerryDriftShareHigh",
            "model": "fraud",
            "version": "3",
            "severity": "warning",
        },
    )
    assert alerts.evaluate(T0 + 59) == []
    fired = alerts.evaluate(T0 + 60)
    assert statuses(fired) == [("firing", "FerryDriftShareHigh", "fraud:3")]
    assert fired[0].alert.fired_at == T0 + 60
    assert alerts.evaluate(T0 + 120) == []  # still firing: no repeat
    monitor.last_windows[("fraud", 3)] = window(1, 4)  # 0.25: under the threshold
    resolved = alerts.evaluate(T0 + 150)
    assert statuses(resolved) == [("resolved", "FerryDriftShareHigh", "fraud:3")]
    assert resolved[0].alert.resolved_at == T0 + 150 and resolved[0].alert.state == "resolved"
    assert alerts.evaluate(T0 + 180) == [] and alerts.active == {}


def test_pending_alert_that_clears_is_dropped_quietly_and_starts_over() -> None:
    alerts, monitor, _ = engine(DriftShareRule(threshold=0.3, for_s=60))
    monitor.last_windows[("fraud", 1)] = window(3, 4)
    assert alerts.evaluate(T0) == []
    monitor.last_windows[("fraud", 1)] = window(0, 4)
    assert alerts.evaluate(T0 + 30) == [] and alerts.active == {}
    monitor.last_windows[("fraud", 1)] = window(3, 4)
    assert alerts.evaluate(T0 + 40) == []
    assert alerts.evaluate(T0 + 99) == []  # 59 s since it started to hold again
    assert statuses(alerts.evaluate(T0 + 100)) == [("firing", "FerryDriftShareHigh", "fraud:1")]


def test_for_zero_fires_on_the_first_evaluation() -> None:
    alerts, monitor, _ = engine(DriftShareRule(threshold=0.3, for_s=0))
    monitor.last_windows[("fraud", 1)] = window(4, 4)
    assert statuses(alerts.evaluate(T0)) == [("firing", "FerryDriftShareHigh", "fraud:1")]


def test_error_rate_from_request_outcomes_in_its_window() -> None:
    alerts, _, clock = engine(ErrorRateRule(threshold=0.05, for_s=0, window_s=60, min_requests=20))
    for status in ["200"] * 17 + ["404", "500"]:  # 19 requests: too few to judge
        alerts.on_request("rest", "fraud", status, 0.001)
    assert alerts.evaluate(T0) == []
    alerts.on_request("grpc", "fraud", "UNAVAILABLE", 0.001)  # 2 server errors in 20 requests
    fired = alerts.evaluate(T0)
    assert statuses(fired) == [("firing", "FerryErrorRateHigh", "fraud")]
    assert fired[0].alert.value == pytest.approx(0.1)
    assert fired[0].alert.labels == {
        "alertname": "FerryErrorRateHigh",
        "model": "fraud",
        "severity": "warning",
    }
    assert fired[0].alert.details == {"requests": 20.0, "errors": 2.0}
    clock.now = T0 + 65  # the requests age out of the 60 s window
    assert statuses(alerts.evaluate()) == [("resolved", "FerryErrorRateHigh", "fraud")]


def test_latency_p99_over_budget_per_model() -> None:
    alerts, _, clock = engine(LatencyP99Rule(threshold_ms=10, for_s=30, min_requests=10))
    for _ in range(50):
        alerts.on_request("rest", "slow", "200", 0.040)  # in the (20 ms, 50 ms] bucket
        alerts.on_request("rest", "fast", "200", 0.0008)
    assert alerts.evaluate(T0) == []
    clock.now = T0 + 30
    fired = alerts.evaluate()
    assert statuses(fired) == [("firing", "FerryLatencyP99High", "slow")]
    assert fired[0].alert.value == pytest.approx(20 + 30 * 0.99)  # ms, interpolated as Prometheus
    assert "p99 latency 49.7 ms over 10 ms" in fired[0].alert.annotations()["summary"]


def test_live_accuracy_below_waits_for_enough_labels() -> None:
    alerts, monitor, _ = engine(AccuracyBelowRule(threshold=0.8, min_labels=10, for_s=0))
    feedback = monitor.feedback[("fraud", 2)] = FeedbackWindow(100)
    for i in range(9):
        feedback.add("1", "0" if i < 5 else "1", None)
    assert alerts.evaluate(T0) == []  # 9 labels
    feedback.add("1", "1", None)  # accuracy 0.5 over 10 labels
    (fired,) = alerts.evaluate(T0 + 1)
    assert fired.alert.value == 0.5 and fired.alert.subject == "fraud:2"
    assert "live accuracy is 0.5, below 0.8" in fired.alert.annotations()["summary"]
    for _ in range(90):
        feedback.add("1", "1", None)
    assert statuses(alerts.evaluate(T0 + 2)) == [("resolved", "FerryLiveQualityLow", "fraud:2")]


def test_accuracy_drop_compares_with_the_bundle_test_metric_of_served_versions() -> None:
    served: dict[tuple[str, int], Mapping[str, float]] = {("fraud", 3): {"accuracy": 0.95}}
    alerts, monitor, _ = engine(AccuracyDropRule(drop=0.1, min_labels=4, for_s=0), served=served)
    for version in (3, 4):  # version 4 is not served: never judged
        window_ = monitor.feedback[("fraud", version)] = FeedbackWindow(10)
        for truth, predicted in [("1", "1"), ("1", "0"), ("0", "0"), ("0", "0")]:
            window_.add(truth, predicted, None)
    (fired,) = alerts.evaluate(T0)
    assert fired.alert.subject == "fraud:3"
    assert fired.alert.value == pytest.approx(0.2)  # 0.95 on the test set, 0.75 live
    assert fired.alert.details == {"live": 0.75, "baseline": 0.95}
    served.clear()  # the version was unloaded: its alert resolves
    assert statuses(alerts.evaluate(T0 + 1)) == [("resolved", "FerryLiveQualityDropped", "fraud:3")]


def test_rules_with_several_severities_are_separate_alerts() -> None:
    alerts, monitor, _ = engine(
        DriftShareRule(threshold=0.3, for_s=0),
        DriftShareRule(threshold=0.6, for_s=0, severity="critical"),
    )
    monitor.last_windows[("fraud", 1)] = window(2, 4)
    assert [c.alert.rule.severity for c in alerts.evaluate(T0)] == ["warning"]
    monitor.last_windows[("fraud", 1)] = window(3, 4)
    assert [c.alert.rule.severity for c in alerts.evaluate(T0 + 1)] == ["critical"]


def test_fingerprint_is_prometheus_label_set_fingerprint() -> None:
    # Test vectors of prometheus/common's labelSetToFingerprint.
    assert fingerprint({}) == "cbf29ce484222325"
    assert fingerprint({"name": "garland, briggs", "fear": "love is not enough"}) == (
        f"{5799056148416392346:016x}"
    )


def test_webhook_payload_is_alertmanager_version_4() -> None:
    alerts, monitor, _ = engine(DriftShareRule(threshold=0.3, for_s=0))
    monitor.last_windows[("fraud", 3)] = window(2, 4)
    (fired,) = alerts.evaluate(T0)
    body = webhook_payload(fired, "http://ferry:8080")
    labels = {"alertname": "FerryDriftShareHigh", "model": "fraud", "version": "3"}
    labels["severity"] = "warning"
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "ferry"
    assert body["groupKey"] == '{}:{alertname="FerryDriftShareHigh", model="fraud"}'
    assert body["groupLabels"] == {"alertname": "FerryDriftShareHigh", "model": "fraud"}
    assert body["commonLabels"] == labels and body["truncatedAlerts"] == 0
    assert body["externalURL"] == "http://ferry:8080"
    (alert,) = body["alerts"]
    assert alert["labels"] == labels and alert["status"] == "firing"
    assert alert["startsAt"] == "2023-11-14T22:13:20.000Z" and alert["endsAt"] == NEVER
    assert alert["fingerprint"] == fingerprint(labels)
    assert alert["generatorURL"] == "http://ferry:8080/metrics"
    assert set(alert["annotations"]) == {"summary", "description"}
    assert body["commonAnnotations"] == alert["annotations"]
    monitor.last_windows.clear()
    (resolved,) = alerts.evaluate(T0 + 61.5)
    body = webhook_payload(resolved)
    assert body["status"] == "resolved" and body["alerts"][0]["endsAt"] == rfc3339(T0 + 61.5)
    details = event_details(resolved)
    json.dumps(details, allow_nan=False)  # what the registry accepts
    assert details["alertname"] == "FerryDriftShareHigh" and details["value"] == 0.5
    assert details["rule"]["threshold"] == 0.3 and details["endsAt"].endswith("Z")


def test_tick_logs_each_change_without_a_registry_or_webhook(
    caplog: pytest.LogCaptureFixture,
) -> None:
    alerts, monitor, _ = engine(DriftShareRule(threshold=0.3, for_s=0))
    monitor.last_windows[("fraud", 3)] = window(4, 4)
    with caplog.at_level(logging.WARNING, "ferry.monitoring.alerts"):
        changes = asyncio.run(alerts.tick(T0))
    assert len(changes) == 1
    assert "alert FerryDriftShareHigh firing: fraud:3: 1 of the features drifted" in caplog.text


def test_request_window_is_bounded() -> None:
    alerts, _, clock = engine(ErrorRateRule(for_s=0, window_s=60))
    for i in range(1000):  # model names come from request paths: bounded
        alerts.on_request("rest", f"m{i}", "404", 0.001)
    assert len(alerts.requests.models) == 256
    for second in range(0, 3600, 5):
        clock.now = T0 + second
        alerts.on_request("rest", "m0", "200", 0.001)
    assert len(alerts.requests.models["m0"]) <= 60 / 5 + 2  # only the span of the rules


def test_bundle_test_metrics_are_exported_as_the_drop_baseline() -> None:

    from ferry.monitoring.metrics import scrape

    monitor = Monitor(Metrics())
    served = {("fraud", 3): {"accuracy": 0.9, "roc_auc": 0.95}}
    AlertEngine([], monitor, served=lambda: served).evaluate(T0)
    text = scrape(monitor.metrics)[0].decode()
    series = 'ferry_feedback_baseline_quality{metric="accuracy",model="fraud",version="3"}'
    assert f"{series} 0.9" in text
    assert "roc_auc" not in text  # not computable from late labels: nothing to compare with
