"""`POST /run/{code_id}?async=true`: answered 202 once the run is recorded, its result read later
or POSTed to a `callback_url` with retries."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from codeactions import __version__
from codeactions.config import CallbackSettings, RunnerSettings, ServerSettings, Settings
from codeactions.db.models import Code
from codeactions.main import create_app
from codeactions.ops.metrics import METRICS
from codeactions.runner.base import RunOutcome, RunRequest
from codeactions.runs.callbacks import CALLBACKS, is_allowed
from tests.conftest import ADMIN, needs_runtime
from tests.runs.conftest import (
    OTHER_PROJECT,
    PROJECT,
    USERS,
    Api,
    FakeRunner,
    FakeVerifier,
    StartApi,
    bearer,
)

LOCAL = CallbackSettings(allowed_networks="127.0.0.0/8", retry_seconds=0.01, timeout_seconds=5)


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A callback receiver on 127.0.0.1 answering each POST with the next of `statuses` (the
    last one again once they run out)."""

    statuses: list[int]
    delay: float = 0.0  # before answering
    deliveries: list[Delivery] = field(default_factory=list)
    url: str = ""
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")[1:]
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.deliveries.append(Delivery(headers, body))
            status = self.statuses[min(len(self.deliveries), len(self.statuses)) - 1]
            self._arrived.set()
            await asyncio.sleep(self.delay)
            writer.write(
                f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        finally:
            writer.close()

    async def wait_for(self, count: int) -> list[Delivery]:
        async with asyncio.timeout(10):
            while len(self.deliveries) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.deliveries


@asynccontextmanager
async def receiver(*statuses: int, delay: float = 0.0) -> AsyncIterator[Receiver]:
    got = Receiver(list(statuses) or [200], delay)
    server = await asyncio.start_server(got.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    got.url = f"http://127.0.0.1:{port}/hook?token=t1"
    try:
        yield got
    finally:
        server.close()
        await server.wait_closed()


async def callback_outcome(api: Api, outcome: str) -> None:
    """Wait until a callback ended with `outcome` (as the metrics count it)."""
    registry = api.app.state.parts[METRICS].registry
    for _ in range(1000):
        if registry.get_sample_value("codeactions_callbacks_total", {"outcome": outcome}):
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"no callback ended {outcome}")


def run_async(code: Code, **params: str) -> str:
    query = "&".join(f"{name}={value}" for name, value in {"async": "true", **params}.items())
    return f"/run/{code.id}?{query}"


async def test_async_run_answers_202_at_once_and_its_record_follows_the_run(api: Api) -> None:
    code = await api.add_code()
    release = asyncio.Event()

    async def waits(request: RunRequest) -> RunOutcome:
        await release.wait()
        return RunOutcome(ok=True, result="done later", status_code=200, content_type="text")

    api.runner.behaviour = waits
    response = await api.client.post(run_async(code), headers=ADMIN, json={"body": "b"})
    assert response.status_code == 202
    run_id = response.json()["run_id"]
    assert response.json() == {"run_id": run_id}
    assert response.headers["Location"] == f"/coderun/{run_id}"
    assert response.headers["X-Run-Id"] == run_id

    started = await api.client.get(f"/coderun/{run_id}", headers=ADMIN)
    assert started.status_code == 200
    assert started.json()["status"] == "started"
    assert started.json()["body"] == "b"

    release.set()
    await api.settle()
    finished = (await api.client.get(f"/coderun/{run_id}", headers=ADMIN)).json()
    assert (finished["status"], finished["result"]) == ("completed", "done later")
    assert api.runner.calls[0].run_id == run_id


@pytest.mark.parametrize("value", ["true", "1"])
async def test_async_true_and_1_answer_202(api: Api, value: str) -> None:
    code = await api.add_code()
    response = await api.client.post(f"/run/{code.id}?async={value}", headers=ADMIN)
    assert response.status_code == 202


@pytest.mark.parametrize("value", ["false", "0", ""])
async def test_async_false_0_or_empty_wait_for_the_run(api: Api, value: str) -> None:
    code = await api.add_code()
    response = await api.client.post(f"/run/{code.id}?async={value}", headers=ADMIN)
    assert response.status_code == 200
    assert response.json()["result"]["status"] == "completed"


@pytest.mark.parametrize("value", ["yes", "TRUE", "2", "true "])
async def test_invalid_async_is_400(api: Api, value: str) -> None:
    code = await api.add_code()
    response = await api.client.post(f"/run/{code.id}", params={"async": value}, headers=ADMIN)
    assert response.status_code == 400
    assert response.json() == {"message": "invalid async parameter: true or false"}
    assert api.runner.calls == []


@pytest.mark.parametrize("flag", [None, "false", "0"])
async def test_callback_url_without_async_is_400(api: Api, flag: str | None) -> None:
    code = await api.add_code()
    params = {"callback_url": "http://127.0.0.1:9/hook"}
    if flag is not None:
        params["async"] = flag
    response = await api.client.post(f"/run/{code.id}", params=params, headers=ADMIN)
    assert response.status_code == 400
    assert response.json() == {"message": "callback_url needs async=true"}
    assert api.runner.calls == []


async def test_the_callback_gets_the_run_as_coderun_shows_it(start_api: StartApi) -> None:
    api = await start_api(callbacks=LOCAL)
    code = await api.add_code()
    async with receiver(200) as hook:
        response = await api.client.post(
            f"/run/{code.id}",
            params={"async": "true", "callback_url": hook.url},
            headers=ADMIN,
            json={"params": {"q": "1"}},
        )
        assert response.status_code == 202, response.text
        run_id = response.json()["run_id"]
        [delivery] = await hook.wait_for(1)
        await callback_outcome(api, "delivered")
    stored = (await api.client.get(f"/coderun/{run_id}", headers=ADMIN)).json()
    assert delivery.json() == stored
    assert stored["status"] == "completed" and stored["params"] == {"q": "1"}
    assert delivery.headers["content-type"] == "application/json"
    assert delivery.headers["x-run-id"] == run_id
    assert delivery.headers["user-agent"] == f"codeactions/{__version__}"
    assert delivery.headers["host"] == hook.url.split("/")[2]


async def test_a_receiver_failing_with_500_gets_a_second_attempt(start_api: StartApi) -> None:
    api = await start_api(callbacks=LOCAL)
    code = await api.add_code()
    async with receiver(500, 200) as hook:
        response = await api.client.post(run_async(code, callback_url=hook.url), headers=ADMIN)
        assert response.status_code == 202
        first, second = await hook.wait_for(2)
        await callback_outcome(api, "delivered")
    assert first.body == second.body
    assert second.json()["id"] == response.json()["run_id"]


@pytest.mark.parametrize("status", [408, 429, 503])
async def test_retryable_answers_are_retried_until_the_attempts_are_used(
    start_api: StartApi, status: int
) -> None:
    settings = LOCAL.model_copy(update={"attempts": 3})
    api = await start_api(callbacks=settings)
    code = await api.add_code()
    async with receiver(status) as hook:
        await api.client.post(run_async(code, callback_url=hook.url), headers=ADMIN)
        await callback_outcome(api, "failed")
    assert len(hook.deliveries) == 3


async def test_a_receiver_answering_404_gets_one_attempt_only(start_api: StartApi) -> None:
    api = await start_api(callbacks=LOCAL)
    code = await api.add_code()
    async with receiver(404, 200) as hook:
        response = await api.client.post(run_async(code, callback_url=hook.url), headers=ADMIN)
        assert response.status_code == 202
        await callback_outcome(api, "rejected")
        await asyncio.sleep(0.1)  # retries would come within this (retry_seconds 0.01)
    assert len(hook.deliveries) == 1


async def test_redirects_are_not_followed(start_api: StartApi) -> None:
    api = await start_api(callbacks=LOCAL)
    code = await api.add_code()
    async with receiver(307) as hook:
        await api.client.post(run_async(code, callback_url=hook.url), headers=ADMIN)
        await callback_outcome(api, "rejected")
    assert len(hook.deliveries) == 1


async def test_a_failed_run_is_still_202_and_its_callback_gets_the_failed_run(
    start_api: StartApi,
) -> None:
    api = await start_api(callbacks=LOCAL)
    code = await api.add_code()

    async def raises(request: RunRequest) -> RunOutcome:
        return RunOutcome(ok=False, reason="exception", error="Traceback...\nKeyError: 'k'")

    api.runner.behaviour = raises
    async with receiver(200) as hook:
        response = await api.client.post(run_async(code, callback_url=hook.url), headers=ADMIN)
        assert response.status_code == 202
        [delivery] = await hook.wait_for(1)
    run = delivery.json()
    assert run["id"] == response.json()["run_id"]
    assert run["status"] == "failed"
    assert run["extra"]["status_code"] == 500
    assert run == (await api.client.get(f"/coderun/{run['id']}", headers=ADMIN)).json()


async def test_the_callback_carries_secrets_masked_as_stored(start_api: StartApi) -> None:
    api = await start_api(callbacks=LOCAL)
    code = await api.add_code()
    created = await api.client.post(
        "/secret",
        headers=ADMIN,
        json={"name": "KEY", "value": "s3cr3t-v4lue", "project_uuid": PROJECT},
    )
    assert created.status_code == 201, created.text

    async def leaks(request: RunRequest) -> RunOutcome:
        return RunOutcome(ok=True, result=f"key={request.secrets['KEY']}", status_code=200)

    api.runner.behaviour = leaks
    async with receiver(200) as hook:
        await api.client.post(run_async(code, callback_url=hook.url), headers=ADMIN)
        [delivery] = await hook.wait_for(1)
    assert b"s3cr3t-v4lue" not in delivery.body
    assert delivery.json()["result"] != "key=s3cr3t-v4lue"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:9/hook", "callback_url must be a public http(s) address"),
        ("http://localhost:9/hook", "callback_url must be a public http(s) address"),
        ("http://10.0.0.1/hook", "callback_url must be a public http(s) address"),
        ("http://169.254.169.254/latest", "callback_url must be a public http(s) address"),
        ("http://[::1]/hook", "callback_url must be a public http(s) address"),
        ("http://[::ffff:10.0.0.1]/hook", "callback_url must be a public http(s) address"),
        ("http://0x7f000001/hook", "callback_url must be a public http(s) address"),
        ("ftp://example.com/hook", "callback_url must be an http(s) URL with a host"),
        ("file:///etc/passwd", "callback_url must be an http(s) URL with a host"),
        ("http:///hook", "callback_url must be an http(s) URL with a host"),
        ("hook", "callback_url must be an http(s) URL with a host"),
        ("http://[::1/hook", "callback_url must be an http(s) URL with a host"),
        ("http://nowhere.invalid/hook", "callback_url host does not resolve"),
        ("https://example.com/" + "a" * 2048, "callback_url is longer than 2048 characters"),
    ],
)
async def test_a_callback_url_that_is_not_a_public_http_address_is_400(
    api: Api, url: str, message: str
) -> None:
    code = await api.add_code()
    response = await api.client.post(
        f"/run/{code.id}", params={"async": "true", "callback_url": url}, headers=ADMIN
    )
    assert response.status_code == 400
    assert response.json() == {"message": message}
    assert api.runner.calls == []


async def test_allowed_networks_exempt_only_themselves(start_api: StartApi) -> None:
    api = await start_api(callbacks=LOCAL)
    code = await api.add_code()
    refused = await api.client.post(
        run_async(code, callback_url="http://10.0.0.1/hook"), headers=ADMIN
    )
    assert refused.status_code == 400
    assert api.runner.calls == []


async def test_the_address_is_checked_again_at_delivery(start_api: StartApi) -> None:
    api = await start_api(callbacks=LOCAL)
    code = await api.add_code()
    release = asyncio.Event()

    async def waits(request: RunRequest) -> RunOutcome:
        await release.wait()
        return RunOutcome(ok=True, result="ok", status_code=200)

    api.runner.behaviour = waits
    sender = api.app.state.parts[CALLBACKS]
    async with receiver(200) as hook:
        response = await api.client.post(run_async(code, callback_url=hook.url), headers=ADMIN)
        assert response.status_code == 202
        # As if the name now resolved to a private address: loopback is no longer allowed.
        sender.settings = LOCAL.model_copy(update={"allowed_networks": []})
        release.set()
        await callback_outcome(api, "refused")
    assert hook.deliveries == []


@pytest.mark.parametrize(
    ("delay", "outcome"), [(0.3, "delivered"), (30, "cancelled")], ids=["in-time", "too-slow"]
)
async def test_deliveries_under_way_at_shutdown_get_the_grace_then_are_cancelled(
    make_settings: Callable[..., Settings], delay: float, outcome: str
) -> None:
    settings = make_settings(
        callbacks=LOCAL.model_copy(update={"timeout_seconds": 60}),
        server=ServerSettings(shutdown_grace_seconds=1, log_json=False),
    )
    app = create_app(settings, runner=FakeRunner(), oidc=FakeVerifier(USERS))
    transport = httpx.ASGITransport(app=app)
    async with receiver(200, delay=delay) as hook:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            api = Api(app, client, FakeRunner())
            code = await api.add_code()
            response = await client.post(run_async(code, callback_url=hook.url), headers=ADMIN)
            assert response.status_code == 202
            await hook.wait_for(1)  # the receiver has it, and has not answered yet
            stopping = time.monotonic()
        assert time.monotonic() - stopping < 5
        await callback_outcome(api, outcome)


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),  # CGNAT
        ("169.254.169.254", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("198.18.0.1", False),  # benchmark range: the sandbox slots' own addresses
        ("192.0.2.1", False),  # documentation
        ("::1", False),
        ("::", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", False),  # the sandbox refuses every IPv4-mapped form
        ("fc00::1", False),
        ("fd12::1", False),
        ("fe80::1", False),
        ("ff02::1", False),
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("2001:db8::1", False),  # documentation
    ],
)
def test_callback_destinations_follow_the_sandbox_egress_rules(address: str, allowed: bool) -> None:
    assert is_allowed(ipaddress.ip_address(address), []) is allowed


def test_allowed_networks_exempt_their_addresses_and_mapped_forms() -> None:
    networks = LOCAL.allowed_networks
    assert is_allowed(ipaddress.ip_address("127.0.0.1"), networks)
    assert is_allowed(ipaddress.ip_address("::ffff:127.0.0.1"), networks)
    assert not is_allowed(ipaddress.ip_address("10.0.0.1"), networks)


async def test_async_run_requires_credentials(api: Api) -> None:
    code = await api.add_code()
    response = await api.client.post(run_async(code))
    assert response.status_code == 401
    assert api.runner.calls == []


async def test_async_run_of_another_projects_code_is_404(api: Api) -> None:
    code = await api.add_code()
    await api.grant("outsider@example.com", 3, project_uuid=OTHER_PROJECT)
    response = await api.client.post(run_async(code), headers=bearer("outsider-token"))
    assert response.status_code == 404
    assert response.json() == {"message": "code not found"}
    assert api.runner.calls == []


async def test_viewer_cannot_run_a_code_async(api: Api) -> None:
    code = await api.add_code()
    await api.grant("viewer@example.com", 1)
    response = await api.client.post(run_async(code), headers=bearer("viewer-token"))
    assert response.status_code == 403
    assert api.runner.calls == []


async def test_contributor_runs_a_code_async(api: Api) -> None:
    code = await api.add_code()
    await api.grant("contributor@example.com", 2)
    response = await api.client.post(run_async(code), headers=bearer("contributor-token"))
    assert response.status_code == 202
    await api.settle()
    run = await api.get_run(response.json()["run_id"])
    assert run is not None and run.status == "completed"


async def test_a_full_queue_still_answers_503_at_once(start_api: StartApi) -> None:
    api = await start_api(runner=RunnerSettings(enabled=False, slots=1, queue_size=0))
    code = await api.add_code()
    release = asyncio.Event()

    async def waits(request: RunRequest) -> RunOutcome:
        await release.wait()
        return RunOutcome(ok=True, result="ok", status_code=200)

    api.runner.behaviour = waits
    first = await api.client.post(run_async(code), headers=ADMIN)
    assert first.status_code == 202
    second = await api.client.post(run_async(code), headers=ADMIN)
    assert second.status_code == 503
    assert second.json() == {"message": "workerpool queue is full"}
    assert second.headers["Retry-After"] == "1"
    release.set()
    await api.settle()
    assert len(api.runner.calls) == 1


async def test_the_openapi_document_describes_async_runs(api: Api) -> None:
    document = (await api.client.get("/openapi.json")).json()
    operation = document["paths"]["/run/{code_id}"]["post"]
    names = {parameter["name"] for parameter in operation["parameters"]}
    assert {"async", "callback_url"} <= names
    accepted = operation["responses"]["202"]["content"]["application/json"]["schema"]
    assert accepted == {"$ref": "#/components/schemas/RunAcceptedOut"}
    assert document["components"]["schemas"]["RunAcceptedOut"]["required"] == ["run_id"]


SOURCE = """
def Run(engine):
    print("async hello")
    engine.result.set({"got": engine.params.get("q")}, content_type="json")
"""


@needs_runtime
async def test_an_async_run_on_the_sandbox_calls_back(start_api: StartApi, tmp_path: Path) -> None:
    api = await start_api(
        real_runner=True,
        runner=RunnerSettings(enabled=True, slots=1, uid_base=58000, work_dir=str(tmp_path / "r")),
        callbacks=LOCAL,
    )
    code = await api.add_code(source=SOURCE, timeout_seconds=30)
    async with receiver(200) as hook:
        response = await api.client.post(
            run_async(code, callback_url=hook.url), headers=ADMIN, json={"params": {"q": "x"}}
        )
        assert response.status_code == 202, response.text
        [delivery] = await hook.wait_for(1)
    run = delivery.json()
    assert run["id"] == response.json()["run_id"]
    assert run["status"] == "completed", run
    assert json.loads(run["result"]) == {"got": "x"}
    logs = await api.client.get("/codelog", params={"run_id": run["id"]}, headers=ADMIN)
    assert any("async hello" in line["content"] for line in logs.json()["data"])
