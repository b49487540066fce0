"""A secret used by real Python code in the sandbox: the caller gets it, the record and logs
show it masked."""

from __future__ import annotations

from pathlib import Path

import pytest

from codeactions.config import RunnerSettings
from tests.conftest import ADMIN, needs_runtime
from tests.runs.conftest import PROJECT, StartApi

SOURCE = """
def Run(engine):
    engine.log.info(engine.secrets.get("TOKEN"))
    engine.result.set(engine.secrets.get("TOKEN"))
"""
TOKEN = "tok-8d1e0b7a-in-the-sandbox"


@pytest.mark.sandbox
@needs_runtime
async def test_python_code_reads_a_secret_and_only_its_caller_sees_it(
    start_api: StartApi, tmp_path: Path
) -> None:
    api = await start_api(
        real_runner=True,
        runner=RunnerSettings(enabled=True, slots=2, work_dir=str(tmp_path / "r")),
    )
    created = await api.client.post(
        "/secret", json={"name": "TOKEN", "value": TOKEN, "project_uuid": PROJECT}, headers=ADMIN
    )
    assert created.status_code == 201, created.text
    code = await api.add_code(source=SOURCE, timeout_seconds=30)

    response = await api.client.post(f"/action/endpoint/{code.id}")
    assert response.status_code == 200, response.text
    assert response.text == TOKEN

    await api.settle()
    run_id = response.headers["X-Run-Id"]
    run = await api.client.get(f"/coderun/{run_id}", headers=ADMIN)
    assert run.json()["status"] == "completed"
    assert run.json()["result"] == "********"
    runs = await api.client.get("/coderun", params={"code_id": str(code.id)}, headers=ADMIN)
    logs = await api.client.get("/codelog", params={"run_id": run_id}, headers=ADMIN)
    assert [line["content"] for line in logs.json()["data"]] == ["********"]
    assert TOKEN not in runs.text + logs.text
