"""What each alert rule means, once: its condition judged on live values (for the server's
alert engine, ``monitoring/alerts.py``), the same condition in PromQL as a Prometheus
alerting-rules file (``ferry monitor rules``), its annotations, and what a server error is.

The server's alert engine (``monitoring/alerts.py``) and Prometheus evaluate the same
conditions on the same series, so an operator can run either or both:

- drift_share:    ``ferry_drift_share_ratio`` above the threshold (last drift window);
- accuracy_below: ``ferry_feedback_quality{metric=M}`` worse than the threshold, once
  ``min_labels`` labels are in the window (``metric="n"``);
- accuracy_drop:  live quality worse than the bundle's test metric
  (``ferry_feedback_baseline_quality``) by more than ``drop``;
- latency_p99:    p99 of ``ferry_serving_request_duration_seconds`` over ``window_s``, in ms;
- error_rate:     server errors (REST 5xx, gRPC UNKNOWN/INTERNAL/UNAVAILABLE/DEADLINE_EXCEEDED/
  DATA_LOSS) over all requests in ``window_s``; both request rules wait for ``min_requests``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from ferry.core.spec import (
    LOWER_IS_BETTER,
    AccuracyBelowRule,
    AccuracyDropRule,
    AlertRule,
    DriftShareRule,
    ErrorRateRule,
    LatencyP99Rule,
    MonitoringSpec,
    Spec,
)
from ferry.errors import SpecError
from ferry.monitoring.metrics import LATENCY_BUCKETS

SERVER_ERRORS = "5..|UNKNOWN|INTERNAL|UNAVAILABLE|DEADLINE_EXCEEDED|DATA_LOSS"
_SERVER_ERROR = re.compile(SERVER_ERRORS)
_ERROR_CACHE: dict[str, bool] = {}
BASELINE_METRIC = "ferry_feedback_baseline_quality"


def is_server_error(status: str) -> bool:
    """REST 5xx or a gRPC status that means the server failed (client mistakes are not)."""
    known = _ERROR_CACHE.get(status)
    if known is None:
        known = _SERVER_ERROR.fullmatch(status) is not None
        if len(_ERROR_CACHE) < 256:
            _ERROR_CACHE[status] = known
    return known


def per_version(rule: AlertRule) -> bool:
    """Drift and live quality are per model version; request series only per model."""
    return isinstance(rule, DriftShareRule | AccuracyBelowRule | AccuracyDropRule)


def threshold_text(rule: AlertRule) -> str:
    if isinstance(rule, LatencyP99Rule):
        return f"{rule.threshold_ms:g} ms"
    if isinstance(rule, AccuracyDropRule):
        return f"{rule.drop:g}"
    return f"{rule.threshold:g}"


def describe(rule: AlertRule, subject: str, value: str) -> dict[str, str]:
    """summary and description; ``subject`` is ``model`` or ``model:version``."""
    limit = threshold_text(rule)
    if isinstance(rule, DriftShareRule):
        return {
            "summary": f"{subject}: {value} of the features drifted",
            "description": (
                f"In the last drift window the share of features whose live distribution differs "
                f"from the training reference is {value}, above {limit}. Look for a change "
                "upstream of the model; retrain if the shift is real."
            ),
        }
    if isinstance(rule, AccuracyBelowRule | AccuracyDropRule):
        worse = "above" if rule.metric in LOWER_IS_BETTER else "below"
        if isinstance(rule, AccuracyDropRule):
            what = f"live {rule.metric} is {value} worse than on the test set (limit {limit})"
        else:
            what = f"live {rule.metric} is {value}, {worse} {limit}"
        return {
            "summary": f"{subject}: {what}",
            "description": (
                f"Quality from late labels over the last feedback window: {what}. "
                "Check the labels and recent drift; retrain or roll back."
            ),
        }
    if isinstance(rule, LatencyP99Rule):
        return {
            "summary": f"{subject}: p99 latency {value} ms over {limit}",
            "description": (
                f"p99 request latency over the last {rule.window_s} s is {value} ms, over the "
                f"budget of {limit}. Check load, batching and worker count."
            ),
        }
    return {
        "summary": f"{subject}: {value} of requests failed",
        "description": (
            f"The share of requests answered with a server error over the last {rule.window_s} s "
            f"is {value}, above {limit}. Check the server log."
        ),
    }


# ---- the conditions, judged on live state (the alert engine) -------------------------------


@dataclass(frozen=True)
class Reading:
    value: float
    breached: bool
    details: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestStats:
    count: int
    errors: int
    p99_s: float | None


def quantile(q: float, counts: Sequence[int]) -> float:
    """Prometheus's ``histogram_quantile`` over per-bucket counts (last one is +Inf)."""
    rank = q * sum(counts)
    below = 0
    for i, count in enumerate(counts):
        if below + count >= rank and count:
            if i == len(LATENCY_BUCKETS):
                return LATENCY_BUCKETS[-1]
            start = LATENCY_BUCKETS[i - 1] if i else 0.0
            return start + (LATENCY_BUCKETS[i] - start) * (rank - below) / count
        below += count
    return LATENCY_BUCKETS[-1]


def request_reading(rule: LatencyP99Rule | ErrorRateRule, stats: RequestStats) -> Reading | None:
    if stats.count < rule.min_requests:
        return None
    if isinstance(rule, LatencyP99Rule):
        p99_ms = (stats.p99_s or 0.0) * 1000
        limit = rule.threshold_ms if rule.threshold_ms is not None else math.inf
        return Reading(p99_ms, p99_ms > limit, {"requests": float(stats.count)})
    share = stats.errors / stats.count
    details = {"requests": float(stats.count), "errors": float(stats.errors)}
    return Reading(share, share > rule.threshold, details)


def quality_reading(
    rule: AccuracyBelowRule | AccuracyDropRule, live: float, baseline: float | None
) -> Reading | None:
    lower = rule.metric in LOWER_IS_BETTER
    if isinstance(rule, AccuracyBelowRule):
        breached = live > rule.threshold if lower else live < rule.threshold
        return Reading(live, breached, {"live": live})
    if baseline is None:
        return None  # the bundle has no test value for this metric
    gap = live - baseline if lower else baseline - live
    return Reading(gap, gap > rule.drop, {"live": live, "baseline": baseline})


def rules_of(source: Spec | MonitoringSpec | Sequence[AlertRule] | None) -> list[AlertRule]:
    """Resolved rules from a spec, its monitoring section, a list, or None (the defaults)."""
    if isinstance(source, Spec):
        return source.monitoring.rules(source.constraints.max_latency_p99_ms, source.task)
    if source is None or isinstance(source, MonitoringSpec):
        section = source or MonitoringSpec()
        try:
            return section.rules(None)
        except ValueError as exc:
            raise SpecError(str(exc)) from None
    return list(source)


# ---- Prometheus alerting rules -------------------------------------------------------------


def duration(seconds: float) -> str:
    """A Prometheus duration: whole seconds as ``60s``, fractions in milliseconds."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def _quality(model: str, metric: str, how: str) -> str:
    return (
        f'{how} by (model, version) (ferry_feedback_quality{{model="{model}", metric="{metric}"}})'
    )


def _enough_labels(model: str, rule: AccuracyBelowRule | AccuracyDropRule) -> str:
    return f" and on (model, version) {_quality(model, 'n', 'min')} >= {rule.min_labels}"


def _enough_requests(model: str, rule: LatencyP99Rule | ErrorRateRule) -> str:
    total = f'ferry_serving_requests_total{{model="{model}"}}'
    window = duration(rule.window_s)
    return f" and on (model) sum by (model) (increase({total}[{window}])) >= {rule.min_requests}"


def expression(rule: AlertRule, model: str) -> str:
    """The PromQL condition for one rule on one model's series."""
    if isinstance(rule, DriftShareRule):
        share = f'max by (model, version) (ferry_drift_share_ratio{{model="{model}"}})'
        return f"{share} > {rule.threshold:g}"
    if isinstance(rule, AccuracyBelowRule):
        lower = rule.metric in LOWER_IS_BETTER
        live = _quality(model, rule.metric, "max" if lower else "min")
        return f"{live} {'>' if lower else '<'} {rule.threshold:g}" + _enough_labels(model, rule)
    if isinstance(rule, AccuracyDropRule):
        baseline = (
            f'max by (model, version) ({BASELINE_METRIC}{{model="{model}", '
            f'metric="{rule.metric}"}})'
        )
        live = _quality(model, rule.metric, "max")
        if rule.metric in LOWER_IS_BETTER:
            gap = f"({live} - on (model, version) {baseline})"
        else:
            gap = f"({baseline} - on (model, version) {_quality(model, rule.metric, 'min')})"
        return f"{gap} > {rule.drop:g}" + _enough_labels(model, rule)
    window = duration(rule.window_s)
    total = f'ferry_serving_requests_total{{model="{model}"}}'
    if isinstance(rule, LatencyP99Rule):
        buckets = f'ferry_serving_request_duration_seconds_bucket{{model="{model}"}}'
        p99 = f"histogram_quantile(0.99, sum by (le, model) (rate({buckets}[{window}]))) * 1000"
        return f"{p99} > {rule.threshold_ms:g}" + _enough_requests(model, rule)
    errors = f'ferry_serving_requests_total{{model="{model}", status=~"{SERVER_ERRORS}"}}'
    share = (
        f"sum by (model) (rate({errors}[{window}])) / on (model) "
        f"sum by (model) (rate({total}[{window}]))"
    )
    return f"{share} > {rule.threshold:g}" + _enough_requests(model, rule)


def prometheus_rule(rule: AlertRule, model: str) -> dict[str, Any]:
    subject = "{{ $labels.model }}"
    if per_version(rule):
        subject += ":{{ $labels.version }}"
    entry: dict[str, Any] = {"alert": rule.alertname, "expr": expression(rule, model)}
    if rule.for_s:
        entry["for"] = duration(rule.for_s)
    entry["labels"] = {"severity": rule.severity}
    entry["annotations"] = describe(rule, subject, '{{ $value | printf "%.3g" }}')
    return entry


def prometheus_rules(spec: Spec) -> dict[str, Any]:
    rules = rules_of(spec)
    return {
        "groups": [
            {
                "name": f"ferry-{spec.name}",
                "rules": [prometheus_rule(rule, spec.name) for rule in rules],
            }
        ]
    }


def render_rules(spec: Spec) -> str:
    """The alerting-rules file for ``spec``'s model, as ``promtool check rules`` reads it."""
    header = (
        f"# Prometheus alerting rules for model {spec.name!r}, written by `ferry monitor rules`\n"
        "# from ferry.yaml: the same rules the Ferry server evaluates. Regenerate, do not edit.\n"
    )
    body = yaml.safe_dump(prometheus_rules(spec), sort_keys=False, width=10_000)
    return header + body
