"""Canary routing: the routing-key hash, the split it gives, and shadow comparison."""

from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from ferry.errors import FerryError
from ferry.serving.routing import Rollout, bucket, disagreements, routing_key, to_canary


def test_the_bucket_is_pinned_so_replicas_and_releases_agree() -> None:
    # A change here moves users between production and canary mid-rollout: keep it fixed.
    assert bucket("fraud", "user-1") == pytest.approx(0.754253002412209, abs=1e-15)
    assert bucket("churn", "user-1") == pytest.approx(0.9385386585273702, abs=1e-15)


def test_the_bucket_is_the_same_in_another_process() -> None:
    code = "from ferry.serving.routing import bucket; print(repr(bucket('fraud', 'user-1')))"
    for seed in ("1", "2"):  # Python's own str hash differs with the seed; ours must not
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout
        assert float(out) == bucket("fraud", "user-1")


def test_keys_spread_evenly_and_stick_as_the_weight_grows() -> None:
    keys = [f"user-{i}" for i in range(20_000)]
    points = np.array([bucket("fraud", k) for k in keys])
    assert points.min() >= 0.0 and points.max() < 1.0
    assert abs(np.mean(points < 0.3) - 0.3) < 0.015
    small = {k for k in keys if to_canary("fraud", k, 0.1)}
    large = {k for k in keys if to_canary("fraud", k, 0.3)}
    assert small < large  # a key in the canary at 10% is still there at 30%
    assert all(to_canary("fraud", k, 1.0) for k in keys[:100])


def test_a_key_always_routes_alike_and_numbers_route_as_their_text() -> None:
    decisions = {to_canary("fraud", "user-7", 0.5) for _ in range(50)}
    assert len(decisions) == 1
    assert [to_canary("fraud", 42, w) for w in (0.2, 0.5, 0.8)] == [
        to_canary("fraud", "42", w) for w in (0.2, 0.5, 0.8)
    ]


def test_without_a_key_the_split_is_random_at_the_weight() -> None:
    random.seed(3)
    share = np.mean([to_canary("fraud", None, 0.3) for _ in range(20_000)])
    assert abs(share - 0.3) < 0.015


def test_routing_keys_are_read_from_v2_parameters_or_the_records_body() -> None:
    assert routing_key({"parameters": {"routing_key": "u1"}}, v2=True) == "u1"
    assert routing_key({"parameters": "not a map"}, v2=True) is None
    assert routing_key({"routing_key": "u1"}, v2=True) is None
    assert routing_key({"routing_key": 7}, v2=False) == 7
    assert routing_key({}, v2=False) is None


@dataclass
class _Manifest:
    task: str


class _Model:
    """Just what ``disagreements`` reads of a loaded model."""

    def __init__(self, task: str, threshold: float = 0.5, version: int = 1) -> None:
        self.manifest = _Manifest(task)
        self.threshold, self.version, self.name = threshold, version, "m"

    def decide(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        return np.where(outputs["probabilities"][:, 1] >= self.threshold, "yes", "no")


def _proba(positive: list[float]) -> dict[str, np.ndarray]:
    p = np.asarray(positive)
    return {"probabilities": np.stack([1 - p, p], axis=1)}


def test_classifiers_disagree_on_labels_after_each_ones_threshold() -> None:
    answered, shadow = _Model("binary", 0.5), _Model("binary", 0.3)
    outputs = _proba([0.1, 0.4, 0.6, 0.35])
    # Same probabilities, other threshold: 0.4 and 0.35 flip to "yes" for the shadow.
    assert disagreements(answered, outputs, shadow, outputs) == 2  # type: ignore[arg-type]
    assert disagreements(answered, outputs, answered, outputs) == 0  # type: ignore[arg-type]


def test_regressors_disagree_beyond_a_relative_tolerance() -> None:
    answered, shadow = _Model("regression"), _Model("regression")
    first = {"variable": np.array([[100.0], [100.0], [0.0], [1.0], [np.nan]])}
    second = {"variable": np.array([[100.05], [100.2], [0.0], [1.0], [1.0]])}
    # within 1e-3, beyond it, both zero, equal, NaN on one side
    assert disagreements(answered, first, shadow, second) == 2  # type: ignore[arg-type]
    with pytest.raises(FerryError, match="same task"):
        disagreements(answered, first, _Model("binary"), _proba([0.2]))  # type: ignore[arg-type]


def test_a_rollout_describes_itself_for_model_metadata() -> None:
    canary: Any = _Model("binary", version=5)
    shadow: Any = _Model("binary", version=6)
    assert Rollout(canary, 0.1, shadow).describe() == {
        "canary": {"version": "5", "weight": 0.1},
        "shadow": {"version": "6"},
    }
    assert Rollout(shadow=shadow).describe() == {"shadow": {"version": "6"}}
    assert Rollout(canary, 0.1, shadow).models() == [canary, shadow]
