"""Search trials on a Dask cluster: Optuna asks and tells here, the folds are fitted on workers.

The training data is scattered to the workers once. Trials run in rounds of
``trials_in_flight``: a round's trials are asked together, all their folds are submitted at
once (one fold per worker thread), and once the round is done the trials are concluded
(reported fold by fold, pruned or told) in trial-number order. Completion order therefore never
reaches Optuna, and the guarantee is:

- with one trial in flight, the default whenever the cluster has fewer worker threads than two
  trials have folds, the study sees exactly what the local search sees: the same settings in
  the same order, the same fold scores, the same best candidate;
- with k > 1 trials in flight the run is reproducible for the same k and seed, but trials of a
  round are asked before the round's earlier trials are told, so the settings differ from
  the local run's.

Both hold while the wall-clock budget does not cut trials (a cut depends on timings).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import pandas as pd
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from ferry.core.spec import Spec
from ferry.distributed.cluster import dask_client, worker_threads
from ferry.training.candidates import cost_units, fit_threads
from ferry.training.features import FeatureLayout
from ferry.training.search import (
    BudgetSkip,
    Candidate,
    Clock,
    FoldData,
    Measure,
    Search,
    SearchResult,
    fit_fold,
    higher_is_better,
)

if TYPE_CHECKING:
    from distributed import Client, Future

# What a local search catches as a failed trial (``Search.run``'s ``catch``).
_TRIAL_FAILURES = (ValueError, ArithmeticError, BudgetSkip)


@dataclass
class WorkerFold:
    """A fold fitted on a worker: its score, fit time, the worker, and the model if asked."""

    score: float
    fit_s: float
    worker: str
    model: Pipeline | None = None


def fit_fold_on_worker(
    data: FoldData,
    family: str,
    params: dict[str, Any],
    fold: int,
    deadline: float,
    keep_model: bool,
) -> WorkerFold:
    """Runs on a worker. ``deadline`` is wall-clock (``time.time``): clocks of other machines
    share no ``perf_counter`` origin with the client."""
    from distributed import get_worker

    with threadpool_limits(limits=fit_threads()):
        result = fit_fold(data, family, params, fold, lambda: deadline - time.time())
    model = result.model if keep_model else None
    return WorkerFold(result.score, result.fit_s, get_worker().address, model)


@dataclass
class _Planned:
    trial: optuna.Trial
    family: str
    params: dict[str, Any]
    units: float
    fits: bool  # False: not started, the budget would be exceeded
    folds: list[Future] = field(default_factory=list)


class DaskSearch(Search):
    """``Search`` whose trials' folds are fitted on the workers of ``client``."""

    def __init__(
        self,
        spec: Spec,
        layout: FeatureLayout,
        frame: pd.DataFrame,
        target: np.ndarray,
        *,
        client: Client,
        measure: Measure,
        on_trial: Callable[[Candidate | None, float], None] | None = None,
        labels: list[str] | None = None,
        warm_start: dict[str, dict[str, Any]] | None = None,
        trials_in_flight: int | None = None,
    ) -> None:
        super().__init__(
            spec,
            layout,
            frame,
            target,
            measure=measure,
            on_trial=on_trial,
            labels=labels,
            warm_start=warm_start,
        )
        self.client = client
        self.slots = worker_threads(client)
        self.trials_in_flight = trials_in_flight or max(1, self.slots // len(self.splits))

    def run(self) -> SearchResult:
        started = time.perf_counter()
        clock = Clock(deadline=started + self.spec.search.time_budget_s)
        optuna.logging.set_verbosity(logging.ERROR)
        study = self._study()
        data = self.client.scatter(self.data, broadcast=True, hash=False)
        asked, stop = 0, False
        while not stop and asked < self.spec.search.trials and clock.left() > 0:
            size = min(self.trials_in_flight, self.spec.search.trials - asked)
            planned = [self._plan(study.ask(), clock, size) for _ in range(size)]
            asked += size
            self._submit(data, planned, clock)
            stop = any([self._conclude(study, clock, p) for p in planned])
        return self._result(study, time.perf_counter() - started)

    def _plan(self, trial: optuna.Trial, clock: Clock, size: int) -> _Planned:
        family = trial.suggest_categorical("family", self.spec.search.families)
        params = self._params(trial, family)
        units = cost_units(family, params)
        # The round's folds run side by side: it lasts about this many fold fits.
        waves = math.ceil(size * len(self.splits) / max(1, self.slots))
        return _Planned(trial, family, params, units, clock.fits(family, units, waves, []))

    def _submit(self, data: Future, planned: list[_Planned], clock: Clock) -> None:
        deadline = time.time() + clock.left()
        last = len(self.splits) - 1
        for plan in (p for p in planned if p.fits):
            plan.folds = [
                self.client.submit(
                    fit_fold_on_worker,
                    data,
                    plan.family,
                    plan.params,
                    fold,
                    deadline,
                    fold == last,  # the model the local search measures: its last fold's
                    pure=False,
                )
                for fold in range(len(self.splits))
            ]

    def _conclude(self, study: optuna.Study, clock: Clock, plan: _Planned) -> bool:
        """Report, prune or tell one trial, as ``Search._objective`` would; True to stop."""
        if not plan.fits:
            study.tell(plan.trial, state=optuna.trial.TrialState.FAIL)
            return clock.nothing_fits(len(self.splits))
        try:
            folds: list[WorkerFold] = [f.result() for f in plan.folds]
        except _TRIAL_FAILURES:
            study.tell(plan.trial, state=optuna.trial.TrialState.FAIL)
            return False
        except BaseException:
            study.tell(plan.trial, state=optuna.trial.TrialState.FAIL)
            raise
        scores: list[float] = []
        for step, fold in enumerate(folds):
            clock.record(plan.family, plan.units, fold.fit_s)
            scores.append(fold.score)
            mean = float(np.mean(scores))
            plan.trial.report(mean if higher_is_better(self.metric) else -mean, step)
            if plan.trial.should_prune():
                study.tell(plan.trial, state=optuna.trial.TrialState.PRUNED)
                return False
        model = folds[-1].model
        assert model is not None
        fit_s = float(np.mean([f.fit_s for f in folds]))
        workers = sorted({f.worker for f in folds})
        number = plan.trial.number
        self._record(number, plan.family, plan.params, scores, fit_s, model, clock, workers)
        study.tell(plan.trial, float(np.mean(scores)))
        return False


def search_on_cluster(
    address: str,
    spec: Spec,
    layout: FeatureLayout,
    frame: pd.DataFrame,
    target: np.ndarray,
    **options: Any,
) -> SearchResult:
    """``DaskSearch(...).run()`` on the scheduler at ``address``."""
    with dask_client(address) as client:
        return DaskSearch(spec, layout, frame, target, client=client, **options).run()
