"""Canary and shadow routing: which version answers a request, and how a shadow's answers
compare with the ones that were returned.

A request with a routing key always lands on the same side of the split: the key is hashed
with BLAKE2b (not Python's ``hash()``, which is salted per process) into [0, 1) and compared
with the canary's weight, so every process and replica agrees and a key that went to the
canary at 10% still goes there at 30%. Requests without a key are split at random.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ferry.errors import FerryError
from ferry.serving.model import LoadedModel

PRIMARY, CANARY, SHADOW = "primary", "canary", "shadow"
CANARY_ALIAS, SHADOW_ALIAS = "canary", "shadow"
RELATIVE_TOLERANCE = 1e-3  # regression answers further apart than this disagree
_SCALE = 2.0**64
_TINY = 1e-12


@dataclass(frozen=True)
class Rollout:
    """A served model's canary (with its share of traffic) and shadow, either may be absent."""

    canary: LoadedModel | None = None
    weight: float = 0.0
    shadow: LoadedModel | None = None

    def models(self) -> list[LoadedModel]:
        return [m for m in (self.canary, self.shadow) if m is not None]

    def describe(self) -> dict[str, dict[str, object]]:
        """What model metadata shows of the rollout."""
        shown: dict[str, dict[str, object]] = {}
        if self.canary is not None:
            shown[CANARY] = {"version": str(self.canary.version), "weight": self.weight}
        if self.shadow is not None:
            shown[SHADOW] = {"version": str(self.shadow.version)}
        return shown


def bucket(name: str, key: str) -> float:
    """A point in [0, 1) fixed by the model name and the routing key, the same everywhere.

    The name is part of it so that one user is not in every model's canary at once."""
    digest = hashlib.blake2b(f"{name}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def to_canary(name: str, key: object, weight: float) -> bool:
    """Whether a request goes to the canary: sticky with a key, random without one."""
    if key is None:
        return random.random() < weight
    return bucket(name, str(key)) < weight


def routing_key(body: Mapping[str, object], v2: bool) -> object:
    """The V2 body's ``parameters.routing_key``, or the records body's ``routing_key``."""
    if not v2:
        return body.get("routing_key")
    parameters = body.get("parameters")
    return parameters.get("routing_key") if isinstance(parameters, Mapping) else None


def disagreements(
    answered: LoadedModel,
    outputs: dict[str, np.ndarray],
    shadow: LoadedModel,
    shadow_outputs: dict[str, np.ndarray],
) -> int:
    """Rows where the shadow would have answered differently: another label (after each
    model's own threshold) for classifiers, a relative difference over 1e-3 for regressors."""
    task = answered.manifest.task
    if (task == "regression") != (shadow.manifest.task == "regression"):
        raise FerryError(
            f"shadow {shadow.name}:{shadow.version} is a {shadow.manifest.task} model but "
            f"version {answered.version} is {task}: point the shadow alias at a model of the "
            "same task"
        )
    if task != "regression":
        return int(np.count_nonzero(answered.decide(outputs) != shadow.decide(shadow_outputs)))
    first = _values(outputs)
    second = _values(shadow_outputs)
    scale = np.maximum(np.maximum(np.abs(first), np.abs(second)), _TINY)
    # Written as "not within" so that a NaN on either side counts as a disagreement.
    return int(np.count_nonzero(~(np.abs(first - second) <= RELATIVE_TOLERANCE * scale)))


def _values(outputs: dict[str, np.ndarray]) -> np.ndarray:
    return next(iter(outputs.values())).reshape(-1).astype(np.float64)
