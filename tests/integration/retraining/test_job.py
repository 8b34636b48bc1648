"""The retraining job on a real registry, prediction log and ONNX Runtime: challenger data,
gates against the champion, rollout (canary promotion and rollback), and the job lock."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ferry.core.spec import Spec, parse_spec
from ferry.data.fraud import fraud
from ferry.lab import train
from ferry.monitoring.predlog import LogConfig, PredictionLog
from ferry.registry import Registry, open_registry
from ferry.registry.locks import JobLocks, LockHeld
from ferry.retraining.job import RetrainJob
from ferry.retraining.rollout import Rollout
from ferry.retraining.scoring import BundleScorer, frame_feeds

pytestmark = pytest.mark.slow

SPEC: dict[str, Any] = {
    "name": "fraud",
    "task": "classification",
    "data": {"source": "builtin:fraud", "target": "is_fraud", "rows": 5000},
    "split": {"test_size": 0.25, "valid_size": 0.15, "time_column": "timestamp"},
    "search": {"families": ["logistic", "lightgbm"], "trials": 6, "time_budget_s": 8},
    "gates": {"min": {"roc_auc": 0.6}},
    "retraining": {
        "production_data": {"holdout_share": 0.3, "min_holdout_rows": 200},
        "rollout": {"mode": "direct"},
    },
}
WORSE_DROP = ["amount", "distance_from_home_km", "txn_count_24h", "device", "account_age_days"]


@dataclass
class World:
    home: Path
    registry: Registry
    log: PredictionLog
    champion: int

    def job(self, spec: Spec, **kwargs: Any) -> RetrainJob:
        return RetrainJob(spec, self.registry, self.log, self.home, actor="test", **kwargs)

    def reset(self) -> None:
        self.registry.set_alias("fraud", "production", self.champion, actor="test")


def _log_production(bundle: Path, log: PredictionLog, version: int) -> None:
    """Drifted traffic with a new fraud pattern, scored by the champion and logged as the
    server's monitor logs it (graph-typed inputs), with every label sent back."""
    scorer = BundleScorer(bundle)
    rows = fraud(3000, seed=7, shift=1.0, concept=2.0)
    feeds, scores = frame_feeds(scorer.manifest, rows), scorer.scores(rows)[:, 1]
    now = time.time() - len(rows)
    logged = [
        {
            "id": f"r{i}",
            "time": now + i,
            "model": "fraud",
            "version": version,
            "inputs": {name: column[i, 0] for name, column in feeds.items()},
            "prediction": "1" if scores[i] >= (scorer.manifest.threshold or 0.5) else "0",
            "score": float(scores[i]),
        }
        for i in range(len(rows))
    ]
    log.write("fraud", logged)
    labels = [
        {"id": f"r{i}", "time": now + i, "label": int(y)} for i, y in enumerate(rows.is_fraud)
    ]
    log.write_labels("fraud", labels)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("home")
    registry = open_registry(f"sqlite:///{home / 'registry.db'}", str(home / "artifacts"))
    outcome = train(parse_spec(SPEC), home / "runs" / "champion", registry=registry, actor="test")
    assert outcome.version is not None
    registry.set_alias("fraud", "production", outcome.version.version, actor="test")
    log = PredictionLog(LogConfig(home / "predictions"))
    _log_production(outcome.bundle_dir, log, outcome.version.version)
    yield World(home, registry, log, outcome.version.version)
    registry.close()


def _kinds_since(registry: Registry, after: int) -> list[str]:
    return [e.kind for e in reversed(registry.events("fraud", limit=100)) if e.id > after]


def _last_event_id(registry: Registry) -> int:
    return registry.events("fraud", limit=1)[0].id


def test_a_challenger_trained_on_production_rows_beats_the_champion(world: World) -> None:
    world.reset()
    before = _last_event_id(world.registry)
    outcome = world.job(parse_spec(SPEC), trigger="drift").run()

    assert outcome.verdict.passed, outcome.verdict.summary()
    checks = {c.name: c for c in outcome.verdict.checks}
    assert checks["beats_champion_recent"].passed and checks["not_worse_test"].passed
    assert {"gates.min.roc_auc"} <= set(checks)
    recent = outcome.verdict.comparisons[0]
    assert recent.dataset == "recent" and recent.ci_low > 0 and recent.rows == 900
    assert _kinds_since(world.registry, before) == [
        "retrain_started",
        "registered",
        "challenger_passed",
        "alias_set",
        "promoted",
    ]
    challenger = outcome.challenger
    assert challenger is not None
    assert world.registry.resolve("fraud@production").version == challenger.version
    lineage = challenger.manifest["lineage"]
    assert challenger.parent_version == world.champion and lineage["production_rows"] == 2100
    champion = world.registry.get("fraud", world.champion).manifest["lineage"]
    first = min(outcome.training.search.candidates, key=lambda c: c.trial).row(1)
    assert (first["family"], first["params"]) == (champion["family"], champion["params"])
    assert outcome.verdict_html.is_file() and outcome.verdict_html.with_suffix(".json").is_file()
    assert "PROMOTABLE" in outcome.verdict_html.read_text()


def test_a_deliberately_worse_challenger_is_rejected_with_the_gate_named(world: World) -> None:
    world.reset()
    worse = parse_spec({**SPEC, "data": {**SPEC["data"], "drop": WORSE_DROP}})
    before = _last_event_id(world.registry)
    outcome = world.job(worse, trigger="manual").run()

    assert not outcome.verdict.passed
    failed = [c.name for c in outcome.verdict.failed()]
    assert "beats_champion_recent" in failed
    assert outcome.rollout is None
    assert world.registry.resolve("fraud@production").version == world.champion
    assert _kinds_since(world.registry, before) == [
        "retrain_started",
        "registered",
        "challenger_rejected",
    ]
    event = world.registry.events("fraud", limit=1)[0]
    assert "beats_champion_recent" in event.details["failed"]
    assert "beats_champion_recent" in event.reason


def _rollout(world: World, challenger: int, sleep: Any, observe_s: float = 30) -> Rollout:
    spec = parse_spec(
        {
            **SPEC,
            "retraining": {
                "rollout": {
                    "mode": "canary",
                    "canary_weight": 0.2,
                    "observe_s": observe_s,
                    "check_interval_s": 1,
                }
            },
        }
    )
    clock = [time.time()]

    def tick(seconds: float) -> None:
        clock[0] += seconds
        sleep()

    return Rollout(
        world.registry,
        world.log,
        spec,
        world.champion,
        challenger,
        "binary",
        ["0", "1"],
        actor="test",
        clock=lambda: clock[0],
        sleep=tick,
    )


def test_a_canary_with_an_error_alert_is_rolled_back(world: World) -> None:
    world.reset()
    challenger = world.registry.list_versions("fraud")[-1].version

    def alert() -> None:
        world.registry.record_event(
            "fraud",
            "alert_firing",
            actor="server",
            reason="errors above 5%",
            version=None,
            details={"alertname": "FerryErrorRateHigh", "kind": "error_rate"},
        )

    result = _rollout(world, challenger, alert).run()
    assert not result.promoted and "FerryErrorRateHigh" in result.detail
    assert "canary" not in world.registry.routes("fraud")
    assert world.registry.resolve("fraud@production").version == world.champion
    assert world.registry.events("fraud", limit=1)[0].kind == "rolled_back"


def test_a_drift_alert_does_not_roll_a_canary_back(world: World) -> None:
    """Drift is in the traffic, which both versions share: it says nothing of the new one."""
    world.reset()
    challenger = world.registry.list_versions("fraud")[-1].version

    def drift() -> None:
        world.registry.record_event(
            "fraud",
            "alert_firing",
            actor="server",
            reason="drift",
            version=challenger,
            details={"alertname": "FerryDriftShareHigh", "kind": "drift_share"},
        )

    result = _rollout(world, challenger, drift, observe_s=3).run()
    assert result.promoted
    assert world.registry.resolve("fraud@production").version == challenger
    assert "canary" not in world.registry.routes("fraud")


def test_a_second_job_is_refused_while_one_holds_the_lock(world: World) -> None:
    locks = JobLocks(world.registry.store)
    with (
        locks.held("retrain/fraud", "other-host:1", ttl_s=60),
        pytest.raises(LockHeld, match="other-host:1"),
    ):
        world.job(parse_spec(SPEC)).run()
