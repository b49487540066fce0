"""Initial schema: the original's tables (adopted when they exist) plus codelogs.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from codeactions.db.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _common() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("mongo_object_id", sa.Text, unique=True),
        sa.Column("created_at", UTCDateTime, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", UTCDateTime, nullable=False, server_default=sa.func.now()),
    ]


def _schema() -> sa.MetaData:
    # A frozen copy of the schema at this revision: later model changes get their own revision.
    md = sa.MetaData()
    sa.Table(
        "codes",
        md,
        *_common(),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("type", sa.String(50), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("language", sa.String(50), nullable=False),
        sa.Column("url", sa.String(512)),
        sa.Column("project_uuid", sa.String(255), nullable=False),
        sa.Column("timeout", sa.Integer, nullable=False, server_default="60"),
        sa.CheckConstraint("type IN ('flow','endpoint')", name="codes_type_check"),
        sa.CheckConstraint("language IN ('python','go','javascript')", name="codes_language_check"),
        sa.CheckConstraint("timeout >= 5 AND timeout <= 300", name="codes_timeout_check"),
        sa.Index("idx_codes_project_uuid", "project_uuid"),
        sa.Index("idx_codes_type", "type"),
        sa.Index("idx_codes_project_type", "project_uuid", "type"),
        sa.Index("idx_codes_created_at", "created_at"),
    )
    sa.Table(
        "codelibs",
        md,
        *_common(),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("language", sa.String(50), nullable=False),
        sa.CheckConstraint("language IN ('python')", name="codelibs_language_check"),
        sa.Index("idx_codelibs_unique_name_language", "name", "language", unique=True),
    )
    sa.Table(
        "coderuns",
        md,
        *_common(),
        sa.Column("code_id", sa.Uuid),
        sa.Column("code_mongo_id", sa.Text),
        sa.Column("status", sa.String(50), nullable=False),
        sa.Column("result", sa.Text),
        sa.Column("extra", JSON),
        sa.Column("params", JSON),
        sa.Column("body", sa.Text),
        sa.Column("headers", JSON),
        sa.CheckConstraint(
            "status IN ('queued','started','completed','failed')", name="coderuns_status_check"
        ),
        sa.Index("idx_coderuns_code_id", "code_id"),
        sa.Index("idx_coderuns_code_mongo_id", "code_mongo_id"),
        sa.Index("idx_coderuns_status", "status"),
        sa.Index("idx_coderuns_created_at", "created_at"),
        sa.Index("idx_coderuns_code_id_created_at", "code_id", "created_at"),
    )
    sa.Table(
        "codelogs",
        md,
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("run_id", sa.Uuid, nullable=False),
        sa.Column("code_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False, server_default="0"),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Index("idx_codelogs_run_id_seq", "run_id", "seq"),
        sa.Index("idx_codelogs_code_id_created_at", "code_id", "created_at"),
        sa.Index("idx_codelogs_created_at", "created_at"),
    )
    sa.Table(
        "user_permissions",
        md,
        *_common(),
        sa.Column("project_uuid", sa.String(255), nullable=False),
        sa.Column("email", sa.String(255), nullable=False),
        sa.Column("role", sa.Integer, nullable=False),
        sa.Index("idx_user_permissions_project_uuid", "project_uuid"),
        sa.Index("idx_user_permissions_email", "email"),
        sa.Index("idx_user_permissions_unique_project_email", "project_uuid", "email", unique=True),
    )
    sa.Table(
        "projects",
        md,
        *_common(),
        sa.Column("uuid", sa.String(255), nullable=False, unique=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("authorizations", JSON),
        sa.Index("idx_projects_name", "name"),
    )
    return md


def upgrade() -> None:
    bind = op.get_bind()
    existing = set(sa.inspect(bind).get_table_names())
    for table in _schema().sorted_tables:
        if table.name in existing:
            # A database made by the original's migrations: keep its table and rows as they are.
            # Its coderuns.code_id is NOT NULL there; runs of unknown ObjectIDs need NULL.
            if table.name == "coderuns" and bind.dialect.name == "postgresql":
                op.alter_column("coderuns", "code_id", nullable=True)
            continue
        table.create(bind)


def downgrade() -> None:
    op.drop_table("codelogs")
