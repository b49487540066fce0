"""The `Run(engine)` contract of spec §2.2.3, as user code sees it through the sandbox."""

from __future__ import annotations

import json

import pytest

from tests.runner.conftest import RunCode

pytestmark = pytest.mark.sandbox


async def test_params_body_headers_and_method_reach_the_code(run_code: RunCode) -> None:
    source = """
def Run(engine):
    engine.result.set({
        "x": engine.params.get("x"),
        "missing": engine.params.get("nope"),
        "items": sorted(engine.params.items()),
        "raw": engine.params._params,
        "body": engine.body,
        "key": engine.header.get("X-Api-Key"),
        "lower": engine.header.get("x-api-key"),
        "headers": sorted(engine.header.items()),
        "same": engine.request.params is engine.params and engine.request.body == engine.body,
        "method": engine.method,
    })
"""
    outcome = await run_code(
        source,
        params={"x": "1", "y": "two"},
        body="  hello \n",
        headers={"X-Api-Key": ["k1", "k2"], "Accept": ["*/*"]},
        method="GET",
    )
    assert outcome.ok, outcome.error
    assert json.loads(outcome.result) == {
        "x": "1",
        "missing": None,
        "items": [["x", "1"], ["y", "two"]],
        "raw": {"x": "1", "y": "two"},
        "body": "hello",
        "key": "k1",
        "lower": "",
        "headers": [["Accept", ["*/*"]], ["X-Api-Key", ["k1", "k2"]]],
        "same": True,
        "method": "GET",
    }


async def test_result_set_formats_like_json_dumps_with_ascii_escapes(run_code: RunCode) -> None:
    outcome = await run_code(
        'def Run(engine):\n    engine.result.set({"calculation": 50, "name": "café"})\n'
    )
    assert outcome.ok
    assert outcome.result == '{"calculation": 50, "name": "caf\\u00e9"}'
    assert (outcome.status_code, outcome.content_type) == (200, "text")


async def test_a_string_result_is_kept_as_is_and_the_last_set_wins(run_code: RunCode) -> None:
    source = """
def Run(engine):
    engine.result.set("first")
    engine.result.set("<b>é</b>", status_code=404, content_type="html")
"""
    outcome = await run_code(source)
    assert (outcome.result, outcome.status_code, outcome.content_type) == ("<b>é</b>", 404, "html")


async def test_status_code_as_string_and_unserializable_values(run_code: RunCode) -> None:
    source = """
class Thing:
    def __str__(self):
        return "a thing"

def Run(engine):
    engine.result.set(Thing(), status_code="201", content_type="json")
"""
    outcome = await run_code(source)
    assert (outcome.result, outcome.status_code, outcome.content_type) == ("a thing", "201", "json")


async def test_not_calling_set_gives_an_empty_text_200(run_code: RunCode) -> None:
    outcome = await run_code("def Run(engine):\n    pass\n")
    assert outcome.ok
    assert (outcome.result, outcome.status_code, outcome.content_type) == ("", 200, "text")


async def test_logs_print_and_stderr_come_back_in_order(run_code: RunCode) -> None:
    source = """
import sys
def Run(engine):
    first = engine.log.debug("one")
    print("two")
    engine.log.info(3)
    sys.stderr.write("four\\n")
    engine.request.log.error("five")
    engine.result.set(first)
"""
    outcome = await run_code(source)
    assert outcome.ok, outcome.error
    assert outcome.result == "queued_log_1"
    assert [(line.type, line.content) for line in outcome.logs] == [
        ("debug", "one"),
        ("info", "two"),
        ("info", "3"),
        ("error", "four"),
        ("error", "five"),
    ]


async def test_log_content_is_capped(run_code: RunCode) -> None:
    outcome = await run_code(
        'def Run(engine):\n    engine.log.info("x" * 9000)\n    print("y" * 9000)\n'
    )
    assert [len(line.content) for line in outcome.logs] == [8000, 8000]


async def test_a_warning_on_stderr_does_not_fail_the_run(run_code: RunCode) -> None:
    source = """
import warnings
def Run(engine):
    warnings.warn("careful")
    engine.result.set("fine")
"""
    outcome = await run_code(source)
    assert outcome.ok and outcome.result == "fine"
    assert any("careful" in line.content and line.type == "error" for line in outcome.logs)


async def test_an_exception_fails_with_a_traceback_of_the_user_code_only(run_code: RunCode) -> None:
    source = """
def helper():
    raise ValueError("bad input")

def Run(engine):
    engine.result.set("partial")
    engine.log.info("before")
    helper()
"""
    outcome = await run_code(source)
    assert not outcome.ok
    assert outcome.reason == "exception"
    assert 'File "action.py", line 3, in helper' in outcome.error
    assert outcome.error.endswith("ValueError: bad input")
    assert "/work" not in outcome.error and "python_engine" not in outcome.error
    assert [line.content for line in outcome.logs] == ["before"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def Run(engine)\n    pass\n", "SyntaxError"),
        ("import no_such_module\ndef Run(engine):\n    pass\n", "ModuleNotFoundError"),
        ("x = 1\n", "does not define a function Run(engine)"),
        ("import sys\ndef Run(engine):\n    sys.exit(3)\n", "SystemExit: 3"),
    ],
)
async def test_code_that_cannot_run_fails_as_an_exception(
    run_code: RunCode, source: str, expected: str
) -> None:
    outcome = await run_code(source)
    assert (outcome.ok, outcome.reason) == (False, "exception")
    assert expected in outcome.error


async def test_sys_exit_zero_is_a_normal_end(run_code: RunCode) -> None:
    outcome = await run_code(
        'import sys\ndef Run(engine):\n    engine.result.set("bye")\n    sys.exit(0)\n'
    )
    assert outcome.ok and outcome.result == "bye"


async def test_preinstalled_libraries_and_the_environment(run_code: RunCode) -> None:
    source = """
import os, requests, tempfile
def Run(engine):
    path = os.path.join(tempfile.gettempdir(), "f.txt")
    with open(path, "w") as handle:
        handle.write("ok")
    engine.result.set({"env": sorted(os.environ), "home": os.environ["HOME"] == os.getcwd(),
                       "uid": os.getuid(), "requests": bool(requests.__version__),
                       "read": open(path).read()})
"""
    outcome = await run_code(source)
    assert outcome.ok, outcome.error
    data = json.loads(outcome.result)
    # Nothing of the service's environment: the basics, plus where the CA bundle is when the
    # service has one (public certificates, for HTTPS behind a custom CA).
    ca = ["NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"]
    assert [name for name in data["env"] if name not in ca] == ["HOME", "LANG", "PATH", "TMPDIR"]
    assert data["home"] and data["requests"] and data["read"] == "ok"
    assert data["uid"] != 0


async def test_chained_library_errors_show_no_server_paths(run_code: RunCode) -> None:
    source = """
import json
def Run(engine):
    try:
        json.loads("{nope")
    except ValueError as exc:
        raise RuntimeError("could not parse") from exc
"""
    outcome = await run_code(source)
    assert outcome.reason == "exception"
    assert "json.decoder.JSONDecodeError" in outcome.error
    assert outcome.error.endswith("RuntimeError: could not parse")
    assert "/usr/lib" not in outcome.error and "/work" not in outcome.error


async def test_the_original_documentation_forms_of_set_work(run_code: RunCode) -> None:
    called = await run_code('def Run(engine):\n    engine.result({"a": 1}, content_type="json")\n')
    assert (called.ok, called.result, called.content_type) == (True, '{"a": 1}', "json")
    typo = await run_code('def Run(engine):\n    engine.result.set({"u": 1}, conten_type="json")\n')
    assert (typo.ok, typo.content_type) == (True, "json")
    wrong = await run_code('def Run(engine):\n    engine.result.set("x", colour="red")\n')
    assert (wrong.ok, wrong.reason) == (False, "exception")


async def test_ffmpeg_is_available_to_user_code_as_in_the_original_image(
    run_code: RunCode,
) -> None:
    source = (
        "import shutil, subprocess\n"
        "def Run(engine):\n"
        "    path = shutil.which('ffmpeg')\n"
        "    out = subprocess.run([path, '-version'], capture_output=True, text=True).stdout\n"
        "    engine.result.set(out.split()[0])\n"
    )
    outcome = await run_code(source)
    assert (outcome.ok, outcome.result) == (True, "ffmpeg"), outcome.error
