"""The gates a challenger must pass: better than the champion on recent labelled rows (paired
bootstrap interval above zero and at least the margin), not worse on the original test set
beyond a tolerance, the spec's metric and fairness gates, and the production budgets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ferry.core.spec import Spec
from ferry.evaluation.gates import GateResult
from ferry.retraining.compare import Comparison, Scored, paired_bootstrap
from ferry.retraining.scoring import BundleScorer
from ferry.retraining.verdict import GateCheck

RECENT, TEST = "recent", "test"


@dataclass
class Contest:
    """What the gates look at: both bundles and the labelled rows they are compared on."""

    champion: BundleScorer
    challenger: BundleScorer
    holdout: pd.DataFrame  # recent labelled production rows (may be empty)
    test: pd.DataFrame  # the spec's test split


def encode_truth(values: pd.Series, labels: list[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """Class indices (or values) and the mask of rows whose label the model knows."""
    if labels is None:
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        return numbers, ~np.isnan(numbers)
    index = {label: i for i, label in enumerate(labels)}
    codes = np.asarray([index.get(_label_text(v), -1) for v in values], dtype=np.int64)
    return codes, codes >= 0


def _label_text(value: object) -> str:
    # Labels sent as 1.0 mean the class "1": integers written as floats are read as integers.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def compare_on(name: str, rows: pd.DataFrame, contest: Contest, spec: Spec) -> Comparison | None:
    target = spec.data.target
    labels = contest.challenger.manifest.labels
    truth, known = encode_truth(rows[target], labels)
    rows, truth = rows[known], truth[known]
    if len(rows) == 0 or (labels is not None and len(np.unique(truth)) < 2):
        return None
    gates = spec.retraining.gates
    return paired_bootstrap(
        name,
        gates.metric or spec.default_metric(),
        truth,
        Scored(contest.champion.scores(rows), contest.champion.manifest.threshold),
        Scored(contest.challenger.scores(rows), contest.challenger.manifest.threshold),
        labels,
        draws=gates.bootstrap,
        confidence=gates.confidence,
        seed=spec.split.seed,
    )


def beats(comparison: Comparison, margin: float) -> GateCheck:
    passed = comparison.ci_low > 0 and comparison.delta >= margin
    interval = f"[{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}]"
    detail = (
        f"{comparison.metric} on {comparison.dataset} ({comparison.rows} rows): challenger "
        f"{comparison.challenger:.4f} vs champion {comparison.champion:.4f}, difference "
        f"{comparison.delta:+.4f}, {comparison.confidence:.0%} interval {interval}; needs the "
        f"interval above 0 and a difference of at least {margin:+.4f}"
    )
    values: dict[str, float | None] = {
        "delta": comparison.delta,
        "ci_low": comparison.ci_low,
        "margin": margin,
    }
    return GateCheck(f"beats_champion_{comparison.dataset}", passed, detail, values)


def not_worse(comparison: Comparison, tolerance: float) -> GateCheck:
    passed = comparison.delta >= -tolerance
    detail = (
        f"{comparison.metric} on {comparison.dataset} ({comparison.rows} rows): challenger "
        f"{comparison.challenger:.4f} vs champion {comparison.champion:.4f} "
        f"({comparison.delta:+.4f}); may lose at most {tolerance:.4f}"
    )
    values: dict[str, float | None] = {"delta": comparison.delta, "tolerance": tolerance}
    return GateCheck(f"not_worse_{comparison.dataset}", passed, detail, values)


def comparison_checks(contest: Contest, spec: Spec) -> tuple[list[GateCheck], list[Comparison]]:
    gates = spec.retraining.gates
    recent = compare_on(RECENT, contest.holdout, contest, spec) if len(contest.holdout) else None
    test = compare_on(TEST, contest.test, contest, spec)
    comparisons = [c for c in (recent, test) if c is not None]
    if recent is not None and test is not None:
        return [beats(recent, gates.min_improvement), not_worse(test, gates.max_regression)], (
            comparisons
        )
    if test is not None:  # no recent labels: the original test set decides alone
        return [beats(test, gates.min_improvement)], comparisons
    missing = GateCheck("beats_champion", False, "no labelled rows to compare the two models on")
    return [missing], comparisons


def spec_checks(results: list[GateResult]) -> list[GateCheck]:
    """The spec's ``gates`` (metric minimums/maximums, fairness) as the lab evaluated them."""
    return [
        GateCheck(f"gates.{r.name}", r.passed, r.detail, {"value": r.value, "limit": r.limit})
        for r in results
    ]


def budget_checks(challenger: BundleScorer, rows: pd.DataFrame, spec: Spec) -> list[GateCheck]:
    limits, checks = spec.constraints, []
    if limits.max_latency_p99_ms is not None:
        p99 = challenger.latency_p99_ms(rows)
        checks.append(
            GateCheck(
                "constraints.max_latency_p99_ms",
                p99 <= limits.max_latency_p99_ms,
                f"single-row p99 {p99:.3f} ms, budget {limits.max_latency_p99_ms:g} ms",
                {"value": p99, "limit": limits.max_latency_p99_ms},
            )
        )
    if limits.max_size_mb is not None:
        size = challenger.size_mb()
        checks.append(
            GateCheck(
                "constraints.max_size_mb",
                size <= limits.max_size_mb,
                f"graph {size:.2f} MB, budget {limits.max_size_mb:g} MB",
                {"value": size, "limit": limits.max_size_mb},
            )
        )
    return checks


def all_checks(
    contest: Contest, spec: Spec, lab_gates: list[GateResult]
) -> tuple[list[GateCheck], list[Comparison]]:
    checks, comparisons = comparison_checks(contest, spec)
    checks += spec_checks(lab_gates)
    checks += budget_checks(contest.challenger, contest.test, spec)
    return checks, comparisons
