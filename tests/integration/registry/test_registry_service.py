"""Registry behaviour on SQLite and PostgreSQL: register, resolve, aliases, events, fetch."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Callable
from datetime import UTC
from pathlib import Path

import pytest

from ferry.core.bundle import MODEL, Lineage
from ferry.core.refs import ModelRef
from ferry.errors import BundleError, NotFoundError, RefError, RegistryError
from ferry.registry import Registry
from ferry.registry.sql import SqlStore

BundleFactory = Callable[..., Path]


def test_register_then_resolve_by_version_alias_and_latest(
    registry: Registry, make_bundle: BundleFactory
) -> None:
    lineage = Lineage(spec_hash="abc123", data_fingerprint="fp42", parent_version=None)
    first = registry.register(
        "fraud", make_bundle(test_metrics={"auc": 0.91}, lineage=lineage), actor="alice"
    )
    second = registry.register("fraud", make_bundle(), actor="bob", reason="retrained")
    registry.set_alias("fraud", "production", 1, actor="alice")

    assert (first.version, second.version) == (1, 2)
    assert first.metrics["test"] == {"auc": 0.91}
    assert (first.task, first.spec_hash, first.data_fingerprint) == ("binary", "abc123", "fp42")
    assert first.created_at.tzinfo is not None and first.created_at.utcoffset() == UTC.utcoffset(
        None
    )
    assert registry.resolve("fraud:1") == dataclasses.replace(first, aliases=["production"])
    assert registry.resolve("fraud@production").version == 1
    assert registry.resolve("fraud").version == 2
    assert registry.resolve(ModelRef("fraud", version=2)).artifact_key == second.artifact_key
    assert registry.get("fraud", 1).manifest["files"][MODEL] == first.manifest["files"][MODEL]


def test_unknown_refs_say_what_exists(registry: Registry, make_bundle: BundleFactory) -> None:
    registry.register("fraud", make_bundle(), actor="alice")
    registry.set_alias("fraud", "production", 1, actor="alice")

    with pytest.raises(NotFoundError, match=r"'churn' is not in the registry.*fraud"):
        registry.resolve("churn@production")
    with pytest.raises(NotFoundError, match=r"no version 7; its versions are 1"):
        registry.resolve("fraud:7")
    with pytest.raises(NotFoundError, match=r"no alias 'staging'; its aliases: production -> 1"):
        registry.resolve("fraud@staging")
    with pytest.raises(NotFoundError, match="registered models: fraud"):
        registry.list_versions("churn")
    with pytest.raises(RefError):
        registry.resolve("../etc@x")


def test_register_rejects_wrong_name_and_bad_bundles(
    registry: Registry, make_bundle: BundleFactory, artifacts_dir: Path
) -> None:
    with pytest.raises(RegistryError, match=r"for model 'churn', not 'fraud'"):
        registry.register("fraud", make_bundle("churn"), actor="alice")
    tampered = make_bundle()
    (tampered / MODEL).write_bytes(b"something else")
    with pytest.raises(BundleError, match="sha256"):
        registry.register("fraud", tampered, actor="alice")
    with pytest.raises(RegistryError, match="actor"):
        registry.register("fraud", make_bundle(), actor="  ")

    assert registry.list_models() == []
    assert not (artifacts_dir / "bundles").exists()


def test_versions_are_immutable_and_reregistering_adds_a_version(
    registry: Registry, make_bundle: BundleFactory
) -> None:
    bundle = make_bundle()
    first = registry.register("fraud", bundle, actor="alice")
    again = registry.register("fraud", bundle, actor="alice")

    assert again.version == 2 and again.artifact_key != first.artifact_key
    assert registry.get("fraud", 1) == first
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.version = 5  # type: ignore[misc]
    mutators = {"update", "update_version", "delete_version", "set_metrics", "overwrite"}
    assert not mutators & set(dir(registry)) and not mutators & set(dir(registry.store))


def test_a_failure_between_upload_and_commit_leaves_no_version(
    registry: Registry,
    make_bundle: BundleFactory,
    artifacts_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated crash after the version row, before commit")

    with monkeypatch.context() as patch:
        patch.setattr(SqlStore, "_insert_event", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            registry.register("fraud", make_bundle(), actor="alice")

    assert registry.list_models() == []
    assert list((artifacts_dir / "bundles" / "fraud").iterdir()) == []  # staged upload removed
    assert registry.register("fraud", make_bundle(), actor="alice").version == 1


def test_alias_moves_are_evented_with_from_and_to(
    registry: Registry, make_bundle: BundleFactory
) -> None:
    for _ in range(2):
        registry.register("fraud", make_bundle(), actor="alice")
    registry.set_alias("fraud", "production", 1, actor="alice", reason="first release")
    moved = registry.set_alias("fraud", "production", 2, actor="bob", reason="better auc")
    registry.set_alias("fraud", "production", 2, actor="bob")  # no change, no event

    assert moved.aliases == ["production"] and registry.get("fraud", 1).aliases == []
    latest = registry.events("fraud", limit=2)
    assert [(e.kind, e.actor, e.reason, e.version) for e in latest] == [
        ("alias_set", "bob", "better auc", 2),
        ("alias_set", "alice", "first release", 1),
    ]
    assert latest[0].details == {
        "alias": "production",
        "from": 1,
        "to": 2,
        "weight": None,
        "from_weight": None,
    }
    with pytest.raises(NotFoundError, match="no version 3"):
        registry.set_alias("fraud", "production", 3, actor="bob")
    assert registry.resolve("fraud@production").version == 2


def test_delete_alias(registry: Registry, make_bundle: BundleFactory) -> None:
    registry.register("fraud", make_bundle(), actor="alice")
    registry.set_alias("fraud", "staging", 1, actor="alice")
    registry.delete_alias("fraud", "staging", actor="carol", reason="retired")

    with pytest.raises(NotFoundError, match="its aliases: none yet"):
        registry.resolve("fraud@staging")
    with pytest.raises(NotFoundError, match="no alias 'staging'"):
        registry.delete_alias("fraud", "staging", actor="carol")
    event = registry.events("fraud", limit=1)[0]
    assert (event.kind, event.actor, event.reason) == ("alias_deleted", "carol", "retired")
    assert event.details == {"alias": "staging", "from": 1, "to": None}


def test_concurrent_alias_moves_form_one_chain(
    registry: Registry, make_bundle: BundleFactory
) -> None:
    for _ in range(3):
        registry.register("fraud", make_bundle(), actor="alice")
    registry.set_alias("fraud", "production", 1, actor="alice")
    seen: set[int] = set()
    stop = threading.Event()

    def mover(versions: list[int]) -> None:
        for version in versions * 5:
            registry.set_alias("fraud", "production", version, actor="mover")

    def reader() -> None:
        while not stop.is_set():
            seen.add(registry.resolve("fraud@production").version)

    watcher = threading.Thread(target=reader)
    watcher.start()
    movers = [threading.Thread(target=mover, args=(v,)) for v in ([2, 3], [3, 1])]
    for thread in movers:
        thread.start()
    for thread in movers:
        thread.join()
    stop.set()
    watcher.join()

    # Each move's "from" is the previous move's "to": no move was lost or interleaved.
    moves = [e.details for e in reversed(registry.events("fraud")) if e.kind == "alias_set"]
    assert all(b["from"] == a["to"] for a, b in itertools.pairwise(moves))
    assert moves[-1]["to"] == registry.resolve("fraud@production").version
    assert seen <= {1, 2, 3}


def test_events_newest_first_filtered_and_limited(
    registry: Registry, make_bundle: BundleFactory
) -> None:
    registry.register("fraud", make_bundle(), actor="alice")
    registry.register("churn", make_bundle("churn"), actor="alice")
    alert = registry.record_event(
        "fraud", "alert", actor="monitor", reason="psi > 0.2", version=1, details={"psi": 0.31}
    )

    everything = registry.events()
    assert [(e.model, e.kind) for e in everything] == [
        ("fraud", "alert"),
        ("churn", "registered"),
        ("fraud", "registered"),
    ]
    assert everything[0] == alert and alert.details == {"psi": 0.31}
    assert [e.kind for e in registry.events("fraud", limit=1)] == ["alert"]
    assert [e.id for e in everything] == sorted((e.id for e in everything), reverse=True)
    with pytest.raises(NotFoundError):
        registry.record_event("nope", "alert", actor="monitor")
    with pytest.raises(NotFoundError, match="no version 9"):
        registry.record_event("fraud", "alert", actor="monitor", version=9)
    with pytest.raises(RegistryError, match="invalid event kind"):
        registry.record_event("fraud", "Drop Table", actor="monitor")
    with pytest.raises(RegistryError, match="event details must be JSON"):
        registry.record_event("fraud", "alert", actor="monitor", details={"at": object()})
    assert len(registry.events()) == 3


def test_list_models_summarises(registry: Registry, make_bundle: BundleFactory) -> None:
    registry.register("fraud", make_bundle(), actor="alice")
    registry.register("fraud", make_bundle(), actor="alice")
    registry.register("churn", make_bundle("churn"), actor="alice")
    registry.set_alias("fraud", "production", 1, actor="alice")

    summaries = registry.list_models()
    assert [(s["name"], s["latest_version"], s["aliases"]) for s in summaries] == [
        ("churn", 1, {}),
        ("fraud", 2, {"production": 1}),
    ]
    assert summaries[1]["updated_at"] >= summaries[0]["updated_at"]
    assert summaries[1]["updated_at"].tzinfo is not None
    assert [v.version for v in registry.list_versions("fraud")] == [1, 2]


def test_fetch_verifies_and_refreshes_a_tampered_cache(
    registry: Registry, make_bundle: BundleFactory, tmp_path: Path
) -> None:
    registry.register("fraud", make_bundle(model=b"the real model"), actor="alice")
    registry.set_alias("fraud", "production", 1, actor="alice")
    cache = tmp_path / "cache"

    path = registry.fetch("fraud@production", cache)
    assert path == cache / "fraud" / "1" and (path / MODEL).read_bytes() == b"the real model"
    (path / MODEL).write_bytes(b"tampered")
    assert registry.fetch("fraud:1", cache) == path
    assert (path / MODEL).read_bytes() == b"the real model"
    assert [p.name for p in (cache / "fraud").iterdir()] == ["1"]  # no partial dirs left


def test_fetch_refuses_a_tampered_artifact_store(
    registry: Registry, make_bundle: BundleFactory, artifacts_dir: Path, tmp_path: Path
) -> None:
    version = registry.register("fraud", make_bundle(), actor="alice")
    # Replace model AND manifest consistently: only the database copy can catch this.
    forged = make_bundle(model=b"a swapped model")
    for name in ("model.onnx", "manifest.json"):
        target = artifacts_dir / version.artifact_key / name
        target.write_bytes((forged / name).read_bytes())

    with pytest.raises(BundleError, match="do not match what was registered"):
        registry.fetch("fraud:1", tmp_path / "cache")
    assert not (tmp_path / "cache" / "fraud" / "1").exists()
