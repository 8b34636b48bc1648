"""The alert rules as Prometheus alerting rules: promtool accepts them, and they fire on the
series Ferry exports exactly when the server's engine would (``promtool test rules``)."""

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ferry.core.spec import AccuracyBelowRule, AccuracyDropRule, Spec, parse_spec
from ferry.monitoring.metrics import LATENCY_BUCKETS
from ferry.monitoring.rules import (
    RequestStats,
    describe,
    duration,
    expression,
    is_server_error,
    prometheus_rules,
    quality_reading,
    quantile,
    render_rules,
    request_reading,
    rules_of,
)

ALL_KINDS: dict[str, Any] = {
    "name": "fraud",
    "task": "classification",
    "data": {"source": "builtin:fraud", "target": "is_fraud"},
    "constraints": {"max_latency_p99_ms": 10},
    "monitoring": {
        "alerts": [
            {"kind": "drift_share", "threshold": 0.3},
            {"kind": "accuracy_below", "threshold": 0.8, "severity": "critical"},
            {"kind": "accuracy_drop", "drop": 0.05, "for_s": 0},
            {"kind": "latency_p99", "for_s": 90},
            {"kind": "error_rate", "threshold": 0.05, "for_s": 30},
        ]
    },
}


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool (Debian package prometheus) is not installed"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"{reason}; CI is set, so the promtool checks must run")
        pytest.skip(f"{reason}; `apt-get install prometheus` to run the promtool checks")
    return found


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_every_rule_kind_renders_with_its_for_and_severity() -> None:
    spec = parse_spec(ALL_KINDS)
    (group,) = prometheus_rules(spec)["groups"]
    assert group["name"] == "ferry-fraud"
    rules = {r["alert"]: r for r in group["rules"]}
    assert list(rules) == [
        "FerryDriftShareHigh",
        "FerryLiveQualityLow",
        "FerryLiveQualityDropped",
        "FerryLatencyP99High",
        "FerryErrorRateHigh",
    ]
    assert rules["FerryDriftShareHigh"]["for"] == "60s"
    assert "for" not in rules["FerryLiveQualityDropped"]  # for_s: 0 fires at once
    assert rules["FerryLatencyP99High"]["for"] == "90s"
    assert rules["FerryLiveQualityLow"]["labels"] == {"severity": "critical"}
    latency = rules["FerryLatencyP99High"]["expr"]
    assert "histogram_quantile(0.99, sum by (le, model) (rate(" in latency
    assert 'ferry_serving_request_duration_seconds_bucket{model="fraud"}[300s]' in latency
    assert "* 1000 > 10 and on (model)" in latency
    assert 'status=~"5..|UNKNOWN|INTERNAL' in rules["FerryErrorRateHigh"]["expr"]
    assert (
        'ferry_feedback_quality{model="fraud", metric="n"}) >= 100'
        in (rules["FerryLiveQualityLow"]["expr"])
    )
    text = render_rules(spec)
    assert text.startswith("# Prometheus alerting rules for model 'fraud'")
    assert yaml.safe_load(text) == prometheus_rules(spec)


def test_lower_is_better_metrics_flip_the_comparison() -> None:
    rmse = AccuracyBelowRule(kind="accuracy_below", metric="rmse", threshold=40)
    assert "max by (model, version)" in expression(rmse, "dia")
    assert expression(rmse, "dia").split(" and ")[0].endswith("> 40")
    assert quality_reading(rmse, 45.0, None).breached  # type: ignore[union-attr]
    assert not quality_reading(rmse, 35.0, None).breached  # type: ignore[union-attr]
    drop = AccuracyDropRule(kind="accuracy_drop", metric="mae", drop=2)
    assert quality_reading(drop, 13.0, 10.0).value == 3.0  # type: ignore[union-attr]
    assert quality_reading(drop, 13.0, None) is None  # no test value: not judged


def test_server_errors_are_5xx_and_failing_grpc_codes_only() -> None:
    assert all(is_server_error(s) for s in ("500", "503", "INTERNAL", "UNAVAILABLE", "UNKNOWN"))
    assert not any(
        is_server_error(s) for s in ("200", "400", "404", "413", "OK", "INVALID_ARGUMENT", "5000")
    )


def test_quantile_matches_histogram_quantile_interpolation() -> None:
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    counts[LATENCY_BUCKETS.index(0.05)] = 100  # all in (0.02, 0.05]
    assert quantile(0.99, counts) == pytest.approx(0.02 + 0.03 * 0.99)
    counts[-1] = 100  # half above the last bound: Prometheus answers the last finite bound
    assert quantile(0.99, counts) == LATENCY_BUCKETS[-1]


def test_request_rules_wait_for_enough_requests() -> None:
    spec = parse_spec(ALL_KINDS)
    latency, errors = rules_of(spec)[3:]
    assert request_reading(latency, RequestStats(19, 0, 1.0)) is None  # type: ignore[arg-type]
    reading = request_reading(latency, RequestStats(20, 0, 0.011))  # type: ignore[arg-type]
    assert reading is not None and reading.breached and reading.value == pytest.approx(11.0)
    reading = request_reading(errors, RequestStats(100, 5, 0.001))  # type: ignore[arg-type]
    assert reading is not None and not reading.breached  # 5% is not above 5%


def test_durations() -> None:
    assert (duration(60), duration(0.5), duration(3600)) == ("60s", "500ms", "3600s")


def test_promtool_checks_the_rules_file(promtool: str, tmp_path: Path) -> None:
    for name, spec in {
        "all.yml": ALL_KINDS,
        "defaults.yml": {k: v for k, v in ALL_KINDS.items() if k != "monitoring"},
        "none.yml": {**ALL_KINDS, "monitoring": {"alerts": []}},
        "regression.yml": {
            **ALL_KINDS,
            "task": "regression",
            "monitoring": {
                "alerts": [
                    {"kind": "accuracy_below", "metric": "rmse", "threshold": 50},
                    {"kind": "accuracy_drop", "metric": "mae", "drop": 5, "for_s": 2.5},
                ]
            },
        },
    }.items():
        (tmp_path / name).write_text(render_rules(parse_spec(spec)))
    files = ["all.yml", "defaults.yml", "none.yml", "regression.yml"]
    done = run(promtool, "check", "rules", *files, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 5 rules found" in done.stdout
    assert "SUCCESS: 3 rules found" in done.stdout  # drift, errors, latency from the budget


def _annotations(spec: Spec, alertname: str, subject: str, value: float) -> dict[str, str]:
    rule = next(r for r in rules_of(spec) if r.alertname == alertname)
    return describe(rule, subject, f"{value:.3g}")


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    text = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{text}}}", "values": values}


def test_promtool_fires_the_rules_on_ferry_series(promtool: str, tmp_path: Path) -> None:
    spec = parse_spec(ALL_KINDS)
    (tmp_path / "rules.yml").write_text(render_rules(spec))
    fraud = {"model": "fraud"}
    quality = "ferry_feedback_quality"
    requests = "ferry_serving_requests_total"
    buckets = "ferry_serving_request_duration_seconds_bucket"
    series = [
        _series("ferry_drift_share_ratio", "0.5x20", **fraud, version="3"),
        _series("ferry_drift_share_ratio", "0.1x20", **fraud, version="2"),  # under 0.3
        _series(quality, "0.7x20", **fraud, version="3", metric="accuracy"),
        _series(quality, "500x20", **fraud, version="3", metric="n"),
        _series(quality, "0.5x20", **fraud, version="2", metric="accuracy"),
        _series(quality, "50x20", **fraud, version="2", metric="n"),  # too few labels
        _series(
            "ferry_feedback_baseline_quality", "0.93x20", **fraud, version="3", metric="accuracy"
        ),
        _series(requests, "0+80x20", **fraud, protocol="rest", status="200"),
        _series(requests, "0+10x20", **fraud, protocol="rest", status="404"),  # not an error
        _series(requests, "0+10x20", **fraud, protocol="grpc", status="INTERNAL"),
        _series(buckets, "0+0x20", **fraud, protocol="rest", le="0.02"),
        _series(buckets, "0+100x20", **fraud, protocol="rest", le="0.05"),
        _series(buckets, "0+100x20", **fraud, protocol="rest", le="+Inf"),
    ]
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    counts[LATENCY_BUCKETS.index(0.05)] = 100
    p99_ms = quantile(0.99, counts) * 1000  # what the engine computes from the same buckets

    def expect(alertname: str, value: float, **labels: str) -> dict[str, Any]:
        subject = "fraud" + (f":{labels['version']}" if "version" in labels else "")
        return {
            "eval_time": "10m",
            "alertname": alertname,
            "exp_alerts": [
                {
                    "exp_labels": {**fraud, **labels},
                    "exp_annotations": _annotations(spec, alertname, subject, value),
                }
            ],
        }

    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    expect("FerryDriftShareHigh", 0.5, version="3", severity="warning"),
                    expect("FerryLiveQualityLow", 0.7, version="3", severity="critical"),
                    expect("FerryLiveQualityDropped", 0.93 - 0.7, version="3", severity="warning"),
                    expect("FerryLatencyP99High", p99_ms, severity="warning"),
                    expect("FerryErrorRateHigh", 0.1, severity="warning"),
                    {"eval_time": "1m", "alertname": "FerryLatencyP99High", "exp_alerts": []},
                ],
            }
        ],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    done = run(promtool, "test", "rules", "tests.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
