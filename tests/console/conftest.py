"""The service as a user meets it: `codeactions serve` in its own process with the real sandbox
runner, OIDC login through the test provider process, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from codeactions.console.router import DIST
from tests.auth.provider import FakeProvider, provider_process
from tests.conftest import ADMIN_TOKEN, needs_go, needs_runtime

CHROMIUM = "/usr/bin/chromium"
CLIENT_ID = "console"
USERNAME, PASSWORD, EMAIL = "ana", "s3cret-pass", "ana@example.com"
# A first Go compile takes seconds on a cold cache; the machine is shared.
expect.set_options(timeout=30_000)

# Sandbox uids of this module's service, apart from every other test's.
UID_BASE = 60100

needs_browser = [
    pytest.mark.requires(
        os.path.exists(CHROMIUM), "Debian's chromium is not installed (make test installs it)"
    ),
    pytest.mark.requires(
        (DIST / "index.html").is_file(), "the console is not built (make console builds it)"
    ),
    needs_runtime,
    needs_go,
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    url: str
    api: httpx.Client  # as the static admin token

    def create_project(self, uuid: str, name: str) -> None:
        answer = self.api.post("/projects", json={"uuid": uuid, "name": name})
        assert answer.status_code == 201, answer.text

    def create_code(self, project: str, name: str, source: str, language: str = "python") -> str:
        answer = self.api.post(
            "/code",
            params={
                "project_uuid": project,
                "name": name,
                "language": language,
                "type": "endpoint",
            },
            content=source,
        )
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])


@pytest.fixture(scope="package")
def provider() -> FakeProvider:
    handle = provider_process()
    handle.reset()
    handle.add_client(CLIENT_ID)
    handle.add_user(USERNAME, PASSWORD, email=EMAIL)
    return handle


@pytest.fixture(scope="package")
def service(tmp_path_factory: pytest.TempPathFactory, provider: FakeProvider) -> Iterator[Service]:
    port = free_port()
    folder = tmp_path_factory.mktemp("console")
    env = {
        **os.environ,
        "CODEACTIONS_DATABASE_URL": f"sqlite:///{folder / 'db.sqlite'}",
        "CODEACTIONS_AUTH_TOKEN": ADMIN_TOKEN,
        "CODEACTIONS_OIDC_ENABLED": "true",
        "CODEACTIONS_OIDC_ISSUER": provider.issuer,
        "CODEACTIONS_OIDC_CLIENT_ID": CLIENT_ID,
        "CODEACTIONS_CLEANER_ENABLED": "false",
        "CODEACTIONS_RUNNER_SLOTS": "2",
        "CODEACTIONS_RUNNER_UID_BASE": str(UID_BASE),
        "CODEACTIONS_RUNNER_WORK_DIR": str(folder / "runner"),
        "CODEACTIONS_LOG_JSON": "false",
    }
    env.pop("CODEACTIONS_REDIS_URL", None)
    cli = Path(sys.executable).with_name("codeactions")
    log = (folder / "service.log").open("wb")
    process = subprocess.Popen(
        [str(cli), "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    api = httpx.Client(base_url=url, headers={"Authorization": f"Token {ADMIN_TOKEN}"}, timeout=30)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (folder / "service.log").read_text()
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.2)
        yield Service(url, api)
    finally:
        api.close()
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Console:
    """A fresh browser tab on the service, and every request it made elsewhere (none allowed)."""

    page: Page
    url: str
    outside: list[str]

    def open(self, path: str = "") -> None:
        self.page.goto(f"{self.url}/console{path}")

    def sign_in(self, token: str = ADMIN_TOKEN) -> None:
        self.page.get_by_label("Token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.get_by_role("button", name="Sign out").wait_for()


@pytest.fixture
def console(browser: Browser, service: Service) -> Iterator[Console]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(20_000)
    outside: list[str] = []
    page.on(
        "request",
        lambda request: (
            None
            if request.url.startswith(service.url.replace("http", "ws", 1))
            or request.url.startswith(service.url)
            else outside.append(request.url)
        ),
    )
    try:
        yield Console(page, service.url, outside)
    finally:
        context.close()
    assert outside == [], f"the console reached outside the service: {outside}"
