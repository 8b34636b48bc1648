"""The ``monitoring`` section of ferry.yaml: drift settings, alert rules, defaults, errors."""

from typing import Any

import pytest

from ferry.core.spec import (
    AccuracyBelowRule,
    DriftShareRule,
    ErrorRateRule,
    LatencyP99Rule,
    MonitoringSpec,
    parse_spec,
)
from ferry.errors import SpecError

MINIMAL: dict[str, Any] = {
    "name": "fraud",
    "task": "classification",
    "data": {"source": "builtin:fraud", "target": "is_fraud"},
}


def spec_with(monitoring: Any = None, **sections: Any) -> dict[str, Any]:
    spec = {**MINIMAL, **sections}
    if monitoring is not None:
        spec["monitoring"] = monitoring
    return spec


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    lines = str(info.value).splitlines()
    assert lines[0] == "ferry.yaml is invalid:", lines
    assert len(lines) == 2, lines
    return lines[1]


def test_defaults_without_a_section() -> None:
    monitoring = parse_spec(MINIMAL).monitoring
    assert (monitoring.drift.window, monitoring.drift.alpha) == (500, 0.001)
    assert (monitoring.drift.k, monitoring.drift.n) == (2, 3)
    assert monitoring.sample_rate == 1.0 and monitoring.webhook_url is None
    assert monitoring.alerts is not None
    kinds = [(r.kind, r.alertname, r.severity) for r in monitoring.alerts]
    assert kinds == [
        ("drift_share", "FerryDriftShareHigh", "warning"),
        ("error_rate", "FerryErrorRateHigh", "critical"),
    ]
    drift, errors = monitoring.alerts
    assert isinstance(drift, DriftShareRule) and drift.threshold == 0.3 and drift.for_s == 60
    assert isinstance(errors, ErrorRateRule) and errors.threshold == 0.05


def test_latency_default_rule_uses_the_budget() -> None:
    spec = parse_spec(spec_with(constraints={"max_latency_p99_ms": 7.5}))
    assert spec.monitoring.alerts is not None
    latency = [r for r in spec.monitoring.alerts if isinstance(r, LatencyP99Rule)]
    assert len(latency) == 1 and latency[0].threshold_ms == 7.5


def test_explicit_rules_replace_the_defaults_and_keep_their_settings() -> None:
    spec = parse_spec(
        spec_with(
            {
                "drift": {"window": 200, "alpha": 0.01, "k": 1, "n": 1},
                "sample_rate": 0.25,
                "webhook_url": "http://127.0.0.1:9093/hook",
                "alerts": [
                    {"kind": "accuracy_below", "threshold": 0.9, "severity": "critical"},
                    {"kind": "accuracy_drop", "drop": 0.1, "metric": "f1", "for_s": 0},
                    {"kind": "latency_p99", "threshold_ms": 25, "window_s": 60},
                ],
            },
            constraints={"max_latency_p99_ms": 5},
        )
    )
    monitoring = spec.monitoring
    assert monitoring.drift.window == 200 and monitoring.sample_rate == 0.25
    assert monitoring.alerts is not None
    below, drop, latency = monitoring.alerts
    assert isinstance(below, AccuracyBelowRule) and below.metric == "accuracy"
    assert below.min_labels == 100 and below.severity == "critical"
    assert drop.kind == "accuracy_drop" and drop.for_s == 0
    assert isinstance(latency, LatencyP99Rule) and latency.threshold_ms == 25  # not the budget


def test_an_empty_list_turns_alerting_off() -> None:
    assert parse_spec(spec_with({"alerts": []})).monitoring.alerts == []


def test_regression_rules_use_error_metrics() -> None:
    spec = parse_spec(
        spec_with(
            {"alerts": [{"kind": "accuracy_below", "metric": "rmse", "threshold": 40}]},
            task="regression",
        )
    )
    assert spec.monitoring.alerts is not None and spec.monitoring.alerts[0].kind == "accuracy_below"


@pytest.mark.parametrize(
    ("monitoring", "expected"),
    [
        ({"alerts": [{"kind": "drift"}]}, "monitoring.alerts.0.kind: unknown kind 'drift'"),
        ({"alerts": [{"threshold": 0.2}]}, "monitoring.alerts.0.kind: required key is missing"),
        (
            {"alerts": [{"kind": "drift_share"}, {"kind": "error_rate", "threshold": 2}]},
            "monitoring.alerts.1.threshold: Input should be less than 1 (received 2)",
        ),
        (
            {"alerts": [{"kind": "drift_share", "threshold_ms": 3}]},
            "monitoring.alerts.0.threshold_ms: unknown key",
        ),
        (
            {"alerts": [{"kind": "accuracy_below"}]},
            "monitoring.alerts.0.threshold: required key is missing",
        ),
        (
            {"alerts": [{"kind": "error_rate", "severity": "page"}]},
            "monitoring.alerts.0.severity: Input should be 'warning' or 'critical'",
        ),
        (
            {"alerts": [{"kind": "error_rate", "for_s": -1}]},
            "monitoring.alerts.0.for_s: Input should be greater than or equal to 0",
        ),
        ({"alerts": [{"kind": "drift_share", "name": "9lives"}]}, "monitoring.alerts.0.name:"),
        (
            {"alerts": [{"kind": "accuracy_drop", "metric": "auc"}]},
            "monitoring.alerts.0.metric: not computed from late labels",
        ),
        (
            {"alerts": [{"kind": "accuracy_below", "metric": "rmse", "threshold": 3}]},
            "monitoring.alerts.0.metric: 'rmse' cannot be computed from late labels for task "
            "'classification'",
        ),
        (
            {"alerts": [{"kind": "latency_p99"}]},
            "monitoring.alerts.0.threshold_ms: required because constraints.max_latency_p99_ms "
            "is not set",
        ),
        (
            {"alerts": [{"kind": "drift_share"}, {"kind": "drift_share", "threshold": 0.5}]},
            "monitoring.alerts.1: same alert name 'FerryDriftShareHigh' and severity as "
            "monitoring.alerts.0",
        ),
        ({"drift": {"k": 4}}, "monitoring.drift: k (4) is larger than n (3)"),
        ({"drift": {"window": 5}}, "monitoring.drift.window: Input should be greater than"),
        ({"sample_rate": 1.5}, "monitoring.sample_rate: Input should be less than or equal to 1"),
        ({"webhook_url": "alertmanager:9093"}, "monitoring.webhook_url: expected an http://"),
        ({"alert": []}, "monitoring.alert: unknown key; remove it or check its spelling"),
        ({"alerts": {"kind": "drift_share"}}, "monitoring.alerts: Input should be a valid list"),
    ],
)
def test_bad_monitoring_config_names_the_key(monitoring: dict[str, Any], expected: str) -> None:
    assert expected in error_of(spec_with(monitoring))


def test_same_name_with_other_severity_is_allowed() -> None:
    spec = parse_spec(
        spec_with(
            {
                "alerts": [
                    {"kind": "drift_share", "threshold": 0.3},
                    {"kind": "drift_share", "threshold": 0.6, "severity": "critical"},
                ]
            }
        )
    )
    assert spec.monitoring.alerts is not None and len(spec.monitoring.alerts) == 2


def test_section_alone_resolves_like_the_spec() -> None:
    section = MonitoringSpec.model_validate({"alerts": [{"kind": "latency_p99"}]})
    assert section.rules(12.0)[0].threshold_ms == 12.0  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="threshold_ms: required"):
        section.rules(None)
    assert [r.kind for r in MonitoringSpec().rules(None)] == ["drift_share", "error_rate"]


def test_existing_specs_stay_valid_and_hash_stably() -> None:
    first, second = parse_spec(MINIMAL), parse_spec(MINIMAL)
    assert first.spec_hash() == second.spec_hash()
    # Monitoring settings do not change the model, so its lineage hash stays the same.
    changed = parse_spec(spec_with({"drift": {"window": 1000}}))
    assert changed.spec_hash() == first.spec_hash()
