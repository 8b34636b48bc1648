"""What the registry hands out: immutable records of versions and events.

They live apart from ``service`` so that ``sql`` can build them without importing the service.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

REGISTERED = "registered"
ALIAS_SET = "alias_set"
ALIAS_DELETED = "alias_deleted"
ROLLBACK = "rollback"
# A version row only exists once its registration committed; there is no half-written state.
READY = "ready"


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    created_at: datetime
    artifact_key: str
    manifest: dict[str, Any]
    metrics: dict[str, Any]
    task: str
    parent_version: int | None
    spec_hash: str | None
    data_fingerprint: str | None
    aliases: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class AliasTarget:
    """Where an alias points, and the share of traffic it asks for (None: not weighted)."""

    version: int
    weight: float | None = None


@dataclass(frozen=True)
class Event:
    id: int
    model: str
    version: int | None
    kind: str
    actor: str
    reason: str
    at: datetime
    details: dict[str, Any]


@dataclass(frozen=True)
class NewVersion:
    """Everything a registration stores except the number, which the database allocates."""

    name: str
    artifact_key: str
    manifest: dict[str, Any]
    metrics: dict[str, Any]
    task: str
    parent_version: int | None = None
    spec_hash: str | None = None
    data_fingerprint: str | None = None
