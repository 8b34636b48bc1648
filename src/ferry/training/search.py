"""Cross-validated search over model families under a wall-clock budget and production budgets.

The budget is a deadline, not a hint: a fold is started only when the history of its family
says it will finish in time, and Optuna stops starting trials at the deadline.

A fold fit is a pure function of ``FoldData`` and the trial's settings (``fit_fold``), so the
same code runs here and, through ``ferry.distributed.search``, on Dask workers.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import optuna
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from ferry.core.spec import LOWER_IS_BETTER, Spec
from ferry.evaluation.metrics import score as metric_score
from ferry.training.candidates import (
    DEFAULTS,
    SPACES,
    cost_units,
    fit_threads,
    make_estimator,
)
from ferry.training.features import FeatureLayout, build_preprocessor

Measure = Callable[[Pipeline], tuple[float, float]]


@dataclass
class Candidate:
    trial: int
    family: str
    params: dict[str, Any]
    score: float
    cv_std: float
    fit_s: float
    latency_p99_ms: float | None = None
    size_mb: float | None = None
    within_budget: bool = False
    pareto: bool = False
    chosen: bool = False
    note: str = ""
    valid_score: float | None = None
    workers: list[str] = field(default_factory=list)  # Dask workers that fitted its folds

    def row(self, rank: int) -> dict[str, Any]:
        return {
            "rank": rank,
            "trial": self.trial,
            "family": self.family,
            "score": self.score,
            "cv_std": self.cv_std,
            "valid_score": self.valid_score,
            "latency_p99_ms": self.latency_p99_ms,
            "size_mb": self.size_mb,
            "fit_s": self.fit_s,
            "pareto": self.pareto,
            "chosen": self.chosen,
            "within_budget": self.within_budget,
            "note": self.note,
            "workers": self.workers,
            "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.params.items()},
        }


@dataclass
class SearchResult:
    metric: str
    candidates: list[Candidate]
    best: Candidate | None
    elapsed_s: float
    trials_started: int
    pruned: int = 0

    def leaderboard(self) -> list[dict[str, Any]]:
        return [c.row(i + 1) for i, c in enumerate(self.candidates)]


COST_ORDER = ["logistic", "linear", "hist_gb", "lightgbm", "mlp", "extra_trees", "random_forest"]

# Estimates are medians of a few noisy timings; the margin keeps a late fold from overshooting.
SAFETY = 1.5


class _OutOfTime(Exception):
    pass


class BudgetSkip(Exception):
    """A trial not started (or cut short) because the wall-clock budget would be exceeded."""


@dataclass
class Clock:
    """Seconds per cost unit for each family, learnt from the folds already fitted."""

    deadline: float
    unit_times: dict[str, list[float]] = field(default_factory=dict)
    measure_times: list[float] = field(default_factory=list)

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def record(self, family: str, units: float, seconds: float) -> None:
        self.unit_times.setdefault(family, []).append(seconds / max(units, 1e-9))

    def nothing_fits(self, folds: int) -> bool:
        """True when even the fastest family seen so far cannot finish another trial."""
        if not self.unit_times:
            return False
        cheapest = min(min(times) for times in self.unit_times.values())
        return self.left() < SAFETY * cheapest * folds

    def fits(self, family: str, units: float, folds_left: int, own: list[float]) -> bool:
        """Will the rest of this trial finish in time? ``own`` are its folds' times so far.

        Before its first fold a trial is judged on its family's history, with a margin; once
        folds are done their own times are the estimate, so work already paid for is not
        thrown away over a margin.
        """
        measure = statistics.median(self.measure_times) if self.measure_times else 0.0
        if own:
            return self.left() > statistics.fmean(own) * folds_left + measure
        history = self.unit_times.get(family)
        fold = statistics.median(history) * units if history else 0.0
        return self.left() > SAFETY * (fold * folds_left + measure)


@dataclass
class FoldData:
    """Everything a fold fit needs besides the trial's settings; Dask ships it to workers once."""

    spec: Spec
    layout: FeatureLayout
    frame: pd.DataFrame
    target: np.ndarray
    splits: list[tuple[np.ndarray, np.ndarray]]
    metric: str


@dataclass
class FoldResult:
    model: Pipeline
    score: float
    fit_s: float


def fit_fold(
    data: FoldData, family: str, params: dict[str, Any], fold: int, left: Callable[[], float]
) -> FoldResult:
    """Fit on fold ``fold``'s training rows and score its held-out rows; ``left`` says how many
    seconds the budget has left (a LightGBM fit stops between trees at 0: ``BudgetSkip``)."""
    train_idx, test_idx = data.splits[fold]
    started = time.perf_counter()
    model = build_pipeline(data.spec, data.layout, family, params)
    _fit(model, family, data.frame.iloc[train_idx], data.target[train_idx], left)
    fit_s = time.perf_counter() - started
    return FoldResult(model, _fold_score(data, model, test_idx), fit_s)


def _fit(
    model: Pipeline, family: str, x: pd.DataFrame, y: np.ndarray, left: Callable[[], float]
) -> None:
    if family != "lightgbm":
        model.fit(x, y)
        return

    # LightGBM can be stopped between trees: a fold that outruns the deadline is cut short
    # and the trial pruned, instead of overshooting the budget.
    def stop_at_deadline(env: Any) -> None:
        if left() <= 0:
            raise _OutOfTime

    try:
        model.fit(x, y, model__callbacks=[stop_at_deadline])
    except _OutOfTime:
        raise BudgetSkip("lightgbm") from None


def _fold_score(data: FoldData, model: Pipeline, index: np.ndarray) -> float:
    x, y = data.frame.iloc[index], data.target[index]
    if data.spec.task == "regression":
        return metric_score(data.metric, y, model.predict(x), None)
    proba = model.predict_proba(x)
    labels = [str(i) for i in range(proba.shape[1])]
    return metric_score(data.metric, np.asarray([str(v) for v in y]), proba, labels)


def build_pipeline(
    spec: Spec, layout: FeatureLayout, family: str, params: dict[str, Any]
) -> Pipeline:
    estimator = make_estimator(
        family,
        params,
        task=spec.task,
        balanced=spec.search.class_weight == "balanced",
        seed=spec.search.seed,
    )
    return Pipeline([("features", build_preprocessor(layout, spec.features)), ("model", estimator)])


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


class Search:
    """One Optuna study; ``run`` returns every finished candidate, best first.

    ``warm_start`` maps a family to the settings of a previous best model (a retrain's
    champion): each is tried first, before every family's defaults.
    """

    def __init__(
        self,
        spec: Spec,
        layout: FeatureLayout,
        frame: pd.DataFrame,
        target: np.ndarray,
        *,
        measure: Measure,
        on_trial: Callable[[Candidate | None, float], None] | None = None,
        labels: list[str] | None = None,
        warm_start: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.spec, self.layout, self.frame, self.target = spec, layout, frame, target
        self.measure, self.on_trial, self.labels = measure, on_trial, labels
        self.warm_start = warm_start or {}
        self.metric = spec.search.metric or spec.default_metric()
        self.candidates: list[Candidate] = []
        self.splits = list(self._folds().split(frame, target))
        self.data = FoldData(spec, layout, frame, target, self.splits, self.metric)

    def _folds(self) -> KFold | StratifiedKFold:
        folds, seed = self.spec.search.folds, self.spec.search.seed
        if self.spec.task == "classification":
            return StratifiedKFold(folds, shuffle=True, random_state=seed)
        return KFold(folds, shuffle=True, random_state=seed)

    def pipeline(self, family: str, params: dict[str, Any]) -> Pipeline:
        return build_pipeline(self.spec, self.layout, family, params)

    def _params(self, trial: optuna.Trial, family: str) -> dict[str, Any]:
        if "warm_start" in trial.user_attrs:
            return dict(trial.user_attrs["warm_start"])
        if trial.user_attrs.get("defaults"):
            return dict(DEFAULTS[family])
        return SPACES[family](trial)

    def _objective(self, clock: Clock, trial: optuna.Trial) -> float:
        family = trial.suggest_categorical("family", self.spec.search.families)
        params = self._params(trial, family)
        scores: list[float] = []
        model: Pipeline | None = None
        fit_total = 0.0
        units = cost_units(family, params)
        fold_times: list[float] = []
        for step in range(len(self.splits)):
            if not clock.fits(family, units, len(self.splits) - step, fold_times):
                if clock.nothing_fits(len(self.splits)):
                    trial.study.stop()
                raise BudgetSkip(family)
            fold = fit_fold(self.data, family, params, step, clock.left)
            model = fold.model
            clock.record(family, units, fold.fit_s)
            fold_times.append(fold.fit_s)
            fit_total += fold.fit_s
            scores.append(fold.score)
            mean = float(np.mean(scores))
            trial.report(mean if higher_is_better(self.metric) else -mean, step)
            if trial.should_prune():
                raise optuna.TrialPruned("pruned")
        assert model is not None
        self._record(trial.number, family, params, scores, fit_total / len(scores), model, clock)
        return float(np.mean(scores))

    def _record(
        self,
        number: int,
        family: str,
        params: dict[str, Any],
        scores: list[float],
        fit_s: float,
        model: Pipeline,
        clock: Clock,
        workers: list[str] | None = None,
    ) -> None:
        candidate = Candidate(
            number, family, params, float(np.mean(scores)), float(np.std(scores)), fit_s
        )
        candidate.workers = workers or []
        started = time.perf_counter()
        try:
            candidate.latency_p99_ms, candidate.size_mb = self.measure(model)
        except Exception as exc:  # a candidate that cannot be exported is never chosen
            candidate.note = f"export failed: {exc}"[:200]
        clock.measure_times.append(time.perf_counter() - started)
        candidate.within_budget = self._within_budget(candidate)
        self.candidates.append(candidate)
        if self.on_trial:
            self.on_trial(candidate, clock.left())

    def _within_budget(self, candidate: Candidate) -> bool:
        if candidate.latency_p99_ms is None or candidate.size_mb is None:
            return False
        limits = self.spec.constraints
        too_slow = limits.max_latency_p99_ms is not None and (
            candidate.latency_p99_ms > limits.max_latency_p99_ms
        )
        too_big = limits.max_size_mb is not None and candidate.size_mb > limits.max_size_mb
        notes = ["latency over budget"] * too_slow + ["size over budget"] * too_big
        candidate.note = ", ".join(notes) or candidate.note
        return not (too_slow or too_big)

    def run(self) -> SearchResult:
        started = time.perf_counter()
        clock = Clock(deadline=started + self.spec.search.time_budget_s)
        # Budget-cut trials are caught as FAIL on purpose; Optuna would log each as a warning.
        optuna.logging.set_verbosity(logging.ERROR)
        study = self._study()
        with threadpool_limits(limits=fit_threads()):
            study.optimize(
                lambda trial: self._objective(clock, trial),
                n_trials=self.spec.search.trials,
                timeout=self.spec.search.time_budget_s,
                # A trial cut by the deadline says nothing about its settings: as a FAIL, TPE
                # ignores it, where a PRUNED trial would steer it away from slower families.
                catch=(ValueError, ArithmeticError, BudgetSkip),
            )
        return self._result(study, time.perf_counter() - started)

    def _study(self) -> optuna.Study:
        direction: Literal["maximize", "minimize"] = (
            "maximize" if higher_is_better(self.metric) else "minimize"
        )
        study = optuna.create_study(
            direction=direction,
            sampler=optuna.samplers.TPESampler(seed=self.spec.search.seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1),
        )
        # A previous best first (retraining), then the cheapest families first: whatever the
        # budget, a quick candidate finishes early. Families no longer searched are left out.
        for family, params in self.warm_start.items():
            if family in self.spec.search.families:
                study.enqueue_trial({"family": family}, user_attrs={"warm_start": params})
        for family in sorted(self.spec.search.families, key=COST_ORDER.index):
            study.enqueue_trial({"family": family}, user_attrs={"defaults": True})
        return study

    def _result(self, study: optuna.Study, elapsed: float) -> SearchResult:
        sign = 1.0 if higher_is_better(self.metric) else -1.0
        ordered = sorted(self.candidates, key=lambda c: -sign * c.score)
        mark_pareto(ordered, sign)
        eligible = [c for c in ordered if c.within_budget]
        best = eligible[0] if eligible else None
        if best:
            best.chosen = True
        states = [t.state for t in study.trials]
        pruned = states.count(optuna.trial.TrialState.PRUNED)
        ran = (
            pruned
            + states.count(optuna.trial.TrialState.COMPLETE)
            + states.count(optuna.trial.TrialState.FAIL)
        )
        return SearchResult(self.metric, ordered, best, elapsed, ran, pruned)


def mark_pareto(candidates: list[Candidate], sign: float) -> None:
    """Non-dominated on (score, latency, size) among measured candidates."""
    measured = [c for c in candidates if c.latency_p99_ms is not None and c.size_mb is not None]

    def key(c: Candidate) -> tuple[float, float, float]:
        return (-sign * c.score, c.latency_p99_ms or 0.0, c.size_mb or 0.0)

    for c in measured:
        mine = key(c)
        c.pareto = not any(
            all(o <= m for o, m in zip(key(other), mine, strict=True)) and key(other) != mine
            for other in measured
        )
