"""Runs handed to real worker processes over RabbitMQ: every language, load shared, a worker
killed or stopped mid-run, the per-project cap and the bounded queue across workers."""

from __future__ import annotations

import http.server
import json
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.conftest import ADMIN, need_service
from tests.dispatch.conftest import REDIS_URL, StartStack

SLOW = """
import time
def Run(engine):
    engine.log.info("started")
    time.sleep(float(engine.params.get("s") or 1))
    engine.result.set("slept")
"""

JAVASCRIPT = """
function Run(engine) {
  engine.log.info("from node");
  engine.result.set({ language: "javascript", name: engine.params.get("name") }, {
    status_code: 200,
    content_type: "json",
  });
}
"""

GO = """package main

func Run(engine *Engine) {
	engine.Log.Info("from go")
	engine.Result.Set("go:"+engine.Params.Get("name"), 201, "text")
}
"""


def test_all_three_languages_run_on_a_worker_and_go_compiles_there(
    start_stack: StartStack,
) -> None:
    stack = start_stack()
    worker = stack.worker()
    stack.wait_for_workers(1)
    assert httpx.get(f"{worker.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{worker.url}/elsewhere").status_code == 404
    assert httpx.post(f"{worker.url}/health").status_code == 405

    python = stack.create_code(
        "def Run(engine):\n    engine.result.set({'hi': engine.params.get('name')},"
        " content_type='json')\n"
    )
    javascript = stack.create_code(JAVASCRIPT, language="javascript")
    go = stack.create_code(GO, language="go")

    assert stack.call(python, name="Ana").json() == {"hi": "Ana"}
    assert stack.call(javascript, name="Bo").json() == {"language": "javascript", "name": "Bo"}
    answer = stack.call(go, name="Cy")
    assert (answer.status_code, answer.text) == (201, "go:Cy")

    # A Go source that does not compile is refused at save, with the worker compiler's words.
    refused = httpx.post(
        f"{stack.api.url}/code",
        params={"project_uuid": "p1", "name": "bad", "language": "go", "type": "endpoint"},
        content="package main\nfunc Run(engine *Engine) {\n\tx := 1\n}\n",
        headers=ADMIN,
        timeout=120,
    )
    assert refused.status_code == 400
    assert "declared and not used" in refused.text or "declared but not used" in refused.text

    # The run's log lines come from the worker and are kept as usual.
    run_id = answer.headers["X-Run-Id"]
    logs = stack.api.get("/codelog", run_id=run_id, code_id=go).json()
    assert [line["content"] for line in logs["data"]] == ["from go"]
    health = stack.api.get("/health").json()["services"]["runner"]
    assert health["status"] == "healthy"
    assert "dispatched to 1 workers" in health["message"]


def test_two_workers_share_the_load(start_stack: StartStack) -> None:
    stack = start_stack()
    first, second = stack.worker(), stack.worker()
    stack.wait_for_workers(2)
    code = stack.create_code(SLOW)

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: stack.call(code, s="1"), range(8)))
    elapsed = time.monotonic() - started

    assert [a.text for a in answers] == ["slept"] * 8
    done = [w.metric("codeactions_worker_runs_total", outcome="completed") for w in (first, second)]
    assert sum(done) == 8
    assert min(done) >= 2, done  # both took a share
    # Four slots between them: two rounds of one second, not eight.
    assert elapsed < 6, elapsed


def test_a_killed_worker_fails_its_run_as_worker_lost_and_it_is_never_run_again(
    start_stack: StartStack,
) -> None:
    stack = start_stack()
    first, second = stack.worker(), stack.worker()
    stack.wait_for_workers(2)
    code = stack.create_code(SLOW)

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(stack.call, code, s="5")
        deadline = time.monotonic() + 20
        while not any(w.metric("codeactions_worker_busy") for w in (first, second)):
            assert time.monotonic() < deadline, "no worker took the run"
            time.sleep(0.05)
        running, other = (
            (first, second)
            if first.metric("codeactions_worker_busy")
            else (
                second,
                first,
            )
        )
        killed_at = time.monotonic()
        running.kill()
        answer = pending.result(timeout=30)
    answered_after = time.monotonic() - killed_at

    assert answer.status_code == 503
    assert "worker running the code was lost" in answer.json()["message"]
    assert answered_after < 10, answered_after  # lost after 2.5 s of silence, not the 5 s run
    run = stack.api.get(f"/coderun/{answer.headers['X-Run-Id']}").json()
    assert run["status"] == "failed"
    assert run["extra"]["reason"] == "worker lost"

    # The other worker never ran it, not even once the run's time had passed.
    time.sleep(6 - answered_after if answered_after < 6 else 0)
    assert other.metric("codeactions_worker_runs_total", outcome="completed") == 0
    assert other.metric("codeactions_worker_busy") == 0
    # And the service goes on with the worker left.
    stack.wait_for_workers(1)
    assert stack.call(code, s="0").text == "slept"


def test_a_stopped_worker_finishes_its_runs_and_queued_runs_wait_for_the_next(
    start_stack: StartStack,
) -> None:
    stack = start_stack()
    worker = stack.worker()
    stack.wait_for_workers(1)
    code = stack.create_code(SLOW)

    with ThreadPoolExecutor(2) as pool:
        under_way = pool.submit(stack.call, code, s="2")
        deadline = time.monotonic() + 20
        while not worker.metric("codeactions_worker_busy"):
            assert time.monotonic() < deadline, "the worker did not take the run"
            time.sleep(0.05)
        worker.terminate()
        answer = under_way.result(timeout=30)
        assert (answer.status_code, answer.text) == (200, "slept")
        assert worker.wait() == 0
        stack.wait_for_workers(0)

        # No worker: the run waits (within its timeout) and runs once one is back.
        waiting = pool.submit(stack.call, code, s="0")
        time.sleep(1)
        assert not waiting.done()
        stack.worker()
        answer = waiting.result(timeout=60)
    assert (answer.status_code, answer.text) == (200, "slept")


def test_one_project_holds_no_more_slots_than_its_cap_across_workers(
    start_stack: StartStack,
) -> None:
    stack = start_stack(CODEACTIONS_PROJECT_MAX_CONCURRENCY="1")
    stack.worker(), stack.worker()
    stack.wait_for_workers(2)
    busy = stack.create_code(SLOW, project="busy")
    other = stack.create_code(SLOW, project="other")

    finished: dict[str, float] = {}
    started = time.monotonic()

    def call(code: str, name: str) -> None:
        assert stack.call(code, s="1.5").text == "slept"
        finished[name] = time.monotonic() - started

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda args: call(*args), [(busy, "a1"), (busy, "a2"), (other, "b")]))

    # Four slots free, but the busy project's second run waited for its first.
    assert max(finished["a1"], finished["a2"]) >= 3.0, finished
    assert finished["b"] < max(finished["a1"], finished["a2"]), finished


def test_over_the_queue_runs_are_refused_at_once(start_stack: StartStack) -> None:
    stack = start_stack(
        CODEACTIONS_RUNNER_QUEUE_SIZE="1",
        CODEACTIONS_PROJECT_MAX_CONCURRENCY="1",
        CODEACTIONS_PROJECT_MAX_QUEUED="5",
    )
    stack.worker(CODEACTIONS_RUNNER_SLOTS="1")
    stack.wait_for_workers(1)
    code = stack.create_code(SLOW)

    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(stack.call, code, s="2")
        time.sleep(0.5)
        waiting = pool.submit(stack.call, code, s="0")
        time.sleep(0.5)
        refused = stack.call(code, s="0")
        assert refused.status_code == 503
        assert running.result(timeout=30).text == "slept"
        assert waiting.result(timeout=30).text == "slept"


LINES_APART = """
import time
def Run(engine):
    engine.log.info("one")
    time.sleep(2)
    engine.log.info("two")
    engine.result.set("done")
"""


def test_a_runs_lines_reach_followers_on_another_replica_while_it_runs(
    start_stack: StartStack,
) -> None:
    need_service("Redis", "127.0.0.1", 6379)
    stack = start_stack(CODEACTIONS_REDIS_URL=REDIS_URL)
    other = stack.replica()
    other.start()
    stack.worker()
    stack.wait_for_workers(1)
    code = stack.create_code(LINES_APART)

    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(stack.call, code)
        deadline = time.monotonic() + 20
        while not (runs := other.get("/coderun", code_id=code, status="started").json()):
            assert time.monotonic() < deadline, "the run was never recorded started"
            time.sleep(0.05)
        received: list[tuple[float, dict[str, object]]] = []
        with httpx.stream(
            "GET", f"{other.url}/coderun/{runs[0]['id']}/events", headers=ADMIN, timeout=30
        ) as events:
            for line in events.iter_lines():
                if line.startswith("data:"):
                    received.append((time.monotonic(), json.loads(line[5:])))
        assert answer.result(timeout=30).text == "done"

    kinds = [(event["event"], event.get("content")) for _, event in received]
    assert kinds == [("log", "one"), ("log", "two"), ("run", None)], kinds
    first_line_at, end_at = received[0][0], received[-1][0]
    assert end_at - first_line_at > 1.0  # "one" came while the code still slept


class Receiver:
    """A local HTTP server keeping the bodies POSTed to it."""

    def __init__(self) -> None:
        received: queue.Queue[bytes] = queue.Queue()
        self.received = received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.put(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/done"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_an_async_run_executes_on_a_worker_and_its_end_is_posted_to_the_callback(
    start_stack: StartStack,
) -> None:
    stack = start_stack(CODEACTIONS_CALLBACK_ALLOWED_NETWORKS="127.0.0.0/8")
    stack.worker()
    stack.wait_for_workers(1)
    code = stack.create_code(SLOW)
    receiver = Receiver()
    try:
        accepted = httpx.post(
            f"{stack.api.url}/run/{code}",
            params={"async": "true", "callback_url": receiver.url},
            json={"params": {"s": "1"}},
            headers=ADMIN,
            timeout=10,
        )
        assert accepted.status_code == 202, accepted.text
        run_id = accepted.json()["run_id"]
        assert stack.api.get(f"/coderun/{run_id}").json()["status"] == "started"
        posted = json.loads(receiver.received.get(timeout=30))
    finally:
        receiver.close()
    assert (posted["id"], posted["status"], posted["result"]) == (run_id, "completed", "slept")
    assert stack.api.get(f"/coderun/{run_id}").json() == posted
