"""Alembic environment: runs on the connection handed over by codeactions.db.migrate."""

from __future__ import annotations

from alembic import context

from codeactions.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - migrations only run through `codeactions migrate`
    raise RuntimeError("run migrations with `codeactions migrate`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
