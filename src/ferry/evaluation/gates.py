"""Quality gates: the minimums and maximums a model must meet before it may be promoted.

Each result is named after its key in ``ferry.yaml`` (``min.roc_auc``, ``max.log_loss``,
``max_fairness_gap``) so a failure points at the line to look at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ferry.core.spec import GatesSpec


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    value: float | None
    limit: float
    detail: str


def _pair(value: float, limit: float) -> tuple[str, str]:
    """Value and limit formatted so that different numbers never print the same."""
    a = f"{value:.3f}"
    # The limit is what the user wrote: print it as written, never rounded (0.99999, not 1.000).
    b = f"{limit:g}"
    if a == f"{limit:.3f}" and value != limit:
        a = f"{value:.6g}"
    return a, b


def _missing(name: str, what: str, op: str, limit: float, why: str) -> GateResult:
    detail = f"{what} {why}; cannot check {op} {limit:.3f}"
    return GateResult(name=name, passed=False, value=None, limit=limit, detail=detail)


def _bound(name: str, what: str, value: float | None, limit: float, lower: bool) -> GateResult:
    op = ">=" if lower else "<="
    if value is None:
        return _missing(name, what, op, limit, "is missing from the metrics")
    if math.isnan(value):
        return _missing(name, what, op, limit, "is undefined (NaN) on the test data")
    passed = value >= limit if lower else value <= limit
    word = "required" if lower else "allowed"
    shown = op if passed else ("<" if lower else ">")
    text_value, text_limit = _pair(value, limit)
    detail = f"{what} {text_value} {shown} {word} {text_limit}"
    return GateResult(name=name, passed=passed, value=value, limit=limit, detail=detail)


def _fairness(gap: float | None, limit: float) -> GateResult:
    name, what = "max_fairness_gap", "fairness gap"
    if gap is None:
        why = "was not measured (no sensitive columns; set data.sensitive)"
        return _missing(name, what, "<=", limit, why)
    return _bound(name, what, gap, limit, lower=False)


def check_gates(
    metrics: dict[str, float], gates: GatesSpec, fairness_gap: float | None = None
) -> list[GateResult]:
    """Every configured gate, passed or not, in the order of the spec."""
    results = [
        _bound(f"min.{metric}", metric, metrics.get(metric), limit, lower=True)
        for metric, limit in gates.min.items()
    ]
    results += [
        _bound(f"max.{metric}", metric, metrics.get(metric), limit, lower=False)
        for metric, limit in gates.max.items()
    ]
    if gates.max_fairness_gap is not None:
        results.append(_fairness(fairness_gap, gates.max_fairness_gap))
    return results
