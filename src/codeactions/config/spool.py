"""Settings of the local spools that keep what the database or S3 could not take yet."""

from __future__ import annotations

from codeactions.config.fields import Group, env


class SpoolSettings(Group):
    dir: str = env(
        "SPOOL_DIR",
        default="",
        description="Directory of the local spools (run outcomes the database could not take, "
        "S3 log batches not yet uploaded); empty: `<sqlite file>-spool`, or `./codeactions-spool` "
        "with PostgreSQL. Keep it on a persistent disk: what is in it is replayed at start.",
    )
    max_mb: int = env(
        "SPOOL_MAX_MB",
        default=512,
        ge=1,
        description="Largest size of each spool; a run whose outcome can be neither stored nor "
        "spooled answers 503.",
    )
    fsync: bool = env(
        "SPOOL_FSYNC",
        default=True,
        description="fsync each spool write before answering (off: a machine crash may lose "
        "the last writes, a service crash does not).",
    )
