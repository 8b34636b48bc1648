"""A retraining job: challenger data → search → gates against the champion → rollout.

One job per model at a time, across processes (a lock in the registry database). Every step
is recorded as a registry event, so `ferry registry events NAME` tells the whole story.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ferry.core.spec import Spec
from ferry.errors import NotFoundError
from ferry.lab import ExtraData, Observer, TrainOutcome, train
from ferry.monitoring.predlog import PredictionStore
from ferry.registry.locks import JobLocks
from ferry.registry.service import ModelVersion, Registry
from ferry.retraining.compare import Comparison
from ferry.retraining.gates import Contest, all_checks, spec_checks
from ferry.retraining.production import ProductionData, production_data
from ferry.retraining.rollout import PRODUCTION, Rollout, RolloutResult
from ferry.retraining.scoring import BundleScorer
from ferry.retraining.verdict import Verdict

LOCK_TTL_S = 120.0


@dataclass
class RetrainOutcome:
    champion: ModelVersion | None
    challenger: ModelVersion | None
    verdict: Verdict
    verdict_html: Path
    data: ProductionData | None
    training: TrainOutcome
    rollout: RolloutResult | None


@dataclass
class RetrainJob:
    spec: Spec
    registry: Registry
    store: PredictionStore | None
    home: Path
    actor: str = "ferry-retrain"
    trigger: str = "manual"
    reason: str = ""
    observer: Observer | None = None
    roll_out: bool = True
    on_step: Callable[[str], None] = lambda text: None

    @property
    def name(self) -> str:
        return self.spec.name

    def run(self) -> RetrainOutcome:
        owner = f"{socket.gethostname()}:{os.getpid()}"
        with JobLocks(self.registry.store).held(f"retrain/{self.name}", owner, LOCK_TTL_S):
            try:
                return self._run()
            except Exception as exc:
                # Recorded so whoever watches the events (the quick start, an operator) sees
                # the job end, not only its start.
                self._event("retrain_failed", None, str(exc)[:500], {"error": type(exc).__name__})
                raise

    def _run(self) -> RetrainOutcome:
        champion = self._champion()
        self._event(
            "retrain_started",
            champion,
            self.reason or f"trigger: {self.trigger}",
            {"trigger": self.trigger, "champion": champion.version if champion else None},
        )
        data = self._data(champion)
        self.on_step(_data_story(data))
        training = self._train(champion, data)
        assert training.version is not None
        verdict, html = self._judge(champion, training, data)
        kind = "challenger_passed" if verdict.passed else "challenger_rejected"
        self._event(kind, training.version, verdict.summary(), _verdict_details(verdict, html))
        self.on_step(verdict.summary())
        rollout = None
        if verdict.passed and self.roll_out:
            rollout = self._roll_out(champion, training)
        return RetrainOutcome(champion, training.version, verdict, html, data, training, rollout)

    def _champion(self) -> ModelVersion | None:
        try:
            return self.registry.resolve(f"{self.name}@{PRODUCTION}")
        except NotFoundError:
            return None  # a first model: it only has to pass the spec's gates

    def _data(self, champion: ModelVersion | None) -> ProductionData | None:
        section = self.spec.retraining.production_data
        if self.store is None or not section.use or champion is None:
            return None
        return production_data(
            self.store, self.name, self.spec.data.target, section, seed=self.spec.split.seed
        )

    def _train(self, champion: ModelVersion | None, data: ProductionData | None) -> TrainOutcome:
        spec = self.spec.model_copy(deep=True)
        if spec.retraining.time_budget_s is not None:
            spec.search.time_budget_s = spec.retraining.time_budget_s
        extra = None
        if data is not None and champion is not None:
            extra = ExtraData(data.train, data.fingerprint, champion.version)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        return train(
            spec,
            self.home / "runs" / f"{self.name}-retrain-{stamp}",
            registry=self.registry,
            actor=self.actor,
            observer=self.observer,
            extra=extra,
            reason=f"challenger ({self.trigger})",
            warm_start=_warm_start(spec, champion),
        )

    def _judge(
        self, champion: ModelVersion | None, training: TrainOutcome, data: ProductionData | None
    ) -> tuple[Verdict, Path]:
        assert training.version is not None and training.prepared is not None
        summary = data.summary() if data is not None else {"labelled_rows": 0}
        comparisons: list[Comparison] = []
        if champion is None:
            checks = spec_checks(training.evaluation.gates)
        else:
            contest = Contest(
                BundleScorer(self.registry.fetch(champion.ref, self.home / "cache")),
                BundleScorer(training.bundle_dir),
                data.holdout if data is not None else training.prepared.split.test.iloc[:0],
                training.prepared.split.test,
            )
            checks, comparisons = all_checks(contest, self.spec, training.evaluation.gates)
        verdict = Verdict(
            self.name,
            champion.version if champion else None,
            training.version.version,
            checks,
            comparisons,
            summary,
        )
        _, html = verdict.write(training.run_dir / "verdict")
        return verdict, html

    def _roll_out(self, champion: ModelVersion | None, training: TrainOutcome) -> RolloutResult:
        assert training.version is not None
        if champion is None:
            self.registry.set_alias(
                self.name,
                PRODUCTION,
                training.version.version,
                actor=self.actor,
                reason="first version to pass its gates",
            )
            return RolloutResult(True, "direct", "first production version", {})
        return Rollout(
            self.registry,
            self.store,
            self.spec,
            champion.version,
            training.version.version,
            training.manifest.task,
            training.manifest.labels,
            actor=self.actor,
            on_step=self.on_step,
        ).run()

    def _event(
        self, kind: str, version: ModelVersion | None, reason: str, details: dict[str, Any]
    ) -> None:
        if self.registry.store.latest_number(self.name) is None:
            return  # no model yet: events need one to belong to
        self.registry.record_event(
            self.name,
            kind,
            actor=self.actor,
            reason=reason,
            version=version.version if version else None,
            details=details,
        )


def _warm_start(spec: Spec, champion: ModelVersion | None) -> dict[str, dict[str, Any]] | None:
    """The champion's family and parameters, tried first by the challenger's search."""
    if champion is None or not spec.retraining.warm_start:
        return None
    lineage = champion.manifest.get("lineage", {})
    family, params = lineage.get("family"), lineage.get("params")
    if family not in spec.search.families or not params:
        return None
    return {family: params}


def _data_story(data: ProductionData | None) -> str:
    if data is None:
        return "challenger data: the spec's data only"
    return (
        f"challenger data: the spec's data + {len(data.train)} labelled production rows "
        f"({data.labelled} labelled, {len(data.holdout)} newest held out for the gates)"
    )


def _verdict_details(verdict: Verdict, html: Path) -> dict[str, Any]:
    return {
        "passed": verdict.passed,
        "failed": [c.name for c in verdict.failed()],
        "checks": {c.name: c.passed for c in verdict.checks},
        "comparisons": [c.as_dict() for c in verdict.comparisons],
        "report": str(html),
        "data": verdict.data,
    }
