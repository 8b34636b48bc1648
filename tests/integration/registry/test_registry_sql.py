"""The SQL store: migrations on open, schema equal to the code's tables, backend settings."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from ferry.errors import RegistryError
from ferry.registry import open_registry
from ferry.registry.migrations import alembic_config
from ferry.registry.records import NewVersion
from ferry.registry.sql import SqlStore, metadata, normalize_url

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def _revision(store: SqlStore) -> str | None:
    engine = sa.create_engine(store.url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _new(name: str = "fraud", key: str = "bundles/fraud/a") -> NewVersion:
    return NewVersion(
        name=name, artifact_key=key, manifest={"name": name}, metrics={}, task="binary"
    )


def test_opening_migrates_to_head_and_reopening_is_a_no_op(registry_url: str) -> None:
    with SqlStore(registry_url) as store:
        store.add_version(_new(), actor="alice", reason="")
        assert _revision(store) == HEAD
    for _ in range(2):
        with SqlStore(registry_url) as store:
            assert _revision(store) == HEAD
            assert store.version_numbers("fraud") == [1]


def test_migrated_schema_matches_the_tables_in_code(registry_url: str) -> None:
    with SqlStore(registry_url) as store:
        engine = sa.create_engine(store.url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    engine.dispose()
    assert differences == []


def test_a_database_from_a_newer_ferry_is_refused(registry_url: str) -> None:
    with SqlStore(registry_url) as store:
        engine = sa.create_engine(store.url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(RegistryError, match="upgrade Ferry"):
        SqlStore(registry_url)


def test_the_primary_key_backstops_duplicate_numbers(registry_url: str) -> None:
    with SqlStore(registry_url) as store:
        store.add_version(_new(), actor="alice", reason="")
        engine = sa.create_engine(store.url)
    row = {"model": "fraud", "version": 1, "created_at": "2025-01-01", "artifact_key": "x"}
    row |= {"manifest": "{}", "metrics": "{}", "task": "binary", "status": "ready"}
    columns = ", ".join(row)
    values = ", ".join(f":{key}" for key in row)
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO versions ({columns}) VALUES ({values})"), row)
    engine.dispose()


def test_sqlite_uses_wal_and_enforces_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "registry.db"
    with SqlStore(f"sqlite:///{path}") as store:
        store.add_version(_new(), actor="alice", reason="")
        with pytest.raises(sa.exc.IntegrityError):
            store.add_event("ghost", "alert", actor="x", reason="", version=None, details={})
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.postgres
def test_plain_postgresql_urls_use_psycopg(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql://")
    with SqlStore(postgres_url) as store:
        assert store.url.drivername == "postgresql+psycopg"
        assert store.dialect == "postgresql"


def test_url_checks() -> None:
    assert normalize_url("postgres://u:p@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"
    with pytest.raises(RegistryError, match="unsupported registry database 'mysql'"):
        normalize_url("mysql://u@h/db")
    with pytest.raises(RegistryError, match="expected sqlite:///PATH"):
        normalize_url("not a url")


def test_an_unreachable_server_is_named_without_its_password(tmp_path: Path) -> None:
    # Port 1 on localhost refuses at once; nothing listens there.
    url = "postgresql://ferry:hunter2@127.0.0.1:1/registry?connect_timeout=2"
    with pytest.raises(RegistryError, match="FERRY_REGISTRY_URL") as err:
        open_registry(url, str(tmp_path / "artifacts"))
    assert "hunter2" not in str(err.value)
