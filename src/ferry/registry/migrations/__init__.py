"""Alembic migrations of the registry schema, run from code.

Users never need an ``alembic.ini``: ``SqlStore`` calls ``upgrade_to_head`` on the connection
it already holds, inside the transaction that holds its lock, so two processes opening a fresh
database at once do not both create the tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script.revision import RevisionError
from alembic.util.exc import CommandError

from ferry.errors import RegistryError

SCRIPT_LOCATION = Path(__file__).resolve().parent


def alembic_config(connection: Any = None) -> Config:
    config = Config()
    # Config values go through configparser interpolation, where '%' is special.
    config.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_to_head(connection: Any) -> None:
    """Bring the schema on ``connection`` (a SQLAlchemy Connection in a transaction) to head."""
    try:
        command.upgrade(alembic_config(connection), "head")
    except (CommandError, RevisionError) as exc:
        raise RegistryError(
            f"cannot migrate the registry database: {exc}. If the database was created by a "
            "newer Ferry, upgrade Ferry (pip install -U ferry-ml)"
        ) from exc
