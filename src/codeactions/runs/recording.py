"""Keeping a run's record: `started` before it runs, then its outcome and log lines, through the
run book, or the journal while the database cannot take them."""

from __future__ import annotations

import contextlib
import logging

from codeactions.db.models import CodeRun, utcnow
from codeactions.errors import Unavailable
from codeactions.logs.sql import log_rows
from codeactions.logs.store import LogEntry, LogStore
from codeactions.runs.journal import OutcomeJournal
from codeactions.runs.repository import RunBook

log = logging.getLogger(__name__)

NOT_RUN = "the run was not executed: the database failed while recording its start"


async def record_start(book: RunBook, journal: OutcomeJournal, run: CodeRun) -> None:
    """Record the run `started`; Unavailable when the database cannot take it."""
    try:
        await book.start(run)
    except Exception as exc:
        log.warning("recording run %s as started failed: %s", run.id, exc)
        # The insert may have committed before the connection broke: a journaled end makes sure
        # such a record does not stay `started` (written over nothing when it did not commit).
        run.status, run.result, run.updated_at = "failed", NOT_RUN, utcnow()
        run.extra = {
            "status_code": 503,
            "content_type": "text",
            "reason": "runner",
            "error": NOT_RUN,
        }
        with contextlib.suppress(Exception):
            await journal.keep(run, [])
        raise Unavailable("could not record the run") from exc


async def record_outcome(
    book: RunBook,
    journal: OutcomeJournal,
    log_store: LogStore,
    run: CodeRun,
    entries: list[LogEntry],
) -> None:
    """Store the run's outcome and its log lines (one transaction when the log store keeps them
    beside the runs).

    What the database cannot take now goes to the journal, which writes it when the database is
    back; raises Unavailable only when neither could keep it.
    """
    in_database = log_store.written_with_run
    try:
        await book.finish(run, log_rows(entries) if in_database else [])
    except Exception as exc:
        log.warning(
            "the database did not take the outcome of run %s, journaling it: %s", run.id, exc
        )
        try:
            await journal.keep(run, entries if in_database else [])
        except Exception as journal_exc:
            log.exception("journaling the outcome of run %s failed", run.id)
            raise Unavailable("could not record the run's outcome") from journal_exc
    if entries and not in_database:
        try:
            await log_store.write(entries)
        except Exception as exc:
            log.exception("keeping the logs of run %s failed", run.id)
            raise Unavailable("could not keep the run's logs") from exc
