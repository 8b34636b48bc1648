"""When to retrain: k-of-n over drift windows, cooldown, cron; driven by the real detector."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from ferry.core.spec import DriftSpec, TriggerSpec
from ferry.core.stats import ReferenceStats, numeric_reference
from ferry.errors import SpecError
from ferry.monitoring.drift import DriftConfig, DriftDetector
from ferry.retraining.policy import CronSchedule, TriggerPolicy

FEATURES = 10
WINDOW = 500


def _detector(rng: np.random.Generator) -> DriftDetector:
    reference = ReferenceStats()
    for i in range(FEATURES):
        reference.numeric[f"x{i}"] = numeric_reference(rng.normal(size=5000))
    return DriftDetector(reference, DriftConfig(**DriftSpec(window=WINDOW).model_dump()))


def _windows(detector: DriftDetector, rows: np.ndarray) -> list[bool]:
    columns = {f"x{i}": rows[:, i] for i in range(FEATURES)}
    return [any(f.drifted for f in w.features) for w in detector.add(columns)]


def test_no_trigger_over_100_000_undrifted_rows() -> None:
    rng = np.random.default_rng(1)
    detector, policy = _detector(rng), TriggerPolicy(TriggerSpec(k=2, n=3, cooldown_s=0))
    triggers = 0
    for chunk in range(20):
        for signal in _windows(detector, rng.normal(size=(5000, FEATURES))):
            triggers += policy.observe(signal, now=float(chunk))
    assert triggers == 0


def test_trigger_within_three_windows_of_a_half_sigma_shift_on_half_the_features() -> None:
    rng = np.random.default_rng(2)
    detector, policy = _detector(rng), TriggerPolicy(TriggerSpec(k=2, n=3, cooldown_s=0))
    for signal in _windows(detector, rng.normal(size=(10 * WINDOW, FEATURES))):
        assert not policy.observe(signal, now=0.0)
    shifted = rng.normal(size=(3 * WINDOW, FEATURES))
    shifted[:, : FEATURES // 2] += 0.5
    fired = [policy.observe(s, now=1.0) for s in _windows(detector, shifted)]
    assert True in fired and fired.index(True) <= 2, fired


def test_cooldown_holds_back_a_flapping_signal_then_lets_it_through() -> None:
    policy = TriggerPolicy(TriggerSpec(k=1, n=1, cooldown_s=600))
    assert policy.observe(True, now=1000.0)
    assert not any(policy.observe(True, now=1000.0 + t) for t in range(1, 600, 10))
    assert not policy.fire(now=1599.0)  # alerts and the schedule obey the cooldown too
    assert policy.observe(True, now=1601.0)


def test_k_of_n_needs_k_signals_among_the_last_n() -> None:
    policy = TriggerPolicy(TriggerSpec(k=2, n=3, cooldown_s=0))
    assert [policy.observe(s, now=0.0) for s in (True, False, False, True, False)] == [
        False, False, False, False, False,
    ]  # fmt: skip
    assert policy.observe(True, now=0.0)  # True, False, True in the last three


def test_spec_refuses_k_above_n_and_a_bad_cron() -> None:
    with pytest.raises(ValueError, match="larger than n"):
        TriggerSpec(k=4, n=3)
    with pytest.raises(ValueError, match="5 cron fields"):
        TriggerSpec(schedule="0 3 * *")


def _at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M")


def test_cron_next_run() -> None:
    nightly = CronSchedule.parse("0 3 * * *")
    assert _iso(nightly.next_after(_at("2026-11-27 12:00"))) == "2026-11-28 03:00"
    assert _iso(nightly.next_after(_at("2026-11-28 03:00"))) == "2026-11-29 03:00"
    quarter = CronSchedule.parse("*/15 9-17 * * 1-5")  # 2026-11-28 is a Saturday
    assert _iso(quarter.next_after(_at("2026-11-27 17:50"))) == "2026-11-30 09:00"
    assert _iso(quarter.next_after(_at("2026-11-30 09:00"))) == "2026-11-30 09:15"
    # Both day fields restricted: either matches (the 1st, or any Sunday).
    either = CronSchedule.parse("0 0 1 * 0")
    assert _iso(either.next_after(_at("2026-11-27 00:00"))) == "2026-11-29 00:00"


@pytest.mark.parametrize("text", ["61 * * * *", "* * * * * *", "a * * * *", "*/0 * * * *"])
def test_cron_errors_name_the_problem(text: str) -> None:
    with pytest.raises(SpecError, match="cron"):
        CronSchedule.parse(text)
