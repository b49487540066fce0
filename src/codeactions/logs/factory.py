"""The choice between the SQL and the S3 log store."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from codeactions.config import LogSettings, SpoolSettings
from codeactions.logs.store import LogStore


def build_log_store(
    settings: LogSettings,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    spools: Path,
    spool: SpoolSettings,
) -> LogStore:
    if settings.s3_enabled:
        from codeactions.logs.s3 import S3LogStore
        from codeactions.spool import destination_spool

        identity = (settings.s3_endpoint, settings.s3_bucket, settings.s3_prefix)
        return S3LogStore(settings, destination_spool(spool, spools, "s3-logs", *identity))
    from codeactions.logs.sql import SqlLogStore

    return SqlLogStore(sessionmaker)
