"""The model registry: register bundles, resolve refs, move aliases, record events, fetch.

Versions are immutable: nothing here changes one after it is registered. A registration uploads
the bundle under a fresh key first and then inserts the version row and its event in one
transaction; that insert is the commit point, so a crash before it leaves at most an orphan
upload that no version points at, never a half version.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from ferry.core.bundle import BundleManifest, verify_bundle
from ferry.core.refs import ModelRef, check_alias, check_name, parse_ref
from ferry.errors import BundleError, NotFoundError, RegistryError
from ferry.registry.artifacts import ArtifactStore
from ferry.registry.records import AliasTarget, Event, ModelVersion, NewVersion
from ferry.registry.sql import SqlStore

__all__ = ["AliasTarget", "Event", "ModelVersion", "Registry"]

KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
MAX_ACTOR_LENGTH = 128
_LISTED = 20  # how many existing names an error message lists


def _check_actor(actor: str) -> str:
    actor = actor.strip()
    if not actor or len(actor) > MAX_ACTOR_LENGTH:
        raise RegistryError(
            f"invalid actor {actor!r}: expected who made the change, 1-{MAX_ACTOR_LENGTH} "
            "characters (set FERRY_ACTOR or pass actor=...)"
        )
    return actor


def _check_kind(kind: str) -> str:
    if not KIND_PATTERN.match(kind):
        raise RegistryError(
            f"invalid event kind {kind!r}: expected 1-64 lower-case letters, digits, '_' or '.', "
            "starting with a letter, e.g. 'alert' or 'promotion'"
        )
    return kind


def _check_details(details: dict[str, Any]) -> None:
    try:
        json.dumps(details, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RegistryError(
            f"event details must be JSON (strings, finite numbers, lists, dicts): {exc}; "
            "convert values such as numpy floats or datetimes first"
        ) from exc


def _check_weight(weight: float | None) -> float | None:
    if weight is None:
        return None
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise RegistryError(f"invalid weight {weight!r}: expected a number in (0, 1], e.g. 0.1")
    if not (math.isfinite(weight) and 0 < weight <= 1):
        raise RegistryError(
            f"invalid weight {weight}: expected the share of traffic in (0, 1], e.g. 0.1 for "
            "10%; to send a canary no traffic, delete its alias instead"
        )
    return float(weight)


def _describe_versions(numbers: list[int]) -> str:
    if len(numbers) <= 10:
        return ", ".join(str(n) for n in numbers)
    return f"{numbers[0]} to {numbers[-1]} ({len(numbers)} versions)"


def _new_version(name: str, key: str, manifest: BundleManifest) -> NewVersion:
    lineage = manifest.lineage
    return NewVersion(
        name=name,
        artifact_key=key,
        manifest=manifest.model_dump(mode="json"),
        metrics=manifest.metrics.model_dump(mode="json"),
        task=manifest.task,
        parent_version=lineage.parent_version,
        spec_hash=lineage.spec_hash,
        data_fingerprint=lineage.data_fingerprint,
    )


class Registry:
    """Model versions, aliases and events over a ``SqlStore`` and an ``ArtifactStore``."""

    def __init__(self, store: SqlStore, artifacts: ArtifactStore) -> None:
        self.store = store
        self.artifacts = artifacts

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- changes ------------------------------------------------------------------------

    def register(
        self, name: str, bundle_dir: Path, *, actor: str, reason: str = ""
    ) -> ModelVersion:
        """Verify the bundle, upload it, then number it; the number is assigned last."""
        check_name(name)
        actor = _check_actor(actor)
        manifest = verify_bundle(bundle_dir)
        if manifest.name != name:
            raise RegistryError(
                f"bundle {bundle_dir.name!r} is for model {manifest.name!r}, not {name!r}: "
                f"register it as {manifest.name!r} or re-export it with name {name!r}"
            )
        # Unique per attempt: concurrent or retried registrations never share files.
        key = f"bundles/{name}/{uuid.uuid4().hex}"
        try:
            self.artifacts.put_dir(bundle_dir, key)
            new = _new_version(name, key, manifest)
            return self.store.add_version(new, actor=actor, reason=reason)
        except BaseException:
            self._discard(key)
            raise

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        actor: str,
        reason: str = "",
        weight: float | None = None,
    ) -> ModelVersion:
        """Point ``alias`` at ``version`` (moving it if it exists) and record who and why.

        ``weight`` (0 < w <= 1) is the share of traffic the alias asks for: a server that
        serves ``NAME@production`` sends that share to ``NAME@canary``. Changing only the
        weight is a change too, recorded like a move.
        """
        check_alias(alias)
        weight = _check_weight(weight)
        target = self.get(name, version)
        self.store.set_alias(
            name, alias, version, actor=_check_actor(actor), reason=reason, weight=weight
        )
        return self.get(name, target.version)

    def rollback(
        self, name: str, alias: str = "production", *, actor: str, reason: str = ""
    ) -> ModelVersion:
        """Move ``alias`` back to where it pointed before its latest move (version and weight).

        Records the move (``alias_set``) and a ``rollback`` event. Rolling back twice undoes
        the first rollback: each one undoes the latest move, and a rollback is a move.
        """
        check_alias(alias)
        self._require_model(name)
        actor = _check_actor(actor)
        if self.store.alias_target(name, alias) is None:
            raise self._missing_alias(name, alias)
        moved = self.store.rollback_alias(name, alias, actor=actor, reason=reason)
        if moved is None:
            raise RegistryError(
                f"{name}@{alias} has no earlier version to roll back to: it has not moved "
                f"since it was set (see `ferry registry events {name}`); point it at a "
                f"version with `ferry registry alias {name} {alias} VERSION`"
            )
        return self.get(name, moved[1])

    def delete_alias(self, name: str, alias: str, *, actor: str, reason: str = "") -> None:
        check_alias(alias)
        self._require_model(name)
        removed = self.store.delete_alias(name, alias, actor=_check_actor(actor), reason=reason)
        if removed is None:
            raise self._missing_alias(name, alias)

    def record_event(
        self,
        name: str,
        kind: str,
        *,
        actor: str,
        reason: str = "",
        version: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> Event:
        """Record something that happened to a model (an alert, a promotion decision, ...)."""
        self._require_model(name)
        if version is not None:
            self.get(name, version)
        _check_details(details or {})
        return self.store.add_event(
            name,
            _check_kind(kind),
            actor=_check_actor(actor),
            reason=reason,
            version=version,
            details=dict(details or {}),
        )

    # ---- lookups ------------------------------------------------------------------------

    def get(self, name: str, version: int) -> ModelVersion:
        return self.resolve(ModelRef(check_name(name), version=version))

    def resolve(self, ref: str | ModelRef) -> ModelVersion:
        """``fraud`` (latest), ``fraud:3`` or ``fraud@production`` to the version it names."""
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        if ref.alias is not None:
            number = self.store.alias_target(ref.name, ref.alias)
            if number is None:
                raise self._missing_alias(ref.name, ref.alias)
        elif ref.version is not None:
            number = ref.version
        else:
            number = self.store.latest_number(ref.name)
            if number is None:
                raise self._missing_model(ref.name)
        found = self.store.get_version(ref.name, number)
        if found is None:
            raise self._missing_version(ref.name, number)
        return found

    def routes(self, name: str) -> dict[str, AliasTarget]:
        """Every alias of a model, {alias: AliasTarget(version, weight)}, in one query."""
        found = self.store.routes(check_name(name))
        if not found:  # only then a second query, to tell "no aliases" from "no such model"
            self._require_model(name)
        return found

    def list_models(self) -> list[dict[str, Any]]:
        """One dict per model: name, latest_version, aliases {alias: version}, weights
        {alias: weight} (weighted aliases only), updated_at."""
        return self.store.model_summaries()

    def list_versions(self, name: str) -> list[ModelVersion]:
        self._require_model(name)
        return self.store.list_versions(name)

    def events(self, name: str | None = None, limit: int = 100) -> list[Event]:
        """Events newest first, of one model or of all."""
        if limit < 1:
            raise RegistryError(f"invalid event limit {limit}: expected a positive integer")
        if name is not None:
            self._require_model(name)
        return self.store.events(name, limit)

    # ---- fetching -----------------------------------------------------------------------

    def fetch(self, ref: str | ModelRef, dest_root: Path) -> Path:
        """Download a version's bundle to ``dest_root/NAME/VERSION`` (reused when intact)."""
        version = self.resolve(ref)
        dest = dest_root / version.name / str(version.version)
        if dest.is_dir():
            if self._is_intact(dest, version):
                return dest
            shutil.rmtree(dest)  # tampered or half-written cache: fetch it again
        return self._download(version, dest)

    def _download(self, version: ModelVersion, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.parent / f".partial-{uuid.uuid4().hex}"
        try:
            self.artifacts.get_dir(version.artifact_key, partial)
            self._check_download(partial, version)
            try:
                partial.rename(dest)  # atomic: readers never see a half-downloaded bundle
            except OSError:
                if not self._is_intact(dest, version):  # another process won the race
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return dest

    def _check_download(self, directory: Path, version: ModelVersion) -> None:
        try:
            manifest = verify_bundle(directory)
        except BundleError as exc:
            message = f"stored artifacts of {version.ref} failed verification: {exc}"
            raise BundleError(message) from exc
        # The registry database, not the artifact store, is the record of what was registered.
        if manifest.files != version.manifest.get("files"):
            raise BundleError(
                f"stored artifacts of {version.ref} do not match what was registered: the "
                "artifact store was modified; re-register the model from its bundle"
            )

    def _is_intact(self, directory: Path, version: ModelVersion) -> bool:
        try:
            self._check_download(directory, version)
        except BundleError:
            return False
        return True

    def _discard(self, key: str) -> None:
        # Best effort: cleanup must not hide the registration's own error.
        with contextlib.suppress(Exception):
            self.artifacts.delete(key)

    # ---- errors that say what does exist ------------------------------------------------

    def _require_model(self, name: str) -> None:
        check_name(name)
        if self.store.latest_number(name) is None:
            raise self._missing_model(name)

    def _missing_model(self, name: str) -> NotFoundError:
        names = self.store.model_names()
        known = ", ".join(names[:_LISTED]) if names else "none yet"
        if len(names) > _LISTED:
            known += f", ... ({len(names)} in all; see `ferry registry list`)"
        return NotFoundError(
            f"model {name!r} is not in the registry; registered models: {known}. "
            "Register a bundle with `ferry registry register NAME BUNDLE_DIR`"
        )

    def _missing_version(self, name: str, number: int) -> NotFoundError:
        numbers = self.store.version_numbers(name)
        if not numbers:
            return self._missing_model(name)
        return NotFoundError(
            f"model {name!r} has no version {number}; its versions are "
            f"{_describe_versions(numbers)}"
        )

    def _missing_alias(self, name: str, alias: str) -> NotFoundError:
        if self.store.latest_number(name) is None:
            return self._missing_model(name)
        existing = self.store.aliases(name)
        known = ", ".join(f"{a} -> {v}" for a, v in existing.items()) or "none yet"
        return NotFoundError(
            f"model {name!r} has no alias {alias!r}; its aliases: {known}. "
            f"Set one with `ferry registry alias {name} {alias} VERSION`"
        )
