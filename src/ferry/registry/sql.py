"""The registry's tables and ``SqlStore``: the one module that talks SQLAlchemy.

SQLite by default, PostgreSQL for several replicas. Every write first takes the model's lock and
only then reads what it will change: on PostgreSQL ``SELECT ... FOR UPDATE`` on the model row,
on SQLite ``BEGIN IMMEDIATE`` (the database write lock). So a version number is max + 1 without
duplicates or gaps, and an alias move records truthfully which version it moved from. The
primary key on (model, version) and a retry are the backstop if that ever fails.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Dialect, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError

from ferry.errors import RegistryError
from ferry.registry.migrations import upgrade_to_head
from ferry.registry.records import (
    ALIAS_DELETED,
    ALIAS_SET,
    READY,
    REGISTERED,
    ROLLBACK,
    AliasTarget,
    Event,
    ModelVersion,
    NewVersion,
)

_WRITE = "ferry_write"
# The BEGIN IMMEDIATE hook below needs the stdlib sqlite3 driver's transaction control.
_SQLITE_DRIVERS = ("sqlite", "sqlite+pysqlite")
_RETRIES = 5
# Any fixed 64-bit number; it only has to be the same in every Ferry process.
_MIGRATION_LOCK = 0x46455252595F5245
EXPECTED_URLS = "sqlite:///PATH/registry.db or postgresql://USER:PASSWORD@HOST:5432/DATABASE"


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes on both backends (SQLite stores naive text, so UTC is implied)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return _as_utc(value)


def _as_utc(value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # an aggregate over a SQLite column may skip the type
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData()

models = sa.Table(
    "models",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("description", sa.Text(), nullable=True),
)
versions = sa.Table(
    "versions",
    metadata,
    sa.Column(
        "model",
        sa.String(128),
        sa.ForeignKey("models.name", name="fk_versions_model"),
        nullable=False,
    ),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("artifact_key", sa.String(512), nullable=False),
    sa.Column("manifest", sa.Text(), nullable=False),
    sa.Column("metrics", sa.JSON(), nullable=False),
    sa.Column("task", sa.String(32), nullable=False),
    sa.Column("parent_version", sa.Integer(), nullable=True),
    sa.Column("spec_hash", sa.String(128), nullable=True),
    sa.Column("data_fingerprint", sa.String(128), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.PrimaryKeyConstraint("model", "version", name="pk_versions"),
    sa.UniqueConstraint("artifact_key", name="uq_versions_artifact_key"),
)
aliases = sa.Table(
    "aliases",
    metadata,
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("alias", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    # The share of traffic the alias asks for (a canary's); None: not weighted.
    sa.Column("weight", sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint("model", "alias", name="pk_aliases"),
    sa.ForeignKeyConstraint(
        ["model", "version"], ["versions.model", "versions.version"], name="fk_aliases_version"
    ),
)
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True),
    sa.Column(
        "model",
        sa.String(128),
        sa.ForeignKey("models.name", name="fk_events_model"),
        nullable=False,
    ),
    sa.Column("version", sa.Integer(), nullable=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("details", sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint("id", name="pk_events"),
    sa.ForeignKeyConstraint(
        ["model", "version"], ["versions.model", "versions.version"], name="fk_events_version"
    ),
    sa.Index("ix_events_model_id", "model", "id"),
)


# Job locks (registry.locks): one row per held name; epoch seconds, so expiry is plain arithmetic.
job_locks = sa.Table(
    "job_locks",
    metadata,
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("acquired_at", sa.Float(), nullable=False),
    sa.Column("expires_at", sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint("name", name="pk_job_locks"),
)


def _now() -> datetime:
    return datetime.now(UTC)


def normalize_url(url: str) -> URL:
    """Parse a registry URL; plain ``postgresql://`` means the psycopg 3 driver Ferry ships with."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise RegistryError(
            f"invalid registry database URL {url!r}: expected {EXPECTED_URLS}"
        ) from exc
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername.startswith("postgresql+") or parsed.drivername in _SQLITE_DRIVERS:
        return parsed
    raise RegistryError(
        f"unsupported registry database {parsed.drivername!r}: expected {EXPECTED_URLS}"
    )


def _sqlite_dir(url: URL) -> None:
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def _enable_wal(dbapi_connection: sqlite3.Connection, busy_timeout: float) -> None:
    # Switching to WAL needs a moment alone with the file and, unlike other statements, does
    # not wait on the busy timeout: two processes creating the database at once get
    # "database is locked" at once. So wait here, as the busy timeout would.
    deadline = time.monotonic() + busy_timeout
    delay = 0.005
    while True:
        try:
            dbapi_connection.execute("PRAGMA journal_mode=WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def _configure_sqlite(engine: Engine, busy_timeout: float) -> None:
    @sa_event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from sqlite3 so that the BEGIN below starts each one.
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA foreign_keys=ON")
        _enable_wal(dbapi_connection, busy_timeout)

    @sa_event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front: a deferred BEGIN would read, then fail to
        # upgrade its lock when another writer got there first ("database is locked").
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _create_engine(url: URL, busy_timeout: float) -> Engine:
    try:
        if url.get_backend_name() == "sqlite":
            _sqlite_dir(url)
            engine = sa.create_engine(url, connect_args={"timeout": busy_timeout})
            _configure_sqlite(engine, busy_timeout)
            return engine
        return sa.create_engine(url, pool_pre_ping=True)
    except (NoSuchModuleError, ImportError) as exc:
        raise RegistryError(
            f"no driver for registry database {url.drivername!r}: {exc}; for PostgreSQL "
            "install the extra: pip install 'ferry-ml[postgres]'"
        ) from exc


class SqlStore:
    """Registry metadata in SQL. Opening it brings the schema to the latest migration."""

    def __init__(self, url: str, *, busy_timeout: float = 30.0) -> None:
        self.url = normalize_url(url)
        self._engine = _create_engine(self.url, busy_timeout)
        self._migrate()

    @property
    def display_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        with self._write() as conn:
            if self.dialect == "postgresql":
                # Transaction-scoped: released at commit, even if this process dies.
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            upgrade_to_head(conn)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._translated(), self._engine.connect() as conn:
            conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._translated(), self._engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except IntegrityError:
            raise  # add_version retries on these; callers check existence before writing
        except DBAPIError as exc:
            raise RegistryError(
                f"registry database {self.display_url} failed: {exc.orig}. Check that it is "
                "reachable and not locked by a stuck process"
            ) from exc

    # ---- writes -------------------------------------------------------------------------

    def add_version(self, new: NewVersion, *, actor: str, reason: str) -> ModelVersion:
        """Allocate the next number and insert the version and its event in one transaction."""
        for attempt in range(_RETRIES):
            try:
                with self._write() as conn:
                    number = self._next_version(conn, new.name)
                    created = self._insert_version(conn, new, number)
                    self._insert_event(conn, new.name, number, REGISTERED, actor, reason, {})
                return ModelVersion(**asdict(new), version=number, created_at=created)
            except IntegrityError as exc:
                if attempt == _RETRIES - 1:
                    raise RegistryError(
                        f"could not allocate a version number for {new.name!r} after "
                        f"{_RETRIES} attempts: {exc.orig}"
                    ) from exc
        raise AssertionError("unreachable")

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        actor: str,
        reason: str,
        weight: float | None = None,
    ) -> None:
        with self._write() as conn:
            self._lock_model(conn, name)
            previous = self._alias_row(conn, name, alias)
            wanted = AliasTarget(version, weight)
            if previous != wanted:  # the same version and weight is not a change, nor an event
                self._move_alias(conn, name, alias, previous, wanted, actor, reason)

    def rollback_alias(
        self, name: str, alias: str, *, actor: str, reason: str
    ) -> tuple[int, int] | None:
        """Undo the alias's latest move (version and weight) in one transaction.

        Returns (from, to), or None when the alias is missing or was never moved from a version.
        """
        with self._write() as conn:
            self._lock_model(conn, name)
            current = self._alias_row(conn, name, alias)
            move = self._last_move(conn, name, alias)
            if current is None or move is None or move.get("from") is None:
                return None
            back = AliasTarget(int(move["from"]), move.get("from_weight"))
            self._move_alias(conn, name, alias, current, back, actor, reason)
            details = {"alias": alias, "from": current.version, "to": back.version}
            self._insert_event(conn, name, back.version, ROLLBACK, actor, reason, details)
            return current.version, back.version

    def _move_alias(
        self,
        conn: Connection,
        name: str,
        alias: str,
        previous: AliasTarget | None,
        wanted: AliasTarget,
        actor: str,
        reason: str,
    ) -> None:
        changed = {"version": wanted.version, "weight": wanted.weight, "updated_at": _now()}
        statement = self._insert(conn, aliases).values(model=name, alias=alias, **changed)
        conn.execute(
            statement.on_conflict_do_update(index_elements=["model", "alias"], set_=changed)
        )
        details = {
            "alias": alias,
            "from": None if previous is None else previous.version,
            "to": wanted.version,
            "weight": wanted.weight,
            # Kept so that a rollback restores the weight too, not only the version.
            "from_weight": None if previous is None else previous.weight,
        }
        self._insert_event(conn, name, wanted.version, ALIAS_SET, actor, reason, details)

    def delete_alias(self, name: str, alias: str, *, actor: str, reason: str) -> int | None:
        """Remove an alias; return the version it pointed at, or None when there was none."""
        with self._write() as conn:
            self._lock_model(conn, name)
            previous = self._alias_target(conn, name, alias)
            if previous is None:
                return None
            where = (aliases.c.model == name) & (aliases.c.alias == alias)
            conn.execute(sa.delete(aliases).where(where))
            details = {"alias": alias, "from": previous, "to": None}
            self._insert_event(conn, name, previous, ALIAS_DELETED, actor, reason, details)
            return previous

    def add_event(
        self,
        name: str,
        kind: str,
        *,
        actor: str,
        reason: str,
        version: int | None,
        details: dict[str, Any],
    ) -> Event:
        with self._write() as conn:
            event_id, at = self._insert_event(conn, name, version, kind, actor, reason, details)
        return Event(event_id, name, version, kind, actor, reason, at, details)

    @staticmethod
    def _insert(conn: Connection, table: sa.Table) -> Any:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        return dialect.insert(table)

    def _lock_model(self, conn: Connection, name: str) -> None:
        # FOR UPDATE is a no-op on SQLite, where BEGIN IMMEDIATE already holds the write lock.
        conn.execute(sa.select(models.c.name).where(models.c.name == name).with_for_update())

    def _next_version(self, conn: Connection, name: str) -> int:
        created = self._insert(conn, models).values(name=name, created_at=_now())
        conn.execute(created.on_conflict_do_nothing(index_elements=["name"]))
        self._lock_model(conn, name)
        query = sa.select(sa.func.max(versions.c.version)).where(versions.c.model == name)
        return int(conn.execute(query).scalar() or 0) + 1

    def _insert_version(self, conn: Connection, new: NewVersion, number: int) -> datetime:
        row = asdict(new) | {"version": number, "created_at": _now(), "status": READY}
        row["model"] = row.pop("name")
        row["manifest"] = json.dumps(new.manifest, sort_keys=True)
        conn.execute(sa.insert(versions).values(**row))
        return row["created_at"]

    def _insert_event(
        self,
        conn: Connection,
        name: str,
        version: int | None,
        kind: str,
        actor: str,
        reason: str,
        details: dict[str, Any],
    ) -> tuple[int, datetime]:
        at = _now()
        row: dict[str, Any] = {"model": name, "version": version, "kind": kind, "actor": actor}
        row |= {"reason": reason, "at": at, "details": details}
        result = conn.execute(sa.insert(events).values(**row).returning(events.c.id))
        return int(result.scalar_one()), at

    # ---- reads --------------------------------------------------------------------------

    def model_names(self) -> list[str]:
        with self._read() as conn:
            return list(conn.execute(sa.select(models.c.name).order_by(models.c.name)).scalars())

    def version_numbers(self, name: str) -> list[int]:
        query = sa.select(versions.c.version).where(versions.c.model == name)
        with self._read() as conn:
            return list(conn.execute(query.order_by(versions.c.version)).scalars())

    def latest_number(self, name: str) -> int | None:
        query = sa.select(sa.func.max(versions.c.version)).where(versions.c.model == name)
        with self._read() as conn:
            latest = conn.execute(query).scalar()
        return None if latest is None else int(latest)

    def alias_target(self, name: str, alias: str) -> int | None:
        with self._read() as conn:
            return self._alias_target(conn, name, alias)

    def aliases(self, name: str) -> dict[str, int]:
        return {alias: target.version for alias, target in self.routes(name).items()}

    def routes(self, name: str) -> dict[str, AliasTarget]:
        """Every alias of a model with its version and weight, in one query."""
        columns = (aliases.c.alias, aliases.c.version, aliases.c.weight)
        query = sa.select(*columns).where(aliases.c.model == name).order_by(aliases.c.alias)
        with self._read() as conn:
            return {row.alias: AliasTarget(row.version, row.weight) for row in conn.execute(query)}

    def get_version(self, name: str, number: int) -> ModelVersion | None:
        found = self._versions(name, versions.c.version == number)
        return found[0] if found else None

    def list_versions(self, name: str) -> list[ModelVersion]:
        return self._versions(name, sa.true())

    def model_summaries(self) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(sa.select(models).order_by(models.c.name)).all()
            latest = _grouped(conn, versions.c.model, sa.func.max(versions.c.version))
            updated = _grouped(conn, events.c.model, sa.func.max(events.c.at))
            links = conn.execute(sa.select(aliases).order_by(aliases.c.alias)).all()
        return [_summary(row, latest, updated, links) for row in rows]

    def events(self, name: str | None, limit: int) -> list[Event]:
        query = sa.select(events).order_by(events.c.id.desc()).limit(limit)
        if name is not None:
            query = query.where(events.c.model == name)
        with self._read() as conn:
            return [Event(**row._mapping) for row in conn.execute(query)]

    def _alias_target(self, conn: Connection, name: str, alias: str) -> int | None:
        where = (aliases.c.model == name) & (aliases.c.alias == alias)
        return conn.execute(sa.select(aliases.c.version).where(where)).scalar()

    def _alias_row(self, conn: Connection, name: str, alias: str) -> AliasTarget | None:
        where = (aliases.c.model == name) & (aliases.c.alias == alias)
        row = conn.execute(sa.select(aliases.c.version, aliases.c.weight).where(where)).first()
        return None if row is None else AliasTarget(row.version, row.weight)

    def _last_move(self, conn: Connection, name: str, alias: str) -> dict[str, Any] | None:
        """Details of the latest ``alias_set`` event of this alias."""
        query = (
            sa.select(events.c.details)
            .where(
                (events.c.model == name)
                & (events.c.kind == ALIAS_SET)
                & (events.c.details["alias"].as_string() == alias)
            )
            .order_by(events.c.id.desc())
            .limit(1)
        )
        details = conn.execute(query).scalar()
        return None if details is None else dict(details)

    def _versions(self, name: str, condition: Any) -> list[ModelVersion]:
        query = sa.select(versions).where((versions.c.model == name) & condition)
        links = sa.select(aliases.c.alias, aliases.c.version).where(aliases.c.model == name)
        with self._read() as conn:
            rows = conn.execute(query.order_by(versions.c.version)).all()
            pointed = conn.execute(links.order_by(aliases.c.alias)).all()
        return [
            _row_version(row, [a.alias for a in pointed if a.version == row.version])
            for row in rows
        ]


def _row_version(row: Any, names: list[str]) -> ModelVersion:
    fields = dict(row._mapping)
    fields["name"] = fields.pop("model")
    fields["manifest"] = json.loads(fields["manifest"])
    del fields["status"]
    return ModelVersion(**fields, aliases=names)


def _grouped(conn: Connection, key: Any, aggregate: Any) -> dict[str, Any]:
    return dict(conn.execute(sa.select(key, aggregate).group_by(key)).tuples().all())


def _summary(
    row: Any, latest: dict[str, int], updated: dict[str, Any], links: Sequence[Any]
) -> dict[str, Any]:
    mine = [link for link in links if link.model == row.name]
    return {
        "name": row.name,
        "latest_version": latest.get(row.name),
        "aliases": {link.alias: link.version for link in mine},
        "weights": {link.alias: link.weight for link in mine if link.weight is not None},
        "updated_at": _as_utc(updated.get(row.name)) or row.created_at,
        "description": row.description,
    }
