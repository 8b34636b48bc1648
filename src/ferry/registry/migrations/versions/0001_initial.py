"""Initial schema: models, versions, aliases, events.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_models"),
    )
    op.create_table(
        "versions",
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("artifact_key", sa.String(512), nullable=False),
        sa.Column("manifest", sa.Text(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("parent_version", sa.Integer(), nullable=True),
        sa.Column("spec_hash", sa.String(128), nullable=True),
        sa.Column("data_fingerprint", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        # The primary key is the unique (model, version) that backstops number allocation.
        sa.PrimaryKeyConstraint("model", "version", name="pk_versions"),
        sa.ForeignKeyConstraint(["model"], ["models.name"], name="fk_versions_model"),
        sa.UniqueConstraint("artifact_key", name="uq_versions_artifact_key"),
    )
    op.create_table(
        "aliases",
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("model", "alias", name="pk_aliases"),
        sa.ForeignKeyConstraint(
            ["model", "version"],
            ["versions.model", "versions.version"],
            name="fk_aliases_version",
        ),
    )
    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.ForeignKeyConstraint(["model"], ["models.name"], name="fk_events_model"),
        sa.ForeignKeyConstraint(
            ["model", "version"],
            ["versions.model", "versions.version"],
            name="fk_events_version",
        ),
    )
    op.create_index("ix_events_model_id", "events", ["model", "id"])


def downgrade() -> None:
    op.drop_index("ix_events_model_id", table_name="events")
    op.drop_table("events")
    op.drop_table("aliases")
    op.drop_table("versions")
    op.drop_table("models")
