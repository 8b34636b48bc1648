"""A traffic weight on aliases: the share of requests a canary alias asks for.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Nullable, so existing aliases keep meaning "all traffic" and SQLite can add it in place.
    op.add_column("aliases", sa.Column("weight", sa.Float(), nullable=True))


def downgrade() -> None:
    # SQLite cannot drop a column in place: batch mode copies the table.
    with op.batch_alter_table("aliases") as batch:
        batch.drop_column("weight")
