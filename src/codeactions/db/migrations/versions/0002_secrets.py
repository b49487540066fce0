"""Project secrets: the original's `secrets` table (migration 000006), adopted when it exists.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from codeactions.db.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _table() -> sa.Table:
    # A frozen copy of the table at this revision, with the original's column types.
    return sa.Table(
        "secrets",
        sa.MetaData(),
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("project_uuid", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", UTCDateTime, nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("project_uuid", "name", name="uq_secrets_project_name"),
        sa.Index("idx_secrets_project_uuid", "project_uuid"),
        sa.Index("idx_secrets_created_at", "created_at"),
    )


def upgrade() -> None:
    bind = op.get_bind()
    # A database the original's migration 000006 reached already has the table: keep it and
    # its rows (their plaintext values stay readable; `codeactions secrets encrypt` seals them).
    if "secrets" not in sa.inspect(bind).get_table_names():
        _table().create(bind)


def downgrade() -> None:
    # Not dropped: the table may be the original's, and dropping it would lose every secret.
    pass
