"""The JavaScript engine, run directly as `node engine.js` (no sandbox)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import time
from collections.abc import Sequence
from typing import Any

import pytest

from tests.runner.engines.child import (
    ENGINE_JS,
    NODE,
    Child,
    ChildRun,
    encode_request,
    make_request,
    run_child,
    run_events,
)


def run_js(source: str, **request: Any) -> ChildRun:
    return run_child([NODE, str(ENGINE_JS)], make_request(source=source, **request))


def test_run_sees_params_headers_body_and_method() -> None:
    source = """
function Run(engine) {
  engine.result.set({
    a: engine.params.get("a"),
    missing: engine.params.get("missing"),
    params: engine.params.items(),
    key: engine.header.get("X-Api-Key"),
    absent: engine.header.get("X-Absent"),
    lower: engine.header.get("x-api-key"),
    headers: engine.header.items(),
    body: engine.body,
    method: engine.method,
    same: engine.request.params === engine.params && engine.request.body === engine.body,
  });
}
"""
    run = run_js(
        source,
        params={"a": "1", "b": "two"},
        headers={"X-Api-Key": ["first", "second"]},
        body='  \n\x1c{"x": 1}\t\n',
        method="PUT",
    )
    assert run.returncode == 0, run
    assert run.result is not None
    assert json.loads(run.result["value"]) == {
        "a": "1",
        "missing": None,
        "params": [["a", "1"], ["b", "two"]],
        "key": "first",
        "absent": "",
        "lower": "",
        "headers": [["X-Api-Key", ["first", "second"]]],
        "body": '{"x": 1}',
        "method": "PUT",
        "same": True,
    }


def test_result_string_is_kept_as_is_with_status_code_and_content_type() -> None:
    source = """
function Run(engine) {
  engine.result.set("<b>not found</b>", { status_code: 404, content_type: "html" });
}
"""
    run = run_js(source)
    assert run.of("result") == [
        {"t": "result", "value": "<b>not found</b>", "status_code": 404, "content_type": "html"}
    ]


def test_result_defaults_to_200_text_and_accepts_python_style_positional_arguments() -> None:
    run = run_js(
        'function Run(engine) { engine.result.set("a"); engine.result.set("b", 201, "json"); }'
    )
    assert run.of("result") == [
        {"t": "result", "value": "a", "status_code": 200, "content_type": "text"},
        {"t": "result", "value": "b", "status_code": 201, "content_type": "json"},
    ]
    assert run.result is not None and run.result["value"] == "b"  # the last set wins


def test_result_object_is_json_formatted_like_python_json_dumps() -> None:
    source = """
function Run(engine) {
  engine.result.set({ name: "José", tags: ["a", "b"], n: 2.5, ok: true, none: null, text: "a, b: c" });
}
"""
    run = run_js(source)
    assert run.result is not None
    expected = {
        "name": "José",
        "tags": ["a", "b"],
        "n": 2.5,
        "ok": True,
        "none": None,
        "text": "a, b: c",
    }
    assert run.result["value"] == json.dumps(expected)


def test_result_value_that_is_not_json_falls_back_to_string() -> None:
    run = run_js("function Run(engine) { const a = {}; a.self = a; engine.result.set(a); }")
    assert run.result is not None and run.result["value"] == "[object Object]"


def test_logs_are_emitted_in_order_and_truncated_to_max_log_chars() -> None:
    source = """
function Run(engine) {
  engine.log.info("first");
  engine.log.debug("0123456789abcdef");
  engine.log.error(42);
  engine.log.info({ a: 1 });
  engine.log.info("😀😀😀😀😀😀😀😀😀😀😀😀");
}
"""
    run = run_js(source, max_log_chars=10)
    assert run.of("log") == [
        {"t": "log", "level": "info", "msg": "first"},
        {"t": "log", "level": "debug", "msg": "0123456789"},
        {"t": "log", "level": "error", "msg": "42"},
        {"t": "log", "level": "info", "msg": "{ a: 1 }"},
        {"t": "log", "level": "info", "msg": "😀" * 10},
    ]


def test_console_output_goes_to_stdout_and_stderr() -> None:
    run = run_js('function Run(engine) { console.log("hello", 1); console.error("oops"); }')
    assert run.returncode == 0
    assert run.stdout == "hello 1\n"
    assert run.stderr == "oops\n"


def test_exception_reports_the_error_with_the_users_stack_and_exits_1() -> None:
    source = """function Run(engine) {
  engine.result.set("partial");
  helper();
}
function helper() { throw new TypeError("boom"); }
"""
    run = run_js(source)
    assert run.returncode == 1
    assert run.error.startswith("TypeError: boom\n")
    assert "at helper (action.js:5:" in run.error
    assert "at Run (action.js:3:" in run.error
    assert str(ENGINE_JS) not in run.error
    assert "node:internal" not in run.error


def test_thrown_non_error_value_is_reported() -> None:
    run = run_js('function Run(engine) { throw "plain"; }')
    assert run.returncode == 1
    assert run.error == "Uncaught 'plain'"


def test_syntax_error_is_reported_with_the_line() -> None:
    run = run_js("function Run(engine) {\n  engine.result.set(;\n}\n")
    assert run.returncode == 1
    assert run.error.startswith("action.js:2\n")
    assert "SyntaxError: Unexpected token ';'" in run.error


def test_a_source_without_run_is_a_script_whose_async_work_completes() -> None:
    source = """
console.log("first");
setTimeout(() => console.log("after a timer"), 30);
Promise.resolve().then(() => process.stdout.write("from a promise\\n"));
(async () => { await fetch("data:text/plain,fetched").then((r) => r.text()).then(console.log); })();
"""
    run = run_js(source)
    assert run.returncode == 0, run
    assert run.events == [{"t": "script"}]  # the supervisor takes stdout as the result
    assert run.stdout == "first\nfrom a promise\nfetched\nafter a timer\n"


@pytest.mark.parametrize(
    ("source", "returncode"),
    [
        ('console.log("x"); process.exit(3);', 3),
        ("setTimeout(() => process.exit(4), 10);", 4),
        ('console.log("x"); process.exitCode = 5;', 5),
    ],
    ids=["exit while evaluated", "exit later", "exitCode"],
)
def test_a_script_exiting_non_zero_keeps_its_status(source: str, returncode: int) -> None:
    run = run_js(source)
    assert run.returncode == returncode
    assert run.events == [{"t": "script"}]


def test_an_uncaught_exception_in_a_script_fails_it_with_the_error() -> None:
    run = run_js('console.log("before");\nsetTimeout(() => { throw new Error("late boom"); }, 10);')
    assert run.returncode == 1
    assert run.of("script") == [{"t": "script"}]
    assert run.error.startswith("Error: late boom\n    at ")
    assert run.stdout == "before\n"


def test_a_reused_engine_ends_a_script_when_its_loop_empties_and_serves_the_next() -> None:
    script = "setTimeout(() => console.log('done'), 20);"
    events, code = run_reused(script, "function Run(engine) { engine.result.set('next'); }")
    assert code == 0
    assert [event["t"] for event in events] == ["script", "done", "action", "result", "done"]
    assert events[3]["value"] == "next"


SECRETS_SOURCE = """
function Run(engine) {
  const s = engine.secrets;
  engine.result.set({
    get: s.get("API_KEY"),
    missing: s.get("NOPE"),
    fallback: s.get("NOPE", "dflt"),
    has: [s.has("API_KEY"), s.has("NOPE")],
    keys: s.keys(),
    isArray: Array.isArray(s.keys()),
    env: Object.values(process.env).some((v) => String(v).includes("s3cr3t")),
  });
}
"""


def test_secrets_get_has_and_keys() -> None:
    run = run_js(SECRETS_SOURCE, secrets={"API_KEY": "s3cr3t", "OTHER": ""})
    assert run.result is not None
    assert json.loads(run.result["value"]) == {
        "get": "s3cr3t",
        "missing": None,
        "fallback": "dflt",
        "has": [True, False],
        "keys": ["API_KEY", "OTHER"],
        "isArray": True,
        "env": False,
    }


def test_a_reused_engine_gives_each_run_its_own_secrets() -> None:
    source = """
function Run(engine) {
  process.kept = process.kept || engine.secrets;  // what a run could keep in its process
  engine.result.set([engine.secrets.keys(), engine.secrets.get("API_KEY"), process.pid]);
}
"""
    events, code = run_reused(
        source, source, secrets=[{"API_KEY": "first", "OLD": "x"}, {"API_KEY": "second"}]
    )
    assert code == 0
    results = [json.loads(event["value"]) for event in events if event["t"] == "result"]
    assert results[0][:2] == [["API_KEY", "OLD"], "first"]
    assert results[1][:2] == [["API_KEY"], "second"]
    assert results[0][2] == results[1][2]  # one process served both


def test_async_run_is_awaited() -> None:
    source = """
async function Run(engine) {
  await new Promise((resolve) => setTimeout(resolve, 20));
  engine.log.info("after wait");
  engine.result.set("done");
}
"""
    run = run_js(source)
    assert run.returncode == 0
    assert run.of("log") == [{"t": "log", "level": "info", "msg": "after wait"}]
    assert run.result is not None and run.result["value"] == "done"


def test_async_rejection_fails_the_run() -> None:
    source = "async function Run(engine) { await null; throw new Error('late'); }"
    run = run_js(source)
    assert run.returncode == 1
    assert run.error.startswith("Error: late")


def test_unhandled_rejection_outside_run_fails_the_run() -> None:
    source = """
function Run(engine) {
  Promise.reject(new Error("forgotten"));
  return new Promise((resolve) => setTimeout(resolve, 50));
}
"""
    run = run_js(source)
    assert run.returncode == 1
    assert run.error.startswith("Error: forgotten")


def test_promise_that_never_settles_fails_instead_of_succeeding_empty() -> None:
    run = run_js("async function Run(engine) { await new Promise(() => {}); }")
    assert run.returncode == 1
    assert "never settled" in run.error


@pytest.mark.parametrize(
    "source",
    [
        'module.exports = { Run(engine) { engine.result.set("m"); } };',
        'exports.Run = async (engine) => { engine.result.set("m"); };',
        'const Run = (engine) => engine.result.set("m");',
    ],
    ids=["module.exports", "exports.Run", "const arrow"],
)
def test_run_can_be_exported_or_declared_as_a_constant(source: str) -> None:
    run = run_js(source)
    assert run.returncode == 0, run
    assert run.result is not None and run.result["value"] == "m"


def test_not_calling_set_gives_no_result() -> None:
    run = run_js('function Run(engine) { engine.log.info("nothing"); }')
    assert run.returncode == 0
    assert run.result is None


def test_node_builtins_and_fetch_are_available() -> None:
    source = """
const crypto = require("crypto");
async function Run(engine) {
  const response = await fetch("data:text/plain,fetched");
  engine.result.set(crypto.createHash("sha256").update(await response.text()).digest("hex"));
}
"""
    run = run_js(source)
    assert run.returncode == 0, run
    assert run.result is not None
    assert run.result["value"] == hashlib.sha256(b"fetched").hexdigest()


def test_engine_boots_before_the_request_and_answers_quickly_once_it_arrives() -> None:
    child = Child.start([NODE, str(ENGINE_JS)])
    time.sleep(0.5)  # boot happens here, before the request exists
    assert child.process.poll() is None  # waiting for its request
    started = time.perf_counter()
    run = child.send(make_request(source='function Run(engine) { engine.result.set("fast"); }'))
    elapsed = time.perf_counter() - started
    assert run.result is not None and run.result["value"] == "fast"
    assert elapsed < 0.5


def test_stdin_closed_without_a_request_exits_quietly() -> None:
    child = Child.start([NODE, str(ENGINE_JS)])
    assert child.process.stdin is not None
    child.process.stdin.close()
    assert child.process.wait(10) == 0


def test_user_code_replacing_globals_does_not_break_the_engine() -> None:
    source = """
function Run(engine) {
  JSON.stringify = () => "hijacked";
  process.exit = () => {};
  engine.result.set("still fine");
}
"""
    run = run_js(source)
    assert run.returncode == 0
    assert run.of("result") == [
        {"t": "result", "value": "still fine", "status_code": 200, "content_type": "text"}
    ]


def test_large_request_arriving_in_many_chunks_is_read_whole() -> None:
    body = "x" * 300_000 + "é"
    run = run_js(
        "function Run(engine) { engine.result.set(String(engine.body.length)); }", body=body
    )
    assert run.result is not None and run.result["value"] == str(len(body))


def run_reused(
    *sources: str, secrets: Sequence[dict[str, str]] = ()
) -> tuple[list[dict[str, Any]], int]:
    """Several requests to one engine process, as a warm worker gets them (the i-th with
    `secrets[i]`)."""
    read_fd, write_fd = os.pipe()
    requests = b"".join(
        encode_request(make_request(source=src, reuse=True, secrets=dict(mine)))
        for src, mine in itertools.zip_longest(sources, secrets, fillvalue={})
    )
    try:
        done = subprocess.run(
            [NODE, str(ENGINE_JS)],
            input=requests,
            capture_output=True,
            pass_fds=(3,),
            preexec_fn=lambda: os.dup2(write_fd, 3),
            timeout=20,
            env={"PATH": "/usr/bin:/bin"},
        )
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd, "rb") as events:
        return run_events(events.read()), done.returncode


def test_a_reused_engine_runs_each_request_in_a_fresh_context_and_reports_done() -> None:
    source = """
let counter = 0;
function Run(engine) {
  counter += 1;
  globalThis.total = (globalThis.total || 0) + 1;
  setInterval(() => engine.log.info('tick'), 1);
  engine.result.set([counter, globalThis.total, process.pid]);
}
"""
    events, code = run_reused(source, "function Run() { throw new Error('boom'); }", source)
    assert code == 0
    kinds = [event["t"] for event in events]
    assert kinds == [
        "action",
        "result",
        "done",
        "action",
        "error",
        "done",
        "action",
        "result",
        "done",
    ]
    first, second = json.loads(events[1]["value"]), json.loads(events[7]["value"])
    assert first[:2] == second[:2] == [1, 1]
    assert first[2] == second[2]
    assert [events[2]["code"], events[5]["code"], events[8]["code"]] == [0, 1, 0]


def test_a_reused_engine_exits_when_a_run_leaves_work_behind() -> None:
    source = "function Run(engine) { require('fs').readFile('/etc/hostname', () => {}); }"
    events, code = run_reused(source, "function Run(engine) { engine.result.set('never'); }")
    assert code == 0
    assert [event["t"] for event in events] == ["action"]  # ended by its exit, not by a "done"
