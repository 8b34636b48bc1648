"""What commands take from the settings: the registry, who acts, where a run writes."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ferry.settings import Settings

if TYPE_CHECKING:  # SQLAlchemy and fsspec load only for commands that use the registry
    from ferry.registry.service import Registry


def open_registry(settings: Settings) -> Registry:
    """The registry the settings name (SQLite and files under FERRY_HOME by default)."""
    from ferry.registry import open_registry as open_store

    settings.home.mkdir(parents=True, exist_ok=True)
    return open_store(settings.resolved_registry_url(), settings.resolved_artifacts_url())


def actor(settings: Settings) -> str:
    """Who the audit trail names: FERRY_ACTOR, or the user running the command."""
    return settings.actor or getpass.getuser()


def run_dir(settings: Settings, name: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    return settings.home / "runs" / f"{name}-{stamp}"
