"""The console at /console, driven in Chromium by its accessible names through the real service:
sign in and out, write a code from the template, run it and watch its lines arrive, history, deep
links, a Go compile error, secrets, members, and paging through many codes."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import expect

from tests.console.conftest import EMAIL, PASSWORD, USERNAME, Console, Service, needs_browser

pytestmark = needs_browser


def new_project(service: Service, name: str = "Console project") -> str:
    project = str(uuid.uuid4())
    service.create_project(project, name)
    return project


def test_signing_in_with_a_token_hides_the_form_and_signing_out_forgets_the_token(
    console: Console, service: Service
) -> None:
    project = new_project(service, "Signing in")
    console.open()
    expect(console.page.get_by_role("button", name="Sign in")).to_be_visible()
    console.sign_in()
    expect(console.page.get_by_label("Token")).to_have_count(0)
    expect(console.page.get_by_role("link", name="Signing in")).to_be_visible()
    stored = console.page.evaluate("sessionStorage.getItem('codeactions.token')")
    assert stored is not None

    console.page.get_by_role("button", name="Sign out").click()
    expect(console.page.get_by_label("Token")).to_be_visible()
    assert console.page.evaluate("sessionStorage.length") == 0
    console.open(f"/projects/{project}")  # a deep link asks to sign in again
    expect(console.page.get_by_role("button", name="Sign in")).to_be_visible()


def test_a_token_the_service_refuses_is_said_so_and_nothing_is_stored(console: Console) -> None:
    console.open()
    console.page.get_by_label("Token").fill("not-a-token")
    console.page.get_by_role("button", name="Sign in").click()
    expect(console.page.get_by_role("alert")).to_contain_text("did not accept this token")
    assert console.page.evaluate("sessionStorage.length") == 0


def test_a_user_signs_in_with_username_and_password_and_sees_their_projects(
    console: Console, service: Service
) -> None:
    project = new_project(service, "Ana's project")
    other = new_project(service, "Someone else's")
    answer = service.api.put(f"/projects/{project}/permissions/{EMAIL}", json={"role": 2})
    assert answer.status_code in (200, 201), answer.text

    console.open()
    console.page.get_by_label("Username").fill(USERNAME)
    console.page.get_by_label("Password").fill(PASSWORD)
    console.page.get_by_role("button", name="Sign in").click()
    expect(console.page.get_by_role("link", name="Ana's project")).to_be_visible()
    expect(console.page.get_by_text("contributor")).to_be_visible()
    expect(console.page.get_by_role("link", name="Someone else's")).to_have_count(0)
    assert other


def test_a_wrong_password_is_refused_on_the_page(console: Console) -> None:
    console.open()
    console.page.get_by_label("Username").fill(USERNAME)
    console.page.get_by_label("Password").fill("wrong")
    console.page.get_by_role("button", name="Sign in").click()
    expect(console.page.get_by_role("alert")).to_be_visible()
    expect(console.page.get_by_role("button", name="Sign in")).to_be_visible()


def test_write_a_code_from_the_template_run_it_and_find_the_run(
    console: Console, service: Service
) -> None:
    project = new_project(service)
    page = console.page
    console.open(f"/projects/{project}")  # a deep link, opened after signing in
    console.sign_in()
    page.get_by_role("button", name="New code").click()
    expect(page.get_by_role("textbox", name="Source")).to_contain_text("def Run(engine)")
    page.get_by_label("Name", exact=True).fill("greeter")
    expect(page.get_by_label("Language")).to_have_value("python")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status").filter(has_text="Saved")).to_be_visible()
    assert re.search(r"/console/projects/[^/]+/codes/[0-9a-f-]{36}$", page.url)

    page.get_by_label("Param key").fill("name")
    page.get_by_label("Param value").fill("Ana")
    page.get_by_role("button", name="Run").click()
    logs = page.get_by_role("region", name="Logs")
    result = page.get_by_role("region", name="Result")
    expect(logs).to_contain_text("greeting Ana")
    expect(result).to_contain_text("completed")
    expect(result).to_contain_text('"hello": "Ana"')
    expect(result).to_contain_text("200")

    runs = page.get_by_role("region", name="Runs")
    row = runs.get_by_role("row").filter(has_text="completed")
    expect(row).to_have_count(1)
    row.get_by_role("link").click()
    expect(page.get_by_role("region", name="Request")).to_contain_text('"name": "Ana"')
    expect(page.get_by_role("region", name="Logs")).to_contain_text("greeting Ana")

    run_url = page.url
    page.goto("about:blank")
    page.goto(run_url)  # the run's deep link, in the same signed-in tab
    expect(page.get_by_role("region", name="Result")).to_contain_text("completed")

    listing = service.api.get("/code", params={"project_uuid": project}).json()
    assert [code["name"] for code in listing] == ["greeter"]


def test_log_lines_arrive_before_the_result_and_a_draft_runs_unsaved(
    console: Console, service: Service
) -> None:
    project = new_project(service)
    code_id = service.create_code(
        project, "slow", 'def Run(engine):\n    engine.result.set("saved")\n'
    )
    page = console.page
    console.open(f"/projects/{project}/codes/{code_id}")
    console.sign_in()
    draft = (
        "import time\n"
        "def Run(engine):\n"
        '    engine.log.info("first line")\n'
        "    time.sleep(1.5)\n"
        '    engine.result.set("draft done")\n'
    )
    page.get_by_role("textbox", name="Source").fill(draft)
    expect(page.get_by_text("Unsaved changes")).to_be_visible()
    page.get_by_role("button", name="Run").click()
    logs = page.get_by_role("region", name="Logs")
    result = page.get_by_role("region", name="Result")
    expect(logs).to_contain_text("first line")
    assert "completed" not in result.inner_text()  # the line came while the code still ran
    expect(result).to_contain_text("draft done")
    saved = service.api.get(f"/code/{code_id}").json()
    assert "time.sleep" not in saved["source"]  # the draft ran without being saved


def test_a_go_compile_error_on_save_is_shown_against_its_line(
    console: Console, service: Service
) -> None:
    project = new_project(service)
    page = console.page
    console.open(f"/projects/{project}/codes/new")
    console.sign_in()
    page.get_by_label("Name", exact=True).fill("broken")
    page.get_by_label("Language").select_option("go")
    expect(page.get_by_role("textbox", name="Source")).to_contain_text("package main")
    source = "package main\n\nfunc Run(engine *Engine) {\n\tx := undefinedThing\n}\n"
    page.get_by_role("textbox", name="Source").fill(source)
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert")).to_contain_text("undefinedThing")
    marked = page.locator(".cm-lintRange-error")
    expect(marked).to_have_count(1)
    expect(marked).to_contain_text("undefinedThing")
    assert service.api.get("/code", params={"project_uuid": project}).json() == []


def test_secrets_are_created_replaced_and_deleted_with_their_values_masked(
    console: Console, service: Service
) -> None:
    project = new_project(service)
    page = console.page
    console.open(f"/projects/{project}")
    console.sign_in()
    secrets = page.get_by_role("region", name="Secrets")
    secrets.get_by_label("Name").fill("API_KEY")
    secrets.get_by_label("Value").fill("first-value")
    secrets.get_by_role("button", name="Save").click()
    expect(secrets.get_by_role("row").filter(has_text="API_KEY")).to_contain_text("********")
    assert "first-value" not in page.content()

    secrets.get_by_role("button", name="Replace API_KEY").click()
    secrets.get_by_label("Value").fill("second-value")
    secrets.get_by_role("button", name="Save").click()
    expect(secrets.get_by_role("status")).to_contain_text("Replaced")
    stored = service.api.get("/secret", params={"project_uuid": project}).json()
    assert [secret["name"] for secret in stored] == ["API_KEY"]

    secrets.get_by_role("button", name="Delete").click()
    expect(secrets.get_by_role("row").filter(has_text="API_KEY")).to_have_count(0)
    assert service.api.get("/secret", params={"project_uuid": project}).json() == []


def test_members_are_listed_with_their_roles(console: Console, service: Service) -> None:
    project = new_project(service)
    answer = service.api.put(f"/projects/{project}/permissions/bia@example.com", json={"role": 3})
    assert answer.status_code in (200, 201), answer.text
    console.open(f"/projects/{project}")
    console.sign_in()
    members = console.page.get_by_role("region", name="Members")
    expect(members.get_by_role("row").filter(has_text="bia@example.com")).to_contain_text(
        "moderator"
    )


def test_a_moderator_deletes_a_code(console: Console, service: Service) -> None:
    project = new_project(service)
    code_id = service.create_code(project, "doomed", "def Run(engine):\n    pass\n")
    console.open(f"/projects/{project}/codes/{code_id}")
    console.sign_in()
    console.page.get_by_role("button", name="Delete").click()
    expect(console.page.get_by_text("Deleted the code doomed")).to_be_visible()
    assert service.api.get(f"/code/{code_id}").status_code == 404


def test_many_codes_are_paged_and_searched_with_their_last_run(
    console: Console, service: Service
) -> None:
    project = new_project(service)
    source = "def Run(engine):\n    engine.result.set('ok')\n"
    ids = [service.create_code(project, f"code {n:03d}", source) for n in range(60)]
    ran = service.api.post(f"/run/{ids[-1]}", json={})
    assert ran.status_code == 200, ran.text
    page = console.page
    console.open(f"/projects/{project}")
    console.sign_in()
    codes = page.get_by_role("region", name="Codes")
    expect(codes).to_contain_text("60 in all")
    expect(codes.get_by_role("row").filter(has_text="code 059")).to_contain_text("completed")
    codes.get_by_role("button", name="Next").click()
    expect(codes).to_contain_text("Page 2 of 2")
    codes.get_by_label("Search codes").fill("code 007")
    expect(codes.get_by_role("link", name="code 007")).to_be_visible()
    expect(codes).to_contain_text("1 in all")


@pytest.mark.parametrize("path", ["", "/projects/x", "/projects/x/codes/y/runs/z"])
def test_every_console_path_serves_the_page(service: Service, path: str) -> None:
    import httpx

    answer = httpx.get(f"{service.url}/console{path}")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert "Content-Security-Policy" in answer.headers


def test_without_the_live_channel_a_saved_code_still_runs_over_http(
    console: Console, service: Service
) -> None:
    project = new_project(service)
    code_id = service.create_code(
        project,
        "plain",
        'def Run(engine):\n    engine.log.info("over http")\n    engine.result.set("ok")\n',
    )
    page = console.page
    page.route_web_socket(re.compile(r".*/web\?.*"), lambda socket: socket.close(code=1008))
    console.open(f"/projects/{project}/codes/{code_id}")
    console.sign_in()
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_role("alert")).to_contain_text("live channel is not available")
    expect(page.get_by_role("region", name="Result")).to_contain_text("completed")
    expect(page.get_by_role("region", name="Logs")).to_contain_text("over http")


def test_a_running_run_is_followed_live_on_its_page(console: Console, service: Service) -> None:
    project = new_project(service)
    source = (
        "import time\n"
        "def Run(engine):\n"
        '    engine.log.info("before the pause")\n'
        "    time.sleep(2.5)\n"
        '    engine.log.info("after the pause")\n'
        '    engine.result.set("done")\n'
    )
    code_id = service.create_code(project, "pausing", source)
    page = console.page
    console.open(f"/projects/{project}/codes/{code_id}")
    console.sign_in()
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_role("region", name="Logs")).to_contain_text("before the pause")
    running = page.get_by_role("region", name="Runs").get_by_role("row").filter(has_text="started")
    running.get_by_role("link").click()  # the list showed the run as it started
    logs = page.get_by_role("region", name="Logs")
    expect(logs).to_contain_text("before the pause")
    expect(page.get_by_role("region", name="Result")).to_contain_text("started")
    expect(logs).to_contain_text("after the pause")
    expect(page.get_by_role("region", name="Result")).to_contain_text("completed")
    expect(logs.get_by_text("before the pause")).to_have_count(1)
