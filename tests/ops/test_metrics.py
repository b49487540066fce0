"""GET /metrics: the original's names, route-template labels, counters that move."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from codeactions.config import ServerSettings, Settings
from codeactions.main import create_app
from codeactions.ops.metrics import METRICS, Metrics
from tests.conftest import ADMIN
from tests.runs.conftest import OTHER_PROJECT, PROJECT, FakeRunner


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, lbls), v in samples(text).items() if n == name and wanted <= set(lbls))


async def scrape(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def test_metrics_expose_the_original_names(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    text = await scrape(client)
    for name in (
        "codeactions_requests_total",
        "codeactions_request_duration_seconds",
        "codeactions_request_size_bytes",
        "codeactions_response_size_bytes",
        "workerpool_workers_total",
        "workerpool_workers_busy",
        "workerpool_queue_size",
        "workerpool_queue_capacity",
        "workerpool_tasks_submitted_total",
        "workerpool_tasks_completed_total",
        "workerpool_tasks_failed_total",
        "workerpool_tasks_rejected_total",
        "workerpool_tasks_timeout_total",
        "workerpool_queue_wait_seconds",
        "workerpool_task_duration_seconds",
        "codeactions_rate_limited_total",
    ):
        assert f"# TYPE {name} " in text, name
    assert 'workerpool_task_duration_seconds_bucket{le="30"}' in text  # as Go writes it
    assert 'workerpool_queue_wait_seconds_bucket{le="0.001"}' in text


async def test_request_metrics_use_the_route_template_not_the_raw_path(
    client: httpx.AsyncClient,
) -> None:
    project = str(uuid.uuid4())
    await client.get(f"/projects/{project}", headers=ADMIN)
    await client.get(f"/no/such/{project}")
    text = await scrape(client)

    assert project not in text
    assert (
        value(text, "codeactions_requests_total", url="/projects/:project_uuid", method="GET") == 1
    )
    assert value(text, "codeactions_requests_total", url="unmatched", code="404") == 1
    assert (
        value(text, "codeactions_request_duration_seconds_count", url="/projects/:project_uuid")
        == 1
    )


async def test_request_counter_moves_with_each_call(client: httpx.AsyncClient) -> None:
    before = value(await scrape(client), "codeactions_requests_total", url="/healthz", code="200")
    for _ in range(3):
        await client.get("/healthz")
    after = value(await scrape(client), "codeactions_requests_total", url="/healthz", code="200")
    assert after - before == 3


async def test_request_and_response_sizes_are_recorded(client: httpx.AsyncClient) -> None:
    await client.post(
        "/projects", headers=ADMIN, json={"uuid": str(uuid.uuid4()), "name": "x" * 250}
    )
    text = await scrape(client)
    assert (
        value(
            text, "codeactions_request_size_bytes_sum", url="/projects", method="POST", code="201"
        )
        > 250
    )
    assert (
        value(
            text, "codeactions_response_size_bytes_sum", url="/projects", method="POST", code="201"
        )
        > 250
    )


async def test_methods_and_hosts_chosen_by_callers_stay_bounded(client: httpx.AsyncClient) -> None:
    for i in range(30):
        await client.request("BREW", "/healthz", headers={"Host": f"h{i}.example"})
    text = await scrape(client)
    hosts = {
        dict(lbls).get("host")
        for (name, lbls) in samples(text)
        if name == "codeactions_requests_total"
    }
    assert len(hosts) <= 21  # 20 kept, the rest folded into "other"
    assert "other" in hosts
    assert value(text, "codeactions_requests_total", method="OTHER") == 30


async def test_run_metrics_keep_the_original_names_without_code_labels(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(server=ServerSettings(metrics_project_labels=True)))
    async with app.router.lifespan_context(app):
        metrics: Metrics = app.state.parts[METRICS]
        metrics.run_finished(
            project_uuid="p1",
            code_id="c1",
            language="python",
            outcome="completed",
            reason=None,
            seconds=0.2,
        )
        metrics.run_finished(
            project_uuid="p1",
            code_id="c2",
            language="python",
            outcome="failed",
            reason="memory",
            seconds=1,
        )
        metrics.run_finished(
            project_uuid="p1",
            code_id="c2",
            language="go",
            outcome="timeout",
            reason="timeout",
            seconds=5,
        )
        metrics.run_finished(
            project_uuid="p1",
            code_id="c2",
            language="go",
            outcome="rejected",
            reason=None,
            seconds=0,
        )
        metrics.queue_rejected()
        metrics.rate_limited()
        metrics.code_created(project_uuid="p1", code_id="c1")
        metrics.code_updated(project_uuid="p1", code_id="c1")
        metrics.queue_depth(4, 2, 108)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            text = await scrape(client)

    assert 'ca_run_count{code_id="",project_uuid="p1"} 3.0' in text  # exact original name
    assert "c1" not in text and "c2" not in text  # no per-code series by default
    assert value(text, "ca_run_elapsed_count", project_uuid="p1") == 3
    assert 'ca_code_created_count{code_id="",project_uuid="p1"} 1.0' in text
    assert 'ca_code_updated_count{code_id="",project_uuid="p1"} 1.0' in text
    assert value(text, "workerpool_tasks_submitted_total") == 3
    assert value(text, "workerpool_tasks_completed_total") == 1
    assert value(text, "workerpool_tasks_failed_total") == 1
    assert value(text, "workerpool_tasks_timeout_total") == 1
    assert value(text, "workerpool_tasks_rejected_total") == 1
    assert value(text, "codeactions_rate_limited_total") == 1
    assert value(text, "codeactions_sandbox_kills_total", reason="memory") == 1
    assert value(text, "codeactions_sandbox_kills_total", reason="timeout") == 1
    assert (
        value(text, "codeactions_run_duration_seconds_count", language="go", outcome="timeout") == 1
    )
    assert value(text, "workerpool_queue_size") == 4
    assert value(text, "workerpool_workers_busy") == 2


def test_code_labels_are_filled_when_asked() -> None:
    metrics = Metrics(code_labels=True, project_labels=True)
    metrics.code_created(project_uuid="p1", code_id="c1")
    assert metrics.ca_code_created.value("p1", "c1") == 1


async def test_metrics_are_per_app(app: FastAPI, client: httpx.AsyncClient) -> None:
    other = Metrics()
    other.rate_limited()
    text = await scrape(client)
    assert value(text, "codeactions_rate_limited_total") == 0


async def scrape_after_runs_of_two_projects(settings: Settings) -> str:
    """Codes of two projects created and run through the API, then `/metrics` read anonymously."""
    app = create_app(settings, runner=FakeRunner())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for project in (PROJECT, OTHER_PROJECT):
                created = await client.post(
                    "/code",
                    params={
                        "project_uuid": project,
                        "name": "n",
                        "language": "python",
                        "type": "endpoint",
                    },
                    content="def Run(engine):\n    engine.result.set('ok')\n",
                    headers=ADMIN,
                )
                assert created.status_code == 201, created.text
                ran = await client.get(f"/action/endpoint/{created.json()['id']}")
                assert ran.status_code == 200, ran.text
            return await scrape(client)


async def test_anonymous_metrics_name_no_project(make_settings: Callable[..., Settings]) -> None:
    text = await scrape_after_runs_of_two_projects(make_settings())
    assert PROJECT not in text and OTHER_PROJECT not in text
    # The same series and label names as before, the label left empty.
    assert 'ca_run_count{code_id="",project_uuid=""} 2.0' in text
    assert 'ca_code_created_count{code_id="",project_uuid=""} 2.0' in text
    assert value(text, "ca_run_elapsed_count", project_uuid="") == 2


async def test_project_labels_are_filled_when_asked(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(server=ServerSettings(metrics_project_labels=True))
    text = await scrape_after_runs_of_two_projects(settings)
    for project in (PROJECT, OTHER_PROJECT):
        assert f'ca_run_count{{code_id="",project_uuid="{project}"}} 1.0' in text
        assert value(text, "ca_run_elapsed_count", project_uuid=project) == 1


def exposed_types(text: str) -> dict[str, str]:
    """Metric name to type, from the `# TYPE` lines."""
    lines = (line.split() for line in text.splitlines() if line.startswith("# TYPE "))
    return {parts[2]: parts[3] for parts in lines}


def sample_names(text: str) -> set[str]:
    return {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


async def test_metrics_read_as_the_original_client_golang_wrote_them(
    make_settings: Callable[..., Settings],
) -> None:
    text = await scrape_after_runs_of_two_projects(make_settings())
    types = exposed_types(text)
    names = sample_names(text)

    # Counters under the original's exact names, typed counter (no `_total` added to ca_*).
    for counter in (
        "ca_run_count",
        "ca_code_created_count",
        "ca_code_updated_count",
        "codeactions_requests_total",
        "workerpool_tasks_submitted_total",
        "workerpool_tasks_completed_total",
        "workerpool_tasks_failed_total",
        "workerpool_tasks_rejected_total",
        "workerpool_tasks_timeout_total",
    ):
        assert types.get(counter) == "counter", (counter, types.get(counter))
    assert "ca_run_count" in names and "ca_run_count_total" not in names
    assert "ca_code_created_count" in names
    for histogram in (
        "ca_run_elapsed",
        "codeactions_request_duration_seconds",
        "codeactions_request_size_bytes",
        "codeactions_response_size_bytes",
        "workerpool_queue_wait_seconds",
        "workerpool_task_duration_seconds",
    ):
        assert types.get(histogram) == "histogram", histogram
        assert {f"{histogram}_bucket", f"{histogram}_sum", f"{histogram}_count"} <= names
    for gauge in ("workerpool_workers_total", "workerpool_queue_size"):
        assert types.get(gauge) == "gauge"
    # Every sample belongs to the family its TYPE line names, as client_golang writes them.
    for name in names:
        assert any(name == family or name.startswith(f"{family}_") for family in types), name
    assert not [name for name in names if name.endswith("_created")]  # not in client_golang

    # The route label in echo's form, the original's.
    assert value(text, "codeactions_requests_total", url="/action/endpoint/:code_id") == 2
    assert value(text, "codeactions_requests_total", url="/code", method="POST") == 2
    assert not [line for line in text.splitlines() if "{code_id}" in line]
    # Go's default buckets for durations, written as Go writes them.
    assert 'ca_run_elapsed_bucket{code_id="",le="10",project_uuid=""} 2.0' in text
    assert 'le="0.075"' not in text

    # The process collector the original's default registry had.
    for process in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_start_time_seconds",
        "process_open_fds",
        "process_max_fds",
    ):
        assert process in names, process
    assert types["process_cpu_seconds_total"] == "counter"


async def test_metrics_are_served_with_client_golangs_content_type(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/metrics")
    assert response.headers["content-type"] == (
        "text/plain; version=0.0.4; charset=utf-8; escaping=underscores"
    )
