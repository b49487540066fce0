"""Screenshots of the console at /console, and how long each page took to become ready.

Starts `codeactions serve` in a temp dir (SQLite, a static token, the real sandbox runner), seeds
a project "Support bot" through the public HTTP API (codes in Python, JavaScript and Go, two
secrets, a member, a few dozen runs of which some fail), then writes sample history to the
database so the charts have a day to show: runs spread over the last 24 hours, copied from the
real runs of each code, with plausible durations and statuses. It then drives Debian's Chromium
with Playwright (signed in with the token) and saves full-page PNGs:

    signin.png  projects.png  project.png  code.png  history.png  run.png  go-error.png

It prints each file written with its size and the seconds each page took to become ready, so it
serves as a rough smoke check of the console too. `--readme` also copies code.png to
docs/console.png.

    .venv/bin/python bench/console_screenshots.py [--out DIR] [--readme]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, expect, sync_playwright
from sqlalchemy import create_engine, insert

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from codeactions.db.models import CodeRun  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
TOKEN = "console-screenshots-token"
UID_BASE = 60300
VIEWPORT = {"width": 1400, "height": 1000}
# A first Go compile takes seconds on a cold cache.
expect.set_options(timeout=60_000)

ORDER_STATUS = '''\
"""Answers a customer's "where is my order?" from the shop's order API."""

STATUSES = ["packed", "shipped", "out for delivery", "delivered"]


def Run(engine):
    order_id = engine.params.get("order_id")
    if not order_id or not order_id.isdigit():
        raise ValueError(f"order_id must be a number, got {order_id!r}")
    api_key = engine.secrets.get("SHOP_API_KEY", "")
    engine.log.info(f"looking up order {order_id} (key ...{api_key[-4:]})")
    status = STATUSES[int(order_id) % len(STATUSES)]
    engine.log.info(f"order {order_id} is {status}")
    reply = f"Your order is {status}."
    answer = {"order_id": int(order_id), "status": status, "reply": reply}
    engine.result.set(answer, content_type="json")
'''

GREETING = """\
// Greets a customer by name, in their language.
const GREETINGS = { en: "Hello", pt: "Olá", es: "Hola", de: "Hallo" };

async function Run(engine) {
  const name = engine.params.get("name") || "there";
  const lang = engine.params.get("lang") || "en";
  const hello = GREETINGS[lang];
  if (!hello) {
    throw new Error(`no greeting for language ${lang}`);
  }
  engine.log.info(`greeting ${name} in ${lang}`);
  engine.result.set({ text: `${hello}, ${name}!` }, { status_code: 200, content_type: "json" });
}
"""

TICKET_TAGS = """\
package main

import "strings"

// Tags a support ticket by the words in its text.
func Run(engine *Engine) {
	text := strings.ToLower(engine.Params.Get("text"))
	tags := []string{}
	for word, tag := range map[string]string{"refund": "billing", "invoice": "billing",
		"crash": "bug", "error": "bug", "password": "account", "login": "account"} {
		if strings.Contains(text, word) {
			tags = append(tags, tag)
		}
	}
	if len(tags) == 0 {
		tags = append(tags, "general")
	}
	engine.Log.Info("tagged: " + strings.Join(tags, ", "))
	engine.Result.Set(map[string]any{"tags": tags, "words": len(strings.Fields(text))}, 200, "json")
}
"""

ESCALATE = '''\
"""Posts an urgent ticket to the on-call channel."""


def Run(engine):
    channel = engine.params.get("channel") or "#support-oncall"
    ticket = engine.params.get("ticket")
    if not ticket:
        raise RuntimeError("no ticket given: nothing to escalate")
    webhook = engine.secrets.get("SLACK_WEBHOOK_URL")
    engine.log.info(f"escalating ticket {ticket} to {channel}")
    engine.log.debug(f"webhook configured: {bool(webhook)}")
    engine.result.set({"escalated": ticket, "channel": channel}, status_code=202, content_type="json")
'''

BROKEN_GO = "package main\n\nfunc Run(engine *Engine) {\n\tx := undefinedThing\n}\n"


@dataclass
class SeedCode:
    name: str
    language: str
    source: str
    params: Callable[[int], dict[str, str]]  # the params of the n-th seeded run
    runs: int
    history: int  # sample runs over the last 24 hours
    duration_ms: float  # typical duration of a sample run


CODES = [
    SeedCode(
        name="order-status",
        language="python",
        source=ORDER_STATUS,
        params=lambda n: {"order_id": "oops" if n % 7 == 3 else str(41230 + n * 17)},
        runs=20,
        history=420,
        duration_ms=18.0,
    ),
    SeedCode(
        name="greeting",
        language="javascript",
        source=GREETING,
        params=lambda n: {
            "name": ["Ana", "Bia", "Caio", "Dora"][n % 4],
            "lang": "fr" if n % 6 == 5 else ["en", "pt", "es"][n % 3],
        },
        runs=12,
        history=180,
        duration_ms=9.0,
    ),
    SeedCode(
        name="ticket-tags",
        language="go",
        source=TICKET_TAGS,
        params=lambda n: {
            "text": ["refund please", "app crash on login", "where is my invoice", "hi"][n % 4]
        },
        runs=10,
        history=240,
        duration_ms=6.0,
    ),
    SeedCode(
        name="escalate",
        language="python",
        source=ESCALATE,
        params=lambda n: {"ticket": "" if n % 4 == 1 else f"T-{900 + n}"},
        runs=6,
        history=40,
        duration_ms=25.0,
    ),
]


@dataclass
class Service:
    url: str
    folder: Path
    api: httpx.Client

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.folder / 'db.sqlite'}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def service_process(folder: Path) -> Iterator[Service]:
    port = free_port()
    env = {
        **os.environ,
        "CODEACTIONS_DATABASE_URL": f"sqlite:///{folder / 'db.sqlite'}",
        "CODEACTIONS_AUTH_TOKEN": TOKEN,
        "CODEACTIONS_CLEANER_ENABLED": "false",
        "CODEACTIONS_RUNNER_UID_BASE": str(UID_BASE),
        "CODEACTIONS_RUNNER_WORK_DIR": str(folder / "runner"),
        "CODEACTIONS_LOG_JSON": "false",
    }
    env.pop("CODEACTIONS_REDIS_URL", None)
    cli = Path(sys.executable).with_name("codeactions")
    url = f"http://127.0.0.1:{port}"
    with (folder / "service.log").open("wb") as log:
        process = subprocess.Popen(
            [str(cli), "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        api = httpx.Client(base_url=url, headers={"Authorization": f"Token {TOKEN}"}, timeout=60)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "the service did not start:\n" + (folder / "service.log").read_text()
                    )
                time.sleep(0.2)
            yield Service(url, folder, api)
        finally:
            api.close()
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def check(answer: httpx.Response, *expected: int) -> Any:
    if answer.status_code not in expected:
        raise RuntimeError(
            f"{answer.request.method} {answer.request.url}: {answer.status_code} {answer.text}"
        )
    return answer.json() if answer.content else None


@dataclass
class Seeded:
    project: str
    codes: dict[str, str]  # name -> id
    runs: int
    failed: int
    history: int


def seed(service: Service) -> Seeded:
    """The project, its codes, secrets and member, and real runs, all through the HTTP API."""
    api = service.api
    project = str(uuid.uuid4())
    check(api.post("/projects", json={"uuid": project, "name": "Support bot"}), 201)
    check(api.post("/projects", json={"uuid": str(uuid.uuid4()), "name": "Billing reports"}), 201)
    check(api.post("/projects", json={"uuid": str(uuid.uuid4()), "name": "Lead scoring"}), 201)
    for name, value in [
        ("SHOP_API_KEY", "sk_live_51HqPz2eZvKYlo2C7xQ9a"),
        ("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T000/B000/XXXX"),
    ]:
        check(
            api.post("/secret", json={"name": name, "value": value, "project_uuid": project}), 201
        )
    for email, role in [("ana@example.com", 2), ("bia@example.com", 3)]:
        check(api.put(f"/projects/{project}/permissions/{email}", json={"role": role}), 200, 201)

    codes: dict[str, str] = {}
    for code in CODES:
        answer = api.post(
            "/code",
            params={
                "project_uuid": project,
                "name": code.name,
                "language": code.language,
                "type": "endpoint",
            },
            content=code.source,
        )
        codes[code.name] = str(check(answer, 201)["id"])

    runs = failed = 0
    for code in CODES:
        for n in range(code.runs):
            answer = api.post(f"/run/{codes[code.name]}", json={"params": code.params(n)})
            runs += 1
            failed += answer.status_code != 200
    history = write_sample_history(service, codes)
    return Seeded(project, codes, runs, failed, history)


def write_sample_history(service: Service, codes: dict[str, str]) -> int:
    """Runs over the last 24 hours, busier in the day, each a copy of a real run of its code."""
    rng = random.Random(7)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for code in CODES:
        real = check(service.api.get("/coderun", params={"code_id": codes[code.name]}), 200)
        by_status: dict[str, list[dict[str, Any]]] = {}
        for run in real:
            by_status.setdefault(run["status"], []).append(run)
        for _ in range(code.history):
            created = (
                now - timedelta(hours=24) + timedelta(seconds=rng.uniform(60, 24 * 3600 - 300))
            )
            hour = created.hour
            # Fewer runs at night: drop most of them between 22:00 and 07:00 UTC.
            if (hour >= 22 or hour < 7) and rng.random() < 0.7:
                continue
            failing = rng.random() < (0.25 if 14 <= hour < 16 else 0.05)
            status = "failed" if failing and "failed" in by_status else "completed"
            model = rng.choice(by_status.get(status) or real)
            slow = 6.0 if 14 <= hour < 16 else 1.0
            duration = code.duration_ms * slow * rng.lognormvariate(0, 0.45)
            rows.append(
                {
                    "id": uuid.uuid4(),
                    "code_id": uuid.UUID(codes[code.name]),
                    "status": model["status"],
                    "result": model["result"],
                    "extra": model["extra"],
                    "params": model["params"],
                    "body": model["body"],
                    "headers": model["headers"],
                    "created_at": created,
                    "updated_at": created + timedelta(milliseconds=duration),
                }
            )
    engine = create_engine(service.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(CodeRun), rows)
    finally:
        engine.dispose()
    return len(rows)


@dataclass
class Shot:
    name: str
    seconds: float
    size: int


class Screenshots:
    def __init__(self, page: Page, url: str, out: Path) -> None:
        self.page = page
        self.url = url
        self.out = out
        self.shots: list[Shot] = []
        self._started = 0.0
        self._ready: float | None = None

    def open(self, path: str = "") -> None:
        self.start()
        self.page.goto(f"{self.url}/console{path}")

    def start(self) -> None:
        self._started = time.perf_counter()
        self._ready = None

    def ready(self) -> None:
        """The page is ready now; waiting that follows (charts drawing) is not counted."""
        self._ready = time.perf_counter() - self._started

    def save(self, name: str, clip: dict[str, float] | None = None) -> None:
        seconds = time.perf_counter() - self._started if self._ready is None else self._ready
        path = self.out / name
        if clip is None:
            self.page.screenshot(path=str(path), full_page=True)
        else:
            self.page.screenshot(path=str(path), full_page=True, clip=clip)  # type: ignore[arg-type]
        self.shots.append(Shot(name, seconds, path.stat().st_size))


def wait_for_charts(page: Page) -> None:
    charts = page.get_by_role("region", name="Charts")
    expect(charts).to_contain_text("runs in the range")
    page.wait_for_timeout(500)  # Chart.js draws on the next frame


def take(service: Service, seeded: Seeded, out: Path) -> list[Shot]:
    project_path = f"/projects/{seeded.project}"
    code_path = f"{project_path}/codes/{seeded.codes['order-status']}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)  # type: ignore[arg-type]
            page = context.new_page()
            page.set_default_timeout(60_000)
            shots = Screenshots(page, service.url, out)

            shots.open()
            expect(page.get_by_role("button", name="Sign in")).to_be_visible()
            shots.save("signin.png")

            page.get_by_label("Token").fill(TOKEN)
            shots.start()
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("link", name="Support bot")).to_be_visible()
            shots.save("projects.png")

            shots.start()
            page.get_by_role("link", name="Support bot").click()
            expect(page.get_by_role("region", name="Codes")).to_contain_text("order-status")
            expect(page.get_by_role("region", name="Secrets")).to_contain_text("SHOP_API_KEY")
            expect(page.get_by_role("region", name="Members")).to_contain_text("ana@example.com")
            shots.save("project.png")

            shots.open(code_path)
            expect(page.get_by_role("textbox", name="Source")).to_contain_text("def Run(engine)")
            wait_for_charts(page)
            page.get_by_label("Param key").fill("order_id")
            page.get_by_label("Param value").fill("41318")
            shots.start()
            page.get_by_role("button", name="Run").click()
            result = page.get_by_role("region", name="Result")
            expect(result).to_contain_text("completed")
            expect(result).to_contain_text("Your order is")
            shots.ready()
            wait_for_charts(page)  # the charts reload after a run
            shots.save("code.png")

            runs = page.get_by_role("region", name="Runs")
            charts = page.get_by_role("region", name="Charts")
            shots.start()
            runs.scroll_into_view_if_needed()
            expect(runs.get_by_role("row").filter(has_text="failed").first).to_be_visible()
            expect(charts).to_contain_text("runs in the range")
            shots.ready()
            wait_for_charts(page)
            top, bottom = runs.bounding_box(), charts.bounding_box()
            assert top is not None and bottom is not None
            scroll = page.evaluate("window.scrollY")
            y = top["y"] + scroll - 16
            clip = {
                "x": 0,
                "y": y,
                "width": VIEWPORT["width"],
                "height": bottom["y"] + scroll + bottom["height"] + 16 - y,
            }
            shots.save("history.png", clip)

            shots.start()
            runs.get_by_role("row").filter(has_text="completed").first.get_by_role("link").click()
            expect(page.get_by_role("region", name="Request")).to_contain_text("order_id")
            expect(page.get_by_role("region", name="Result")).to_contain_text("completed")
            shots.save("run.png")

            shots.open(f"{project_path}/codes/new")
            page.get_by_label("Name", exact=True).fill("ticket-priority")
            page.get_by_label("Language").select_option("go")
            expect(page.get_by_role("textbox", name="Source")).to_contain_text("package main")
            page.get_by_role("textbox", name="Source").fill(BROKEN_GO)
            shots.start()
            page.get_by_role("button", name="Save").click()
            expect(page.get_by_role("alert")).to_contain_text("undefinedThing")
            expect(page.locator(".cm-lintRange-error")).to_have_count(1)
            shots.save("go-error.png")
            context.close()
            return shots.shots
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "console")
    parser.add_argument(
        "--readme", action="store_true", help="also copy code.png to docs/console.png"
    )
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="console-screenshots-") as work:
        started = time.perf_counter()
        with service_process(Path(work)) as service:
            print(f"service up at {service.url} in {time.perf_counter() - started:.1f} s")
            started = time.perf_counter()
            seeded = seed(service)
            print(
                f"seeded in {time.perf_counter() - started:.1f} s: {len(seeded.codes)} codes, "
                f"{seeded.runs} runs through POST /run ({seeded.failed} failed), "
                f"{seeded.history} sample runs written to the database"
            )
            shots = take(service, seeded, out)

    print()
    print("| file | KiB | ready s |")
    print("|---|---:|---:|")
    for shot in shots:
        print(f"| {out / shot.name} | {shot.size / 1024:.0f} | {shot.seconds:.2f} |")
    if args.readme:
        docs = ROOT / "docs"
        docs.mkdir(exist_ok=True)
        shutil.copyfile(out / "code.png", docs / "console.png")
        print(f"copied code.png to {docs / 'console.png'}")


if __name__ == "__main__":
    main()
