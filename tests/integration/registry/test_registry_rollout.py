"""Rollout in the registry, on SQLite and PostgreSQL: alias weights, routes, rollback, the CLI,
and the 0002 migration of a database created at 0001."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from typer.testing import CliRunner, Result

from ferry.cli import console as console_module
from ferry.cli.registry import registry_app
from ferry.errors import NotFoundError, RegistryError
from ferry.registry import Registry, open_registry
from ferry.registry.migrations import alembic_config
from ferry.registry.records import AliasTarget
from ferry.registry.sql import SqlStore, normalize_url

BundleFactory = Callable[..., Path]
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


@pytest.fixture
def three(registry: Registry, make_bundle: BundleFactory) -> Registry:
    for _ in range(3):
        registry.register("fraud", make_bundle(), actor="alice")
    return registry


@contextmanager
def counted_queries(store: SqlStore) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    engine = store._engine
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)


@pytest.mark.parametrize("weight", [0, -0.1, 1.5, math.nan, math.inf])
def test_weights_outside_zero_to_one_are_refused(three: Registry, weight: float) -> None:
    with pytest.raises(RegistryError, match=r"invalid weight .*expected the share of traffic"):
        three.set_alias("fraud", "canary", 2, actor="alice", weight=weight)
    assert three.routes("fraud") == {}


def test_a_weight_change_is_a_move_with_an_event(three: Registry) -> None:
    three.set_alias("fraud", "canary", 2, actor="alice", weight=0.1)
    three.set_alias("fraud", "canary", 2, actor="alice", weight=0.1)  # same: no event
    three.set_alias("fraud", "canary", 2, actor="bob", weight=0.25, reason="widen")

    moves = [e for e in three.events("fraud") if e.kind == "alias_set"]
    assert [(e.actor, e.details["weight"]) for e in moves] == [("bob", 0.25), ("alice", 0.1)]
    assert moves[0].details == {
        "alias": "canary",
        "from": 2,
        "to": 2,
        "weight": 0.25,
        "from_weight": 0.1,
    }
    assert three.routes("fraud") == {"canary": AliasTarget(2, 0.25)}
    three.set_alias("fraud", "canary", 2, actor="bob")  # dropping the weight is a change too
    assert three.routes("fraud")["canary"].weight is None
    assert len([e for e in three.events("fraud") if e.kind == "alias_set"]) == 3


def test_routes_are_every_alias_in_one_query(three: Registry) -> None:
    assert three.routes("fraud") == {}
    three.set_alias("fraud", "production", 1, actor="alice")
    three.set_alias("fraud", "canary", 2, actor="alice", weight=0.3)
    three.set_alias("fraud", "shadow", 3, actor="alice")

    with counted_queries(three.store) as statements:
        routes = three.routes("fraud")
    assert routes == {
        "canary": AliasTarget(2, 0.3),
        "production": AliasTarget(1, None),
        "shadow": AliasTarget(3, None),
    }
    assert len(statements) == 1
    with pytest.raises(NotFoundError, match="'churn' is not in the registry"):
        three.routes("churn")
    summary = three.list_models()[0]
    assert summary["aliases"] == {"canary": 2, "production": 1, "shadow": 3}
    assert summary["weights"] == {"canary": 0.3}


def test_rollback_moves_the_alias_back_and_records_it(three: Registry) -> None:
    three.set_alias("fraud", "production", 1, actor="alice")
    three.set_alias("fraud", "production", 2, actor="alice", reason="promote")

    back = three.rollback("fraud", actor="bob", reason="auc dropped")

    assert (back.version, back.aliases) == (1, ["production"])
    assert three.resolve("fraud@production").version == 1
    rollback, moved = three.events("fraud", limit=2)
    assert (rollback.kind, rollback.actor, rollback.reason) == ("rollback", "bob", "auc dropped")
    assert rollback.details == {"alias": "production", "from": 2, "to": 1}
    assert rollback.version == 1
    assert (moved.kind, moved.details["from"], moved.details["to"]) == ("alias_set", 2, 1)
    # A rollback is a move, so the next one undoes it.
    assert three.rollback("fraud", actor="bob").version == 2


def test_rollback_restores_the_weight_and_leaves_other_aliases(three: Registry) -> None:
    three.set_alias("fraud", "production", 1, actor="alice")
    three.set_alias("fraud", "canary", 2, actor="alice", weight=0.1)
    three.set_alias("fraud", "canary", 3, actor="alice", weight=0.3)
    three.set_alias("fraud", "production", 3, actor="alice")

    assert three.rollback("fraud", "canary", actor="bob").version == 2
    assert three.routes("fraud") == {
        "canary": AliasTarget(2, 0.1),
        "production": AliasTarget(3, None),
    }


def test_rollback_without_an_earlier_version_says_what_to_do(three: Registry) -> None:
    three.set_alias("fraud", "production", 1, actor="alice")
    with pytest.raises(RegistryError, match=r"no earlier version.*ferry registry alias fraud"):
        three.rollback("fraud", actor="bob")
    with pytest.raises(NotFoundError, match="no alias 'canary'"):
        three.rollback("fraud", "canary", actor="bob")
    with pytest.raises(NotFoundError, match="'churn' is not in the registry"):
        three.rollback("churn", actor="bob")
    # After a delete and a fresh set there is nothing to go back to either.
    three.set_alias("fraud", "canary", 2, actor="alice")
    three.delete_alias("fraud", "canary", actor="alice")
    three.set_alias("fraud", "canary", 3, actor="alice")
    with pytest.raises(RegistryError, match="no earlier version"):
        three.rollback("fraud", "canary", actor="bob")
    assert three.resolve("fraud@production").version == 1
    assert [e.kind for e in three.events("fraud")].count("rollback") == 0


def _create_at_0001(url: str) -> None:
    """A database as Ferry 0001 left it: its schema plus a model, versions and an alias."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0001")
            now = "2025-01-01 00:00:00"
            conn.execute(
                sa.text("INSERT INTO models (name, created_at) VALUES ('fraud', :t)"), {"t": now}
            )
            for version in (1, 2):
                conn.execute(
                    sa.text(
                        "INSERT INTO versions (model, version, created_at, artifact_key, "
                        "manifest, metrics, task, status) VALUES ('fraud', :v, :t, :k, '{}', "
                        "'{}', 'binary', 'ready')"
                    ),
                    {"v": version, "t": now, "k": f"bundles/fraud/{version}"},
                )
            conn.execute(
                sa.text(
                    "INSERT INTO aliases (model, alias, version, updated_at) "
                    "VALUES ('fraud', 'production', 2, :t)"
                ),
                {"t": now},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO events (model, version, kind, actor, reason, at, details) "
                    "VALUES ('fraud', 2, 'alias_set', 'old', '', :t, :d)"
                ),
                {"t": now, "d": '{"alias": "production", "from": 1, "to": 2}'},
            )
    finally:
        engine.dispose()


def _revision(url: str) -> str | None:
    engine = sa.create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def test_a_0001_database_is_migrated_and_keeps_its_data(
    registry_url: str, artifacts_dir: Path
) -> None:
    _create_at_0001(registry_url)
    assert _revision(registry_url) == "0001"

    with open_registry(registry_url, str(artifacts_dir)) as registry:
        assert _revision(registry_url) == HEAD
        assert registry.routes("fraud") == {"production": AliasTarget(2, None)}
        registry.set_alias("fraud", "canary", 1, actor="alice", weight=0.2)
        assert registry.routes("fraud")["canary"] == AliasTarget(1, 0.2)
        # An event written before 0002 has no weights; rolling back from it still works.
        assert registry.rollback("fraud", actor="bob").version == 1
        assert registry.routes("fraud")["production"] == AliasTarget(1, None)


# ---- CLI ---------------------------------------------------------------------------------


@pytest.fixture
def invoke(
    registry_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Result]:
    monkeypatch.setattr(console_module.console, "_width", 200)  # no wrapped table cells
    env = {
        "FERRY_HOME": str(tmp_path / "home"),
        "FERRY_REGISTRY_URL": registry_url,
        "FERRY_ARTIFACTS_URL": "",
        "FERRY_ACTOR": "alice",
    }

    def run(*args: str) -> Result:
        return CliRunner().invoke(registry_app, list(args), env=env)

    return run


def _ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_cli_weights_and_rollback(
    invoke: Callable[..., Result],
    make_bundle: BundleFactory,
    registry_url: str,
    tmp_path: Path,
) -> None:
    for _ in range(3):
        _ok(invoke("register", "fraud", str(make_bundle())))
    _ok(invoke("alias", "fraud", "production", "1"))
    _ok(invoke("alias", "fraud", "production", "2"))
    shown = _ok(invoke("alias", "fraud", "canary", "3", "--weight", "0.1"))
    assert "fraud@canary -> fraud:3 (weight 0.1)" in shown

    listing = _ok(invoke("list"))
    assert "canary -> 3 (weight 0.1)" in listing and "production -> 2" in listing
    assert "production -> 2 (weight" not in listing
    assert "canary (weight 0.1)" in _ok(invoke("show", "fraud"))
    assert "canary (weight 0.1)" in _ok(invoke("show", "fraud@canary"))

    rolled = _ok(invoke("rollback", "fraud", "--reason", "errors up"))
    assert "fraud@production rolled back: fraud:2 -> fraud:1" in rolled
    events = _ok(invoke("events", "fraud", "--limit", "1"))
    assert "rollback" in events and "errors up" in events

    bad = invoke("alias", "fraud", "canary", "3", "--weight", "2")
    assert isinstance(bad.exception, RegistryError) and "weight" in str(bad.exception)
    never = invoke("rollback", "fraud", "--alias", "canary")
    assert isinstance(never.exception, RegistryError) and "no earlier" in str(never.exception)
    with open_registry(registry_url, str(tmp_path / "home" / "artifacts")) as registry:
        assert registry.routes("fraud") == {
            "canary": AliasTarget(3, 0.1),
            "production": AliasTarget(1, None),
        }
        assert registry.events("fraud", limit=1)[0].actor == "alice"
