"""The /web packages: what each `pkg_id` does, with the same rules (and roles) as over HTTP."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends

from codeactions.codes import service as codes
from codeactions.codes.cache import CodeCache
from codeactions.codes.schemas import code_json
from codeactions.config import Settings
from codeactions.db.session import unit_of_work
from codeactions.errors import AppError, BadRequest, NotFound
from codeactions.events.bus import Event
from codeactions.http import canonical_headers
from codeactions.live.connection import Connection
from codeactions.live.follow import ProjectFollower, RunFollower, Sources
from codeactions.live.schemas import (
    ById,
    Data,
    FollowProject,
    FollowRun,
    ListCodes,
    ListRuns,
    RunCode,
    SaveCode,
    StopFollowing,
)
from codeactions.logs.service import run_lines
from codeactions.ops.metrics import Metrics
from codeactions.parts import Part, part
from codeactions.runner.base import Runner
from codeactions.runs import service as runs
from codeactions.runs.schemas import run_json
from codeactions.runs.service import Executor, RunInputs


@dataclass(frozen=True)
class Services:
    """What the packages use, built once per app."""

    settings: Settings
    sources: Sources
    executor: Executor
    runner: Runner
    cache: CodeCache
    metrics: Metrics
    runs: set[asyncio.Task[Any]]  # pkg 5 runs under way, whoever still follows them


@dataclass
class Reply:
    data: Any = None
    meta: dict[str, int] | None = None
    # A following package's events, sent on its req_id once the answer has been.
    events: AsyncIterator[Event] | None = None


Handler = Callable[[Services, Connection, str, Any], Awaitable[Reply]]


@dataclass(frozen=True)
class Package:
    pkg_id: int
    name: str
    data: type[Data]
    role: str  # the project role it needs, as over HTTP
    answer: str
    handle: Handler


def _meta(page: int, per_page: int, total: int) -> dict[str, int]:
    return {
        "page": page,
        "per_page": per_page,
        "total": total,
        "pages": math.ceil(total / per_page) if total else 0,
    }


async def list_codes(s: Services, conn: Connection, req_id: str, data: ListCodes) -> Reply:
    async with s.sources.sessionmaker() as session:
        found = await codes.list_codes(
            session,
            conn.principal,
            project_uuid=data.project_uuid,
            code_type=data.code_type,
            page=data.page,
            page_size=data.per_page,
        )
    return Reply(
        [code_json(code) for code in found.items], _meta(data.page, data.per_page, found.total)
    )


async def get_code(s: Services, conn: Connection, req_id: str, data: ById) -> Reply:
    async with s.sources.sessionmaker() as session:
        code = await codes.get_code(session, conn.principal, code_id=data.id)
    return Reply(code_json(code))


async def save_code(s: Services, conn: Connection, req_id: str, data: SaveCode) -> Reply:
    limit = s.settings.code.max_source_bytes

    async def read_source() -> bytes:
        raw = data.source.encode("utf-8", "surrogatepass")
        if len(raw) >= limit:
            raise BadRequest(codes.SOURCE_TOO_BIG)
        return raw

    fields = {
        "settings": s.settings.code,
        "name": data.name,
        "type": data.type,
        "language": data.language,
        "timeout_text": str(data.timeout) if data.timeout is not None else None,
        "read_source": read_source,
        "check_source": codes.runner_source_checker(s.runner),
    }
    async with unit_of_work(s.sources.sessionmaker) as session:
        if data.id is None:
            code = await codes.create_code(
                session, conn.principal, project_uuid=data.project_uuid, **fields
            )
        else:
            code = await codes.update_code(session, conn.principal, code_id=data.id, **fields)
            if code.project_uuid != data.project_uuid:
                raise BadRequest("project_uuid is not the code's project")
        codes.announce(session, cache=s.cache, bus=s.sources.bus, code=code, event="code.saved")
        record = code_json(code)
    count = s.metrics.code_created if data.id is None else s.metrics.code_updated
    count(project_uuid=code.project_uuid, code_id=str(code.id))
    return Reply(record)


async def delete_code(s: Services, conn: Connection, req_id: str, data: ById) -> Reply:
    async with unit_of_work(s.sources.sessionmaker) as session:
        code = await codes.delete_code(session, conn.principal, code_id=data.id)
        codes.announce(session, cache=s.cache, bus=s.sources.bus, code=code, event="code.deleted")
    return Reply({})


async def run_code(s: Services, conn: Connection, req_id: str, data: RunCode) -> Reply:
    code = await runs.find_code_to_run(s.sources.sessionmaker, conn.principal, data.id)
    inputs = RunInputs(
        params=data.params,
        body=data.body,
        headers=canonical_headers(data.headers),
        method=data.method,
    )
    run_id = uuid.uuid4()
    follower = RunFollower(s.sources, str(run_id), 0)  # subscribed before the run starts
    execution = asyncio.create_task(
        runs.execute(
            s.executor,
            code=code,
            invoked_id=data.id,
            inputs=inputs,
            run_id=run_id,
            draft=data.source,
        )
    )
    s.runs.add(execution)

    def settled(task: asyncio.Task[Any]) -> None:
        s.runs.discard(task)
        error = None if task.cancelled() else task.exception()
        if isinstance(error, AppError):
            follower.fail(error)  # refused before it ran (queue full, ...): no run event comes

    execution.add_done_callback(settled)
    return Reply({"run_id": str(run_id)}, events=follower.events())


async def list_runs(s: Services, conn: Connection, req_id: str, data: ListRuns) -> Reply:
    async with s.sources.sessionmaker() as session:
        page = await runs.list_runs(
            session,
            conn.principal,
            code_id=data.code_id,
            after=data.after,
            before=data.before,
            page=str(data.page),
            page_size=str(data.per_page),
            status=data.status,
        )
    return Reply([run_json(run) for run in page.items], _meta(data.page, data.per_page, page.total))


async def get_run(s: Services, conn: Connection, req_id: str, data: ById) -> Reply:
    async with s.sources.sessionmaker() as session:
        run = await runs.get_run(session, conn.principal, run_id=data.id)
        lines = await run_lines(session, s.sources.log_store, run)
    return Reply({**run_json(run), "logs": [entry.as_json() for entry in lines]})


async def follow_run(s: Services, conn: Connection, req_id: str, data: FollowRun) -> Reply:
    follower = await RunFollower.open(s.sources, conn.principal, data.run_id, data.after_seq)
    return Reply({}, events=follower.events())


async def follow_project(s: Services, conn: Connection, req_id: str, data: FollowProject) -> Reply:
    follower = await ProjectFollower.open(s.sources, conn.principal, data.project_uuid)
    return Reply({}, events=follower.events())


async def stop_following(s: Services, conn: Connection, req_id: str, data: StopFollowing) -> Reply:
    if not conn.unfollow(data.req_id):
        raise NotFound(f"no subscription with req_id {data.req_id}")
    return Reply({})


# Following packages: their req_id stays in use while they send events.
FOLLOWING = frozenset({5, 8, 9})

PACKAGES: dict[int, Package] = {
    package.pkg_id: package
    for package in (
        Package(
            1,
            "list codes",
            ListCodes,
            "Viewer",
            "codes; meta: page, per_page, total, pages",
            list_codes,
        ),
        Package(2, "get code", ById, "Viewer", "the code, as GET /code/{id}", get_code),
        Package(
            3,
            "save code",
            SaveCode,
            "Contributor",
            "the saved code (a Go compile error: status 2 with the compiler's text)",
            save_code,
        ),
        Package(4, "delete code", ById, "Moderator", "{}", delete_code),
        Package(
            5,
            "run code",
            RunCode,
            "Contributor",
            '{"run_id"} at once, then the run\'s events (log..., run) on this req_id',
            run_code,
        ),
        Package(6, "list runs", ListRuns, "Viewer", "runs, newest first; meta", list_runs),
        Package(7, "get run", ById, "Viewer", "the run with its logs (in order)", get_run),
        Package(
            8,
            "follow a run",
            FollowRun,
            "Viewer",
            "{}, then stored lines after after_seq, live lines, and the run, as events",
            follow_run,
        ),
        Package(
            9,
            "follow a project",
            FollowProject,
            "Viewer",
            "{}, then code.saved, code.deleted, run.started and run.finished events",
            follow_project,
        ),
        Package(10, "stop following", StopFollowing, "-", "{}", stop_following),
    )
}


LIVE: Part[Services] = Part("live")
LiveDep = Annotated[Services, Depends(part(LIVE))]
