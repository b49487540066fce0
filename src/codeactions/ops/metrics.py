"""Prometheus metrics: the original's names, plus run, sandbox, queue and rate-limit figures.

Labels: the original labelled `ca_*` with `project_uuid` and `code_id`, one series (and for
`ca_run_elapsed` a dozen) per code ever run. Both labels are kept, so dashboards keep parsing, but
exposed empty unless asked for: `/metrics` is public, and would otherwise list every tenant
(`CODEACTIONS_METRICS_PROJECT_LABELS=true`) and every code (`CODEACTIONS_METRICS_CODE_LABELS=true`,
also unbounded). Filled, they are only ever taken from a stored code, never from raw request input.
An empty label is the same as no label for PromQL, so the original's queries keep working.

HTTP metrics are labelled with the route in the original's (echo's) form,
`/action/endpoint/:code_id`, never the raw path (an unmatched one is `unmatched`); methods and
hosts, which callers choose freely, are folded into a bounded set.

`/metrics` reads as client_golang writes it (see `exposition`): the same sample names and types,
no `_created` series, `le` without a trailing `.0`. Python has no `go_*` metrics; the `process_*`
ones are there.
"""

from __future__ import annotations

import copy
import re
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Annotated, Any

from fastapi import Depends
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from codeactions.parts import Part, part

SIZE_BUCKETS = (1e3, 2e3, 5e3, 1e4, 1e5, 5e5, 1e6, 2.5e6, 5e6, 1e7)  # echoprometheus' 1 KB..10 MB
GO_DEFAULT_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
)  # prometheus.DefBuckets
QUEUE_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
KILL_REASONS = frozenset({"timeout", "memory", "cpu", "output", "file_size", "killed"})
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MAX_HOSTS = 20  # distinct `host` label values kept; later ones are counted as "other"
UNMATCHED = "unmatched"
# What client_golang's promhttp answers; the text is the same format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8; escaping=underscores"


class ExactNameFamily(Metric):
    """A counter family whose samples carry its name as it is (no `_total` added)."""


class ExactNameCounter(Collector):
    """A counter exposed under its exact name, like the original's `ca_run_count`.

    client_golang exposes a counter under the name it was given (`ca_run_count`, typed counter);
    prometheus_client would append `_total`, and dashboards built on the Go service query the
    bare name.
    """

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, *labelvalues: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[labelvalues] = self._values.get(labelvalues, 0.0) + amount

    def value(self, *labelvalues: str) -> float:
        with self._lock:
            return self._values.get(labelvalues, 0.0)

    def collect(self) -> Iterable[Metric]:
        metric = ExactNameFamily(self.name, self.documentation, "counter")
        with self._lock:
            items = list(self._values.items())
        for labelvalues, value in items:
            metric.samples.append(
                Sample(self.name, dict(zip(self.labelnames, labelvalues, strict=True)), value)
            )
        yield metric


class Metrics:
    """Every metric the service records, on a registry of its own (one per app)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        code_labels: bool = False,
        project_labels: bool = False,
        workers: int = 0,
        queue_capacity: int = 0,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.code_labels = code_labels
        self.project_labels = project_labels
        self._hosts: set[str] = set()
        r = self.registry
        http = ("code", "method", "host", "url")
        self.requests = Counter(
            "codeactions_requests", "HTTP requests processed.", http, registry=r
        )
        self.request_duration = Histogram(
            "codeactions_request_duration_seconds",
            "HTTP request latency in seconds.",
            http,
            buckets=GO_DEFAULT_BUCKETS,
            registry=r,
        )
        self.request_size = Histogram(
            "codeactions_request_size_bytes",
            "HTTP request body sizes in bytes.",
            http,
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.response_size = Histogram(
            "codeactions_response_size_bytes",
            "HTTP response body sizes in bytes.",
            http,
            buckets=SIZE_BUCKETS,
            registry=r,
        )

        # The original's custom metrics (internal/metrics/metrics.go).
        code = ("project_uuid", "code_id")
        self.ca_run_count = ExactNameCounter("ca_run_count", "Executions of codes.", code)
        self.ca_code_created = ExactNameCounter("ca_code_created_count", "Codes created.", code)
        self.ca_code_updated = ExactNameCounter("ca_code_updated_count", "Codes updated.", code)
        for collector in (self.ca_run_count, self.ca_code_created, self.ca_code_updated):
            r.register(collector)
        self.ca_run_elapsed = Histogram(
            "ca_run_elapsed",
            "Execution time of codes in seconds.",
            code,
            buckets=GO_DEFAULT_BUCKETS,
            registry=r,
        )

        # The original's worker-pool metrics (spec §2.6): the runner's slots and queue.
        self.workers_total = Gauge(
            "workerpool_workers_total", "Runs that may execute at once.", registry=r
        )
        self.workers_busy = Gauge("workerpool_workers_busy", "Runs executing now.", registry=r)
        self.queue_size = Gauge("workerpool_queue_size", "Runs waiting for a slot.", registry=r)
        self.queue_capacity = Gauge(
            "workerpool_queue_capacity", "Runs that may wait for a slot.", registry=r
        )
        self.tasks_submitted = Counter(
            "workerpool_tasks_submitted", "Runs accepted by the pool.", registry=r
        )
        self.tasks_completed = Counter(
            "workerpool_tasks_completed", "Runs that completed.", registry=r
        )
        self.tasks_failed = Counter("workerpool_tasks_failed", "Runs that failed.", registry=r)
        self.tasks_rejected = Counter(
            "workerpool_tasks_rejected",
            "Runs refused because the queue, or their project's or code's share of it, was full.",
            registry=r,
        )
        self.tasks_timeout = Counter("workerpool_tasks_timeout", "Runs that timed out.", registry=r)
        self.queue_wait = Histogram(
            "workerpool_queue_wait_seconds",
            "Time runs waited for a slot.",
            buckets=QUEUE_WAIT_BUCKETS,
            registry=r,
        )
        self.task_duration = Histogram(
            "workerpool_task_duration_seconds",
            "Time runs took to execute.",
            buckets=TASK_BUCKETS,
            registry=r,
        )
        self._workers = workers
        self.workers_total.set(workers)
        self.queue_capacity.set(queue_capacity)

        # Beyond the original.
        self.run_duration = Histogram(
            "codeactions_run_duration_seconds",
            "Execution time by language and outcome.",
            ("language", "outcome"),
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.sandbox_kills = Counter(
            "codeactions_sandbox_kills",
            "Runs the sandbox ended for exceeding a limit, by reason.",
            ("reason",),
            registry=r,
        )
        self.run_queue_depth = Gauge(
            "codeactions_run_queue_depth", "Runs waiting for a sandbox slot.", registry=r
        )
        self.rate_limited_total = Counter(
            "codeactions_rate_limited", "Requests refused by the rate limiter (429).", registry=r
        )
        self.events = Counter(
            "codeactions_events",
            "RabbitMQ messages handled, by consumer and outcome (applied, partial: applied "
            "but for a part set aside, dead, dropped: no dead-letter queue, retried, requeued: "
            "no delay queue).",
            ("consumer", "outcome"),
            registry=r,
        )
        self.ws_connections = Gauge(
            "codeactions_ws_connections", "Open WebSocket connections of /web.", registry=r
        )
        self.ws_frames = Counter(
            "codeactions_ws_frames",
            "WebSocket requests answered, by package and status code (0 OK ... 4 not found).",
            ("pkg_id", "status_code"),
            registry=r,
        )
        self.ws_events = Counter(
            "codeactions_ws_events",
            "Events sent to live followers (WebSocket and SSE).",
            registry=r,
        )
        self.ws_lagged = Counter(
            "codeactions_ws_lagged",
            "Live followers that fell behind and were told where to resume.",
            registry=r,
        )
        # Dispatch to workers over RabbitMQ (CODEACTIONS_RUNNER_DISPATCH=rabbitmq).
        self.dispatch_workers = Gauge(
            "codeactions_dispatch_workers", "Workers alive and taking runs.", registry=r
        )
        self.dispatch_slots = Gauge(
            "codeactions_dispatch_worker_slots",
            "Slots of each worker alive, busy or free (as this replica sees them).",
            ("worker", "state"),
            registry=r,
        )
        self.dispatch_latency = Histogram(
            "codeactions_dispatch_seconds",
            "Time from handing a run to a worker to its start there.",
            buckets=QUEUE_WAIT_BUCKETS,
            registry=r,
        )
        self.dispatch_affinity = Counter(
            "codeactions_dispatch_affinity",
            "Runs handed to a worker where their code was warm (hit) or not (miss).",
            ("result",),
            registry=r,
        )
        # The original's default registry had them (client_golang's process collector).
        ProcessCollector(registry=r)

    def _code_labels(self, project_uuid: str, code_id: str) -> tuple[str, str]:
        return (
            project_uuid if self.project_labels else "",
            code_id if self.code_labels else "",
        )

    def run_finished(
        self,
        *,
        project_uuid: str,
        code_id: str,
        language: str,
        outcome: str,  # completed | failed | timeout | rejected
        reason: str | None,  # a runner FailureReason when failed
        seconds: float,
    ) -> None:
        """One execution through any execution route ended (any outcome)."""
        if outcome == "rejected":
            # Never executed: counted by queue_rejected, not as a run.
            return
        labels = self._code_labels(project_uuid, code_id)
        self.ca_run_count.inc(*labels)
        self.ca_run_elapsed.labels(*labels).observe(seconds)
        self.tasks_submitted.inc()
        if outcome == "completed":
            self.tasks_completed.inc()
        elif outcome == "timeout":
            self.tasks_timeout.inc()
        else:
            self.tasks_failed.inc()
        self.task_duration.observe(seconds)
        self.run_duration.labels(language, outcome).observe(seconds)
        kill = "timeout" if outcome == "timeout" else reason
        if kill in KILL_REASONS:
            self.sandbox_kills.labels(kill).inc()

    def run_waited(self, seconds: float) -> None:
        """A run got a slot after waiting this long."""
        self.queue_wait.observe(seconds)

    def queue_depth(self, waiting: int, running: int, capacity: int) -> None:
        """Runs waiting for a slot and running now."""
        self.queue_size.set(waiting)
        self.run_queue_depth.set(waiting)
        self.workers_busy.set(running)
        # `capacity` counts slots and waiting places; the original's gauge is the waiting places.
        self.queue_capacity.set(capacity - self._workers if self._workers else capacity)

    def queue_rejected(self) -> None:
        """A run refused because the queue (503) or its project's or code's share (429) was full."""
        self.tasks_rejected.inc()

    def rate_limited(self) -> None:
        """A request refused by the rate limiter (429)."""
        self.rate_limited_total.inc()

    def code_created(self, *, project_uuid: str, code_id: str) -> None:
        self.ca_code_created.inc(*self._code_labels(project_uuid, code_id))

    def code_updated(self, *, project_uuid: str, code_id: str) -> None:
        self.ca_code_updated.inc(*self._code_labels(project_uuid, code_id))

    def ws_frame(self, *, pkg_id: int, status_code: int) -> None:
        """A WebSocket request was answered."""
        self.ws_frames.labels(str(pkg_id), str(status_code)).inc()

    def event_handled(self, *, consumer: str, outcome: str) -> None:
        """A RabbitMQ message was settled (see `events` for the outcomes)."""
        self.events.labels(consumer, outcome).inc()

    def slots_changed(self, slots: int) -> None:
        """The runs that may execute at once changed (workers joined or left)."""
        self._workers = slots
        self.workers_total.set(slots)

    def workers_seen(self, workers: dict[str, tuple[int, int]]) -> None:
        """The workers alive now: the slots and load of each."""
        self.dispatch_workers.set(len(workers))
        self.dispatch_slots.clear()
        for worker, (slots, load) in workers.items():
            self.dispatch_slots.labels(worker, "busy").set(min(load, slots))
            self.dispatch_slots.labels(worker, "free").set(max(0, slots - load))

    def dispatched(self, seconds: float) -> None:
        """A worker started a run this long after it was handed to it."""
        self.dispatch_latency.observe(seconds)

    def affinity(self, *, hit: bool) -> None:
        self.dispatch_affinity.labels("hit" if hit else "miss").inc()

    def observe_request(
        self,
        *,
        status: int,
        method: str,
        host: str,
        url: str,
        seconds: float,
        request_bytes: int,
        response_bytes: int,
    ) -> None:
        method = method.upper() if method.upper() in METHODS else "OTHER"
        labels = (str(status), method, self._host_label(host), url)
        self.requests.labels(*labels).inc()
        self.request_duration.labels(*labels).observe(seconds)
        self.request_size.labels(*labels).observe(request_bytes)
        self.response_size.labels(*labels).observe(response_bytes)

    def _host_label(self, host: str) -> str:
        # Host is chosen by the caller: keep the first few seen, fold the rest.
        host = host[:100]
        if host in self._hosts:
            return host
        if len(self._hosts) < MAX_HOSTS:
            self._hosts.add(host)
            return host
        return "other"

    def exposition(self) -> bytes:
        """The registry in the text format, as client_golang writes it: counters named as the
        original named them (`ca_run_count`, `codeactions_requests_total`), no `_created`
        series, `le` and `quantile` labels without a trailing `.0` (`le="1"`)."""
        text = []
        for family in self.registry.collect():
            go_family = _as_client_golang(family)
            if isinstance(family, ExactNameFamily):
                # Written untyped, under its own name, then typed counter as client_golang does.
                go_family.type = "unknown"
                exact = generate_latest(_Families([go_family])).decode()
                exact = exact.replace(
                    f"# TYPE {family.name} untyped\n", f"# TYPE {family.name} counter\n"
                )
                text.append(exact.encode())
            else:
                text.append(generate_latest(_Families([go_family])))
        return b"".join(text)

    # Callbacks of async runs (`POST /run?async=true&callback_url=`).
    _callbacks: Counter | None = None

    def callback_finished(self, *, outcome: str) -> None:
        """A run's callback ended: delivered, rejected (a 4xx other than 408/429), failed
        (attempts used up), refused (its host now resolves to a forbidden address), dropped
        (its run's outcome was not recorded) or cancelled (shutdown)."""
        if self._callbacks is None:  # registered on first use: replicas sending none show none
            self._callbacks = Counter(
                "codeactions_callbacks",
                "Callbacks of async runs, by outcome.",
                ("outcome",),
                registry=self.registry,
            )
        self._callbacks.labels(outcome).inc()


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def _as_client_golang(family: Metric) -> Metric:
    """A copy of `family` without the samples client_golang does not have (`_created`) and with
    its bucket bounds and quantiles written as Go writes them (`1`, not `1.0`)."""
    go_family = copy.copy(family)
    go_family.samples = [
        sample._replace(labels={k: _go_bound(k, v) for k, v in sample.labels.items()})
        for sample in family.samples
        if sample.name != f"{family.name}_created"
    ]
    return go_family


def _go_bound(label: str, value: str) -> str:
    # prometheus_client already writes bounds as Go does (`1e+06`, `+Inf`) but for a whole
    # number's `.0`.
    return value.removesuffix(".0") if label in ("le", "quantile") else value


_PATH_PARAMETER = re.compile(r"\{(\w+)(?::\w+)?\}")


def route_template(scope: Scope) -> str:
    """The matched route's path in echo's form (`/action/endpoint/:code_id`, the original's label),
    or UNMATCHED (never the raw path)."""
    route = scope.get("route")
    path = getattr(route, "path", None) if isinstance(route, BaseRoute) else None
    return _PATH_PARAMETER.sub(r":\1", path) if isinstance(path, str) else UNMATCHED


class MetricsMiddleware:
    """Records the HTTP request metrics for every request, `/metrics` included (as the original)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        sizes = {"in": 0, "out": 0}
        status = 500

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                sizes["in"] += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                sizes["out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            self.metrics.observe_request(
                status=status,
                method=scope.get("method", ""),
                host=_header(scope, b"host"),
                url=route_template(scope),
                seconds=time.perf_counter() - started,
                request_bytes=sizes["in"],
                response_bytes=sizes["out"],
            )


def _header(scope: Scope, name: bytes) -> str:
    for key, value in _headers(scope):
        if key == name:
            return value.decode("latin-1")
    return ""


def _headers(scope: Scope) -> Iterator[tuple[bytes, bytes]]:
    headers: Any = scope.get("headers") or ()
    yield from headers


METRICS: Part[Metrics] = Part("metrics")
MetricsDep = Annotated[Metrics, Depends(part(METRICS))]
