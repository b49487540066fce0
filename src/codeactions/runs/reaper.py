"""Ends runs left `started` by a runner or a process that stopped: no run stays `started`."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from codeactions.db.models import utcnow
from codeactions.runs import repository

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 60.0
# The longest a run may take (a code's timeout is at most 300 s, queue wait included), plus grace:
# a run started longer ago than this is no longer running anywhere, on any replica.
STALE_AFTER = timedelta(seconds=300 + 60)
# Outcomes the database could not take are journaled and written later (over this, should the
# reaper come first), so a run still `started` here had no outcome anywhere: its process stopped.
LOST = "run lost: no outcome was recorded (the service or its runner stopped while it ran)"


async def reap_stale_runs(
    sessionmaker: async_sessionmaker[AsyncSession], *, now: datetime | None = None
) -> int:
    """Mark stale `started` runs failed with reason `runner`; return how many."""
    cutoff = (now or utcnow()) - STALE_AFTER
    async with sessionmaker() as session, session.begin():
        return await repository.fail_stale_runs(
            session,
            started_before=cutoff,
            result=LOST,
            extra={"content_type": "text", "reason": "runner", "error": LOST},
        )


async def run_reaper(
    sessionmaker: async_sessionmaker[AsyncSession], *, interval: float = INTERVAL_SECONDS
) -> None:
    """At startup and then every `interval` seconds, until cancelled."""
    while True:
        try:
            count = await reap_stale_runs(sessionmaker)
            if count:
                log.warning("marked %d lost runs as failed", count)
        except Exception:  # a database hiccup must not end the loop
            log.exception("reaping lost runs failed")
        await asyncio.sleep(interval)
