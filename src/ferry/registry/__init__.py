"""The model registry: versions, aliases and events in SQL; bundle files in an artifact store."""

from __future__ import annotations

from ferry.errors import RegistryError
from ferry.registry.artifacts import ArtifactStore
from ferry.registry.records import Event, ModelVersion
from ferry.registry.service import Registry
from ferry.registry.sql import SqlStore

__all__ = ["ArtifactStore", "Event", "ModelVersion", "Registry", "SqlStore", "open_registry"]


def open_registry(registry_url: str, artifacts_url: str) -> Registry:
    """Build a registry from its two URLs (FERRY_REGISTRY_URL and FERRY_ARTIFACTS_URL).

    A local SQLite file's directory and a local artifact directory are created if missing.
    """
    try:
        artifacts = ArtifactStore(artifacts_url)
    except RegistryError as exc:
        raise RegistryError(f"FERRY_ARTIFACTS_URL is not usable: {exc}") from exc
    try:
        store = SqlStore(registry_url)
    except RegistryError as exc:
        raise RegistryError(f"FERRY_REGISTRY_URL is not usable: {exc}") from exc
    return Registry(store, artifacts)
