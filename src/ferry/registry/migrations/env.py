"""Alembic environment: migrates the connection that ``SqlStore`` hands over, in its transaction."""

from __future__ import annotations

from alembic import context

from ferry.registry.sql import metadata


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None or context.is_offline_mode():
        raise RuntimeError(
            "Ferry runs its migrations from ferry.registry.sql.SqlStore on a live connection; "
            "there is no standalone alembic.ini or offline mode"
        )
    context.configure(connection=connection, target_metadata=metadata)
    # The caller's transaction is already open, so this joins it rather than committing early.
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
