"""The log routes over the S3 store: a run's logs written once, then listed and read by id."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx

from codeactions.db.models import Code
from codeactions.db.session import SESSIONMAKER
from codeactions.logs.store import LOG_STORE
from codeactions.main import create_app
from codeactions.runner.base import RunLogLine, RunOutcome
from tests.conftest import ADMIN
from tests.logs.conftest import s3_settings


class LoggingRunner:
    """A runner whose code printed 25 lines."""

    async def run(self, request: Any) -> RunOutcome:
        lines = [RunLogLine(type="info", content=f"line {i}", at=0) for i in range(25)]
        return RunOutcome(ok=True, result="done", logs=lines)

    async def close(self) -> None:
        return None


async def test_run_logs_written_to_s3_are_listed_and_read_by_id(
    make_settings: Callable[..., Any], s3_endpoint: str, raw: Any
) -> None:
    bucket = f"codeactions-{uuid.uuid4().hex[:10]}"
    raw.create_bucket(Bucket=bucket)
    app = create_app(make_settings(logs=s3_settings(s3_endpoint, bucket)), runner=LoggingRunner())
    async with app.router.lifespan_context(app):
        async with app.state.parts[SESSIONMAKER]() as session, session.begin():
            code = Code(
                name="chatty",
                type="endpoint",
                source="def Run(engine): pass",
                language="python",
                project_uuid=str(uuid.uuid4()),
            )
            session.add(code)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            ran = await client.post(f"/action/endpoint/{code.id}")
            assert ran.status_code == 200, ran.text
            # Uploaded in the background: one object (and its pointer) for the 25 lines.
            await app.state.parts[LOG_STORE].flush()
            listed = raw.list_objects_v2(Bucket=bucket)["Contents"]
            assert len(listed) == 2

            runs = await client.get("/coderun", params={"code_id": str(code.id)}, headers=ADMIN)
            run_id = runs.json()[0]["id"]
            first = await client.get("/codelog", params={"run_id": run_id}, headers=ADMIN)
            assert first.status_code == 200, first.text
            body = first.json()
            assert (body["total"], body["page"], body["last_page"]) == (25, 1, 2)
            assert len(body["data"]) == 20
            second = await client.get(
                "/codelog", params={"run_id": run_id, "page": 2}, headers=ADMIN
            )
            assert len(second.json()["data"]) == 5
            by_code = await client.get("/codelog", params={"code_id": str(code.id)}, headers=ADMIN)
            assert by_code.json()["total"] == 25

            line = body["data"][0]
            one = await client.get(f"/codelog/{line['id']}", headers=ADMIN)
            assert one.status_code == 200, one.text
            assert one.json()["content"] == line["content"]
            assert one.json()["run_id"] == run_id
            missing = await client.get(f"/codelog/{uuid.uuid4()}", headers=ADMIN)
            assert missing.status_code == 404
            assert missing.json() == {"message": "log not found"}

            health = await client.get("/health")
            assert health.status_code == 200, health.text
