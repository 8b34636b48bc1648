"""The Grafana dashboard and the Prometheus/Grafana deploy files: the dashboard parses, covers
what operators need, queries only series the metrics catalogue exports (filtered by the
``model`` variable), and every query is valid PromQL according to ``promtool``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import prometheus_support as ps

GRAFANA = ps.REPO / "deploy" / "grafana"
# What the dashboard must show, as the series that show it.
REQUIRED = {
    "traffic": "ferry_serving_requests_total",
    "latency": "ferry_serving_request_duration_seconds_bucket",
    "batch sizes": "ferry_batching_batch_rows_bucket",
    "queue wait": "ferry_batching_queue_wait_seconds_bucket",
    "drift p-value": "ferry_drift_p_value",
    "drift flag": "ferry_drift_flag",
    "drifted share": "ferry_drift_share_ratio",
    "drift alarm": "ferry_drift_alarm",
    "live quality": "ferry_feedback_quality",
    "missing values": "ferry_quality_missing_values_total",
    "out-of-range values": "ferry_quality_out_of_range_values_total",
    "unseen categories": "ferry_quality_unseen_categories_total",
    "class mix": "ferry_prediction_class_total",
    "model info": "ferry_pool_model_info",
}
SELECTOR = re.compile(r"\b(ferry_\w+)\s*(\{[^}]*\})?")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(ps.DASHBOARD.read_text())


def test_metric_names_finds_selectors_not_functions_labels_or_durations() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, model) (rate(a_bucket{model=~"$m", le!="x"}'
        "[$__rate_interval]))) / on (model) group_left (version) b_info offset 5m "
        "or vector(0) > bool 1e3"
    )
    assert ps.metric_names(expr) == {"a_bucket", "b_info"}
    assert ps.metric_names('up{job="ferry"} unless max without (x) (nan_free)') == {
        "up",
        "nan_free",
    }


def test_dashboard_is_a_grafana_dashboard(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "ferry-serving"
    assert 36 <= dashboard["schemaVersion"] <= 41
    ids = [p["id"] for p in ps.panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in ps.panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], f"panel {panel['title']!r} has no query"
    assert _overlaps(ps.panels(dashboard)) == []


def _overlaps(panels: list[dict[str, Any]]) -> list[tuple[str, str]]:
    cells: dict[tuple[int, int], str] = {}
    clashes = []
    for panel in panels:
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    clashes.append((cells[(x, y)], panel["title"]))
                cells[(x, y)] = panel["title"]
    return sorted(set(clashes))


def test_model_variable_comes_from_the_request_counter(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    model = variables["model"]
    assert model["type"] == "query"
    assert model["definition"] == "label_values(ferry_serving_requests_total, model)"
    assert model["query"]["query"] == model["definition"]
    assert model["multi"] and model["includeAll"]
    assert "ferry_serving_requests_total" in ps.exported_names()


def test_panels_query_only_exported_series_of_the_chosen_models(
    dashboard: dict[str, Any],
) -> None:
    exported = ps.exported_names()
    queries = ps.panel_queries(dashboard)
    used: set[str] = set()
    for where, expr in queries:
        names = ps.metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        unknown = names - exported
        assert not unknown, f"{where}: {sorted(unknown)} are not in ferry.monitoring.metrics"
        for name, matchers in SELECTOR.findall(expr):
            assert 'model=~"$model"' in (matchers or ""), f"{where}: {name} ignores $model"
        used |= names
    missing = {topic: name for topic, name in REQUIRED.items() if name not in used}
    assert not missing, f"the dashboard does not show {missing}"


def test_error_rate_counts_server_errors_as_the_alert_rule_does(
    dashboard: dict[str, Any],
) -> None:
    """Server errors of both protocols, by the same pattern as the ``error_rate`` alert;
    client errors are every other non-success status."""
    from ferry.monitoring.rules import SERVER_ERRORS

    panel = next(p for p in ps.panels(dashboard) if p["title"] == "Error rate")
    server, client = (t["expr"] for t in panel["targets"])
    assert f'status=~"{SERVER_ERRORS}"' in server
    assert f'status!~"2..|OK|{SERVER_ERRORS}"' in client


def test_every_query_is_valid_promql(tmp_path: Path, dashboard: dict[str, Any]) -> None:
    """``promtool check rules`` parses each query, wrapped as a recording rule."""
    promtool = ps.require_tool("promtool")
    rules = [
        {"record": f"ferry:dashboard_query_{i}", "expr": ps.concrete(expr)}
        for i, (_, expr) in enumerate(ps.panel_queries(dashboard))
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = _run(promtool, "check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout, done.stdout


def test_promtool_refuses_a_broken_query(tmp_path: Path) -> None:
    """The check above would catch a bad panel: promtool fails on unparsable PromQL."""
    promtool = ps.require_tool("promtool")
    path = tmp_path / "broken.yml"
    rule = {"record": "ferry:broken", "expr": ps.concrete("sum by (le (rate(x[$__interval]))")}
    path.write_text(yaml.safe_dump({"groups": [{"name": "broken", "rules": [rule]}]}))
    assert _run(promtool, "check", "rules", str(path)).returncode != 0


def test_prometheus_config_is_valid_and_loads_ferry_rules(tmp_path: Path) -> None:
    """The deploy config passes ``promtool check config`` with a rules file from
    ``ferry monitor rules`` where its ``rule_files`` glob looks (``rules/``)."""
    from ferry.core.spec import parse_spec
    from ferry.monitoring.rules import render_rules, rules_of

    config = yaml.safe_load(ps.PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["ferry"]["metrics_path"] == "/metrics"
    assert config["rule_files"] == ["rules/*.yml"]
    promtool = ps.require_tool("promtool")
    spec = parse_spec(
        {
            "name": "fraud",
            "task": "classification",
            "data": {"source": "builtin:fraud", "target": "is_fraud"},
        }
    )
    deployed = tmp_path / "prometheus.yml"
    deployed.write_text(ps.PROMETHEUS_CONFIG.read_text())
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "ferry.yml").write_text(render_rules(spec))
    done = _run(promtool, "check", "config", str(deployed))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules_of(spec))} rules found" in done.stdout, done.stdout
    assert "rules/ferry.yml" in done.stdout, done.stdout


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"]
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/ferry.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].endswith("/dashboards")
    assert ps.DASHBOARD.parent.name == "dashboards"


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
