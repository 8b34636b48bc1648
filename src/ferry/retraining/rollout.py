"""Rollout of a challenger that passed its gates: canary (a share of traffic), shadow (a copy of
traffic, never answered with) or direct. During the observation period the controller watches
the registry for alerts on the new version and the prediction log for its live quality against
the champion's on the same period; it promotes, or rolls back at the first sign of trouble."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ferry.core.spec import Spec
from ferry.monitoring.predlog import PredictionStore
from ferry.registry.service import Registry
from ferry.retraining.compare import binary_auc
from ferry.retraining.gates import encode_truth

log = logging.getLogger("ferry.retraining")
PRODUCTION, CANARY, SHADOW = "production", "canary", "shadow"


@dataclass
class LiveQuality:
    metric: str
    by_version: dict[int, tuple[float, int]]  # version -> (value, labelled rows)
    task: str = "binary"
    labels: list[str] | None = None
    pairs: dict[int, list[tuple[Any, Any]]] = field(default_factory=dict)

    def of(self, version: int) -> tuple[float, int]:
        return self.by_version.get(version, (float("nan"), 0))

    def difference(
        self, new: int, old: int, confidence: float, draws: int = 400, seed: int = 0
    ) -> tuple[float, float]:
        """Interval of new minus old. The versions served different requests, so each side is
        resampled on its own: a few hundred labels give intervals several points wide."""
        rng = np.random.default_rng(seed)
        a, b = self.pairs.get(new, []), self.pairs.get(old, [])
        deltas = np.asarray(
            [
                _value(self.task, self.labels, _resample(a, rng))
                - _value(self.task, self.labels, _resample(b, rng))
                for _ in range(draws)
            ]
        )
        tail = (1 - confidence) / 2 * 100
        low, high = np.nanpercentile(deltas, [tail, 100 - tail])
        return float(low), float(high)


def _resample(pairs: list[tuple[Any, Any]], rng: np.random.Generator) -> list[tuple[Any, Any]]:
    return [pairs[i] for i in rng.integers(0, len(pairs), len(pairs))]


def _rows_by_version(
    store: PredictionStore, name: str, since: float
) -> dict[int, list[tuple[Any, Any]]]:
    labels = {str(r["id"]): r["label"] for r in store.read_labels(name, since)}
    rows: dict[int, list[tuple[Any, Any]]] = {}
    for row in store.read(name, since):
        label = labels.get(str(row.get("id")))
        if label is not None:
            answer = row.get("score", row.get("prediction"))
            rows.setdefault(int(row["version"]), []).append((label, answer))
    return rows


def _value(task: str, labels: list[str] | None, pairs: list[tuple[Any, Any]]) -> float:
    truth_raw = [p[0] for p in pairs]
    answers = [p[1] for p in pairs]
    if task == "regression":
        error = np.asarray(answers, dtype=float) - np.asarray(truth_raw, dtype=float)
        return -float(np.sqrt(np.mean(error**2)))  # negated: higher is better everywhere here
    import pandas as pd

    truth, known = encode_truth(pd.Series(truth_raw, dtype=object), labels)
    if task == "binary":
        return binary_auc(truth[known], np.asarray(answers, dtype=float)[known])
    predicted = np.asarray([str(a) for a in answers])
    names = np.asarray(labels or [])[truth[known]]
    return float(np.mean(predicted[known] == names))


def live_quality(
    store: PredictionStore, name: str, task: str, labels: list[str] | None, since: float
) -> LiveQuality:
    """Quality per version from the rows logged since ``since`` that have a late label:
    ROC-AUC of the logged scores (binary), accuracy (multiclass), -RMSE (regression)."""
    metric = {"binary": "roc_auc", "multiclass": "accuracy"}.get(task, "neg_rmse")
    found = _rows_by_version(store, name, since)
    values = {v: (_value(task, labels, pairs), len(pairs)) for v, pairs in found.items()}
    return LiveQuality(metric, values, task, labels, found)


@dataclass
class RolloutResult:
    promoted: bool
    mode: str
    detail: str
    live: dict[str, Any] = field(default_factory=dict)


@dataclass
class Rollout:
    registry: Registry
    store: PredictionStore | None
    spec: Spec
    champion: int
    challenger: int
    task: str
    labels: list[str] | None
    actor: str = "ferry-retrain"
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    on_step: Callable[[str], None] = lambda text: None

    @property
    def name(self) -> str:
        return self.spec.name

    def run(self) -> RolloutResult:
        plan = self.spec.retraining.rollout
        if plan.mode == "direct":
            return self._promote("direct", "promoted directly (rollout.mode: direct)", {})
        alias = CANARY if plan.mode == "canary" else SHADOW
        weight = plan.canary_weight if alias == CANARY else None
        started = self.clock()
        self.registry.set_alias(
            self.name,
            alias,
            self.challenger,
            actor=self.actor,
            reason=f"challenger passed its gates; observing for {plan.observe_s:g} s",
            weight=weight,
        )
        self.on_step(
            f"{alias} {self.name}:{self.challenger}" + (f" at {weight:.0%}" if weight else "")
        )
        return self._observe(alias, started)

    def _observe(self, alias: str, started: float) -> RolloutResult:
        plan = self.spec.retraining.rollout
        while True:
            problem, live = self._problem(started)
            if problem is not None:
                return self._roll_back(alias, problem, live)
            if self.clock() - started >= plan.observe_s:
                return self._promote(alias, self._healthy(live), live)
            self.sleep(
                min(plan.check_interval_s, max(plan.observe_s - (self.clock() - started), 0.01))
            )

    def _problem(self, started: float) -> tuple[str | None, dict[str, Any]]:
        alert = self._alert_since(started)
        live = self._live(started)
        if alert is not None:
            return alert, live
        return live.pop("problem", None), live

    def _alert_since(self, started: float) -> str | None:
        for event in self.registry.events(self.name, limit=200):
            if event.at.timestamp() < started:
                break
            # Model-wide alerts (errors, latency) carry no version: they count against the new one.
            relevant = event.details.get("kind") in self.spec.retraining.rollout.rollback_on
            if (
                event.kind == "alert_firing"
                and relevant
                and event.version in (None, self.challenger)
            ):
                return f"alert {event.details.get('alertname', '?')} fired: {event.reason}"
        return None

    def _live(self, started: float) -> dict[str, Any]:
        if self.store is None:
            return {}
        plan = self.spec.retraining.rollout
        quality = live_quality(self.store, self.name, self.task, self.labels, started)
        new, new_n = quality.of(self.challenger)
        old, old_n = quality.of(self.champion)
        live: dict[str, Any] = {
            "metric": quality.metric,
            "challenger": _finite(new),
            "challenger_labels": new_n,
            "champion": _finite(old),
            "champion_labels": old_n,
        }
        enough = min(new_n, old_n) >= plan.min_labels and np.isfinite(new) and np.isfinite(old)
        if not enough or new >= old - plan.max_quality_drop:
            return live
        # Worse on these labels: roll back only when the interval says so too, since two
        # versions on a few hundred different requests differ by several points by chance.
        confidence = self.spec.retraining.gates.confidence
        low, high = quality.difference(self.challenger, self.champion, confidence)
        live.update(difference_low=_finite(low), difference_high=_finite(high))
        if high < -plan.max_quality_drop:
            live["problem"] = (
                f"live {quality.metric} of {self.challenger} is {new:.4f} on {new_n} labels, "
                f"worse than the champion's {old:.4f} on {old_n}: difference interval "
                f"[{low:+.4f}, {high:+.4f}] ({confidence:.0%}) is below the allowed drop "
                f"{plan.max_quality_drop:g}"
            )
        return live

    def _healthy(self, live: dict[str, Any]) -> str:
        plan = self.spec.retraining.rollout
        if (
            live.get("challenger") is None
            or live.get("champion") is None
            or min(live.get("challenger_labels", 0), live.get("champion_labels", 0))
            < plan.min_labels
        ):
            return f"no alert in {plan.observe_s:g} s; too few labels to compare live quality"
        return (
            f"no alert in {plan.observe_s:g} s; live {live['metric']} {live['challenger']:.4f} "
            f"vs champion {live['champion']:.4f}"
        )

    def _promote(self, mode: str, detail: str, live: dict[str, Any]) -> RolloutResult:
        self.registry.set_alias(
            self.name, PRODUCTION, self.challenger, actor=self.actor, reason=detail
        )
        self._drop_alias(mode, "promoted to production")
        self.registry.record_event(
            self.name,
            "promoted",
            actor=self.actor,
            reason=detail,
            version=self.challenger,
            details={"from": self.champion, "to": self.challenger, "mode": mode, **live},
        )
        self.on_step(f"promoted {self.name}:{self.challenger} to production ({detail})")
        return RolloutResult(True, mode, detail, live)

    def _roll_back(self, alias: str, problem: str, live: dict[str, Any]) -> RolloutResult:
        self._drop_alias(alias, f"rolled back: {problem}")
        self.registry.record_event(
            self.name,
            "rolled_back",
            actor=self.actor,
            reason=problem,
            version=self.challenger,
            details={"champion": self.champion, "mode": alias, **live},
        )
        self.on_step(f"rolled back {self.name}:{self.challenger}: {problem}")
        return RolloutResult(False, alias, problem, live)

    def _drop_alias(self, alias: str, reason: str) -> None:
        if alias in (CANARY, SHADOW):
            try:
                self.registry.delete_alias(self.name, alias, actor=self.actor, reason=reason)
            except Exception:  # already removed by hand: the outcome is the same
                log.warning("alias %s@%s was already gone", self.name, alias)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
