"""The execution endpoint on the real sandbox runner: inputs in, result and logs out."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from codeactions.config import RunnerSettings
from codeactions.db.models import Code
from codeactions.logs.store import LogQuery
from tests.conftest import ADMIN
from tests.runs.conftest import PROJECT, StartApi

SOURCE = """
def Run(engine):
    print("hello from the code")
    name = engine.params.get("name")
    engine.result.set({"name": name, "key": engine.header.get("X-Api-Key")},
                      status_code=201, content_type="json")
"""


RUNTIME_PYTHON = RunnerSettings().python


@pytest.mark.skipif(
    not os.path.exists(RUNTIME_PYTHON), reason=f"no runtime interpreter at {RUNTIME_PYTHON}"
)
async def test_python_code_runs_in_the_sandbox(start_api: StartApi, tmp_path: Path) -> None:
    api = await start_api(
        real_runner=True,
        runner=RunnerSettings(enabled=True, slots=2, work_dir=str(tmp_path / "r")),
    )
    code = Code(
        id=uuid.uuid4(),
        name="real",
        type="endpoint",
        source=SOURCE,
        language="python",
        project_uuid=PROJECT,
        timeout=30,
    )
    async with api.app.state.sessionmaker() as session, session.begin():
        session.add(code)
    response = await api.client.get(
        f"/action/endpoint/{code.id}?name=ada", headers={"x-api-key": "k1"}
    )
    assert response.status_code == 201, response.text
    assert response.json() == {"name": "ada", "key": "k1"}
    await api.settle()
    runs = (await api.client.get(f"/coderun?code_id={code.id}", headers=ADMIN)).json()
    assert runs[0]["status"] == "completed"
    assert runs[0]["headers"]["X-Api-Key"] == ["[REDACTED]"]
    entries, _ = await api.app.state.log_store.list(LogQuery(run_id=runs[0]["id"]))
    assert any("hello from the code" in e.content for e in entries)
