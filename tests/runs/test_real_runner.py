"""The execution endpoint on the real sandbox runner: inputs in, result and logs out."""

from __future__ import annotations

from pathlib import Path

import httpx

from codeactions.config import RunnerSettings
from codeactions.logs.store import LOG_STORE, LogQuery
from tests.conftest import ADMIN, needs_go, needs_node, needs_runtime
from tests.runs.conftest import PROJECT, Api, StartApi

SOURCE = """
def Run(engine):
    print("hello from the code")
    name = engine.params.get("name")
    engine.result.set({"name": name, "key": engine.header.get("X-Api-Key")},
                      status_code=201, content_type="json")
"""


@needs_runtime
async def test_python_code_runs_in_the_sandbox(start_api: StartApi, tmp_path: Path) -> None:
    api = await start_api(
        real_runner=True,
        runner=RunnerSettings(enabled=True, slots=2, work_dir=str(tmp_path / "r")),
    )
    code = await api.add_code(source=SOURCE, timeout_seconds=30)
    response = await api.client.get(
        f"/action/endpoint/{code.id}?name=ada", headers={"x-api-key": "k1"}
    )
    assert response.status_code == 201, response.text
    assert response.json() == {"name": "ada", "key": "k1"}
    await api.settle()
    runs = (await api.client.get(f"/coderun?code_id={code.id}", headers=ADMIN)).json()
    assert runs[0]["status"] == "completed"
    assert runs[0]["headers"]["X-Api-Key"] == ["[REDACTED]"]
    entries, _ = await api.app.state.parts[LOG_STORE].list(LogQuery(run_id=runs[0]["id"]))
    assert any("hello from the code" in e.content for e in entries)


async def save_code(api: Api, source: str, language: str) -> httpx.Response:
    return await api.client.post(
        "/code",
        params={
            "project_uuid": PROJECT,
            "name": "program",
            "language": language,
            "type": "endpoint",
        },
        content=source,
        headers=ADMIN,
    )


@needs_runtime
@needs_go
async def test_go_main_programs_compile_on_save_and_answer_with_their_stdout(
    start_api: StartApi, tmp_path: Path
) -> None:
    api = await start_api(
        real_runner=True,
        runner=RunnerSettings(enabled=True, slots=2, work_dir=str(tmp_path / "r")),
    )
    broken = await save_code(api, "package main\n\nfunc main() {\n\tundefinedThing()\n}\n", "go")
    assert broken.status_code == 400
    assert broken.json()["message"].startswith("action.go:4:2: undefined: undefinedThing")

    hello = 'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("hello from main")\n}\n'
    saved = await save_code(api, hello, "go")
    assert saved.status_code == 201, saved.text
    response = await api.client.get(f"/action/endpoint/{saved.json()['id']}")
    assert (response.status_code, response.text) == (200, "hello from main\n")
    assert response.headers["content-type"].startswith("text/plain")

    failing = 'package main\n\nimport "os"\n\nfunc main() {\n\tos.Stderr.WriteString("no\\n")\n\tos.Exit(3)\n}\n'
    saved = await save_code(api, failing, "go")
    assert saved.status_code == 201, saved.text
    response = await api.client.get(f"/action/endpoint/{saved.json()['id']}")
    assert response.status_code == 500
    await api.settle()
    runs = (await api.client.get(f"/coderun?code_id={saved.json()['id']}", headers=ADMIN)).json()
    assert runs[0]["status"] == "failed"


@needs_runtime
@needs_node
async def test_javascript_scripts_answer_with_their_stdout(
    start_api: StartApi, tmp_path: Path
) -> None:
    api = await start_api(
        real_runner=True,
        runner=RunnerSettings(enabled=True, slots=2, work_dir=str(tmp_path / "r")),
    )
    script = 'setTimeout(() => console.log("later"), 20);\nconsole.log("now");\n'
    saved = await save_code(api, script, "javascript")
    assert saved.status_code == 201, saved.text
    response = await api.client.get(f"/action/endpoint/{saved.json()['id']}")
    assert (response.status_code, response.text) == (200, "now\nlater\n")
    saved = await save_code(api, "process.exit(2);\n", "javascript")
    response = await api.client.get(f"/action/endpoint/{saved.json()['id']}")
    assert response.status_code == 500
