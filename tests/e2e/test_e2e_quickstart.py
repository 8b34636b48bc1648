"""``ferry quickstart``: the whole loop on builtin:fraud in under five minutes: train, serve,
normal then drifted traffic with late labels, drift alert, retraining, gates, canary,
promotion; then a deliberately worse challenger is rejected with its failed gate named."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import pytest
import yaml

from ferry.registry import open_registry

if TYPE_CHECKING:
    from conftest import Ferry

WALL_CLOCK_LIMIT_S = 300  # the target on this machine
LOOP = [
    "alert_firing",  # FerryDriftShareHigh on version 1
    "retrain_triggered",
    "retrain_started",
    "registered",
    "challenger_passed",
    "alias_set",  # canary
    "alias_set",  # production
    "alias_deleted",  # canary
    "promoted",
]


def _in_order(kinds: list[str], expected: list[str]) -> bool:
    remaining = iter(kinds)
    return all(any(kind == wanted for kind in remaining) for wanted in expected)


@pytest.mark.slow
def test_quickstart_runs_the_whole_loop_and_a_worse_challenger_is_rejected(ferry: Ferry) -> None:
    run = ferry("quickstart", "--no-serve", "--time-budget", "30", timeout=WALL_CLOCK_LIMIT_S + 120)
    run.ok()
    assert run.seconds < WALL_CLOCK_LIMIT_S, f"took {run.seconds:.0f} s\n{run}"
    out = run.stdout
    assert "registered: fraud:1" in out and "alias: fraud@production -> 1" in out
    assert "alert FerryDriftShareHigh fired" in out and "canary: fraud:2" in out
    assert "promoted fraud:2 to production" in out
    failures = re.search(r"rows served \(.*\), (\d+) failed", out)
    assert failures is not None and failures.group(1) == "0", out  # none during canary/promotion

    home = ferry.home
    with open_registry(f"sqlite:///{home / 'registry.db'}", str(home / "artifacts")) as registry:
        events = list(reversed(registry.events("fraud", limit=500)))
        kinds = [e.kind for e in events if e.kind != "alert_resolved"]
        assert _in_order(kinds, LOOP), kinds
        moves = [(e.details["alias"], e.details["to"]) for e in events if e.kind == "alias_set"]
        assert moves[-2:] == [("canary", 2), ("production", 2)]
        assert registry.resolve("fraud@production").version == 2
        passed = next(e for e in events if e.kind == "challenger_passed")
        recent = passed.details["comparisons"][0]
        assert recent["dataset"] == "recent" and recent["ci_low"] > 0
        report = ferry.cwd / passed.details["report"]  # absolute paths stay as they are
        verdict = json.loads(report.with_suffix(".json").read_text())
        assert verdict["passed"] and verdict["challenger"] == 2

    spec = yaml.safe_load((home / "quickstart" / "ferry.yaml").read_text())
    spec["data"]["drop"] = ["amount", "distance_from_home_km", "txn_count_24h", "device"]
    spec["search"]["families"] = ["logistic"]
    worse = ferry.cwd / "worse.yaml"
    worse.write_text(yaml.safe_dump(spec))
    rejected = ferry("retrain", "fraud", "--spec", str(worse), "--time-budget", "10", timeout=300)
    assert rejected.returncode == 1, str(rejected)
    assert "challenger rejected" in rejected.stdout and "beats_champion_recent" in rejected.stdout
    shown = ferry("registry", "show", "fraud@production").ok()
    assert "fraud:2" in shown.stdout
