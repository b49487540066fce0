"""Tables: a superset of the original's PostgreSQL schema (same names), portable to SQLite.

Free-text columns are `StorableText`/`StorableString`/`JsonType`: whatever is written, both
databases store it (see `codeactions.db.text`). Identifier columns (uuids, emails, ids, fixed
vocabularies) are plain: their values are checked before they reach SQL, never rewritten.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Dialect,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from codeactions.db.text import storable_json, storable_text


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Storable(TypeDecorator[str]):
    """Text of any origin, written as both databases store it (see `storable_text`); values
    compared with the column in queries are cleaned the same way, so lookups match."""

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else storable_text(value)


class StorableText(_Storable):
    impl = Text
    cache_ok = True


class StorableString(_Storable):
    impl = String
    cache_ok = True


class StorableJson(TypeDecorator[Any]):
    """JSON (jsonb on PostgreSQL) written as both databases store it (see `storable_json`)."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return dialect.type_descriptor(JSONB() if dialect.name == "postgresql" else JSON())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return storable_json(value)


JsonType = StorableJson()


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime, dict[str, Any]: JsonType}


class Timestamped:
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    mongo_object_id: Mapped[str | None] = mapped_column(Text, unique=True, default=None)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow, server_default=func.now()
    )


class Code(Timestamped, Base):
    __tablename__ = "codes"
    __table_args__ = (
        CheckConstraint("type IN ('flow','endpoint')", name="codes_type_check"),
        CheckConstraint("language IN ('python','go','javascript')", name="codes_language_check"),
        CheckConstraint("timeout >= 5 AND timeout <= 300", name="codes_timeout_check"),
        Index("idx_codes_project_uuid", "project_uuid"),
        Index("idx_codes_type", "type"),
        Index("idx_codes_project_type", "project_uuid", "type"),
        Index("idx_codes_created_at", "created_at"),
    )

    name: Mapped[str] = mapped_column(StorableString(255), nullable=False)
    type: Mapped[str] = mapped_column(String(50), nullable=False)
    source: Mapped[str] = mapped_column(StorableText, nullable=False)
    language: Mapped[str] = mapped_column(String(50), nullable=False)
    url: Mapped[str | None] = mapped_column(StorableString(512), default=None)
    project_uuid: Mapped[str] = mapped_column(String(255), nullable=False)
    timeout: Mapped[int] = mapped_column(Integer, nullable=False, default=60, server_default="60")


class CodeLib(Timestamped, Base):
    __tablename__ = "codelibs"
    __table_args__ = (
        CheckConstraint("language IN ('python')", name="codelibs_language_check"),
        Index("idx_codelibs_unique_name_language", "name", "language", unique=True),
    )

    name: Mapped[str] = mapped_column(String(255), nullable=False)
    language: Mapped[str] = mapped_column(String(50), nullable=False)


class CodeRun(Timestamped, Base):
    __tablename__ = "coderuns"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued','started','completed','failed')", name="coderuns_status_check"
        ),
        Index("idx_coderuns_code_id", "code_id"),
        Index("idx_coderuns_code_mongo_id", "code_mongo_id"),
        Index("idx_coderuns_status", "status"),
        Index("idx_coderuns_created_at", "created_at"),
        Index("idx_coderuns_code_id_created_at", "code_id", "created_at"),
    )

    code_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    code_mongo_id: Mapped[str | None] = mapped_column(Text, default=None)
    status: Mapped[str] = mapped_column(String(50), nullable=False)
    result: Mapped[str | None] = mapped_column(StorableText, default="")
    extra: Mapped[dict[str, Any] | None] = mapped_column(JsonType, default=None)
    params: Mapped[dict[str, Any] | None] = mapped_column(JsonType, default=None)
    body: Mapped[str | None] = mapped_column(StorableText, default="")
    headers: Mapped[dict[str, Any] | None] = mapped_column(JsonType, default=None)


class CodeLog(Base):
    """Run logs when they are kept in the database (the original kept them only in S3)."""

    __tablename__ = "codelogs"
    __table_args__ = (
        Index("idx_codelogs_run_id_seq", "run_id", "seq"),
        Index("idx_codelogs_code_id_created_at", "code_id", "created_at"),
        Index("idx_codelogs_created_at", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    code_id: Mapped[str] = mapped_column(String(64), nullable=False)
    seq: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    type: Mapped[str] = mapped_column(String(16), nullable=False)
    content: Mapped[str] = mapped_column(StorableText, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class UserPermission(Timestamped, Base):
    __tablename__ = "user_permissions"
    __table_args__ = (
        Index("idx_user_permissions_project_uuid", "project_uuid"),
        Index("idx_user_permissions_email", "email"),
        Index("idx_user_permissions_unique_project_email", "project_uuid", "email", unique=True),
    )

    project_uuid: Mapped[str] = mapped_column(String(255), nullable=False)
    email: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[int] = mapped_column(Integer, nullable=False)


class Project(Timestamped, Base):
    __tablename__ = "projects"
    __table_args__ = (Index("idx_projects_name", "name"),)

    uuid: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(StorableString(255), nullable=False)
    authorizations: Mapped[list[Any] | None] = mapped_column(JsonType, default=list)


class Secret(Base):
    """A project's secret (the original's `secrets` table, migration 000006). `value` holds the
    ciphertext (`enc:v1:...`, see `codeactions.secrets.crypto`); rows the original wrote hold
    the plaintext until `codeactions secrets encrypt` rewrites them."""

    __tablename__ = "secrets"
    __table_args__ = (
        UniqueConstraint("project_uuid", "name", name="uq_secrets_project_name"),
        Index("idx_secrets_project_uuid", "project_uuid"),
        Index("idx_secrets_created_at", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    value: Mapped[str] = mapped_column(Text, nullable=False)
    project_uuid: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow, server_default=func.now()
    )
