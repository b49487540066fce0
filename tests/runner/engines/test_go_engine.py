"""The Go engine: compiling actions with host/gocompile.py and running the binaries directly."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.runner.engines.child import GO, GOLANG_PY, ChildRun, make_request, run_child


def load_golang() -> ModuleType:
    # Loaded by file path, as the supervisor does under the runtime interpreter.
    spec = importlib.util.spec_from_file_location("codeactions_engine_golang", GOLANG_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


golang = load_golang()

pytestmark = pytest.mark.requires(golang.go_available(GO), f"{GO} is not installed")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    # One cache for the module: only the first build pays for compiling the standard library.
    return str(tmp_path_factory.mktemp("go-cache"))


def build(source: str, cache_dir: str) -> str:
    return str(golang.compile(source, go=GO, cache_dir=cache_dir))


def run_go(source: str, cache_dir: str, **request: Any) -> ChildRun:
    return run_child([build(source, cache_dir)], make_request(**request))


ECHO = """package main

import "fmt"

func Run(engine *Engine) {
	fmt.Println("stdout line")
	engine.Result.Set(map[string]any{
		"a":        engine.Params.Get("a"),
		"missing":  engine.Params.Get("missing"),
		"params":   engine.Params.Items(),
		"key":      engine.Header.Get("X-Api-Key"),
		"absent":   engine.Header.Get("X-Absent"),
		"values":   engine.Header.Values("X-Api-Key"),
		"body":     engine.Body,
		"method":   engine.Method,
		"same":     engine.Request.Params == engine.Params,
	}, 201, "json")
}
"""


def test_run_sees_params_headers_body_and_method(cache_dir: str) -> None:
    run = run_go(
        ECHO,
        cache_dir,
        params={"a": "1", "b": "two"},
        headers={"X-Api-Key": ["first", "second"]},
        body=' \n\x1c{"x": 1}\t ',
        method="PATCH",
    )
    assert run.returncode == 0, run
    assert run.stdout == "stdout line\n"
    assert run.result is not None
    assert run.result["status_code"] == 201
    assert run.result["content_type"] == "json"
    assert json.loads(run.result["value"]) == {
        "a": "1",
        "missing": "",
        "params": {"a": "1", "b": "two"},
        "key": "first",
        "absent": "",
        "values": ["first", "second"],
        "body": '{"x": 1}',
        "method": "PATCH",
        "same": True,
    }


def test_result_string_is_kept_as_is_and_the_last_set_wins(cache_dir: str) -> None:
    source = """package main

func Run(engine *Engine) {
	engine.Result.Set("first", 200, "text")
	engine.Result.Set("<p>gone</p>", 404, "html")
}
"""
    run = run_go(source, cache_dir)
    assert run.of("result") == [
        {"t": "result", "value": "first", "status_code": 200, "content_type": "text"},
        {"t": "result", "value": "<p>gone</p>", "status_code": 404, "content_type": "html"},
    ]


def test_non_string_results_are_json_marshalled(cache_dir: str) -> None:
    source = """package main

type reply struct {
	Name  string   `json:"name"`
	Count int      `json:"count"`
	Tags  []string `json:"tags"`
}

func Run(engine *Engine) {
	engine.Result.Set(reply{Name: "<José & co>", Count: 3, Tags: []string{}}, 200, "json")
	engine.Result.Set([]byte(`{"raw":true}`), 200, "json")
}
"""
    run = run_go(source, cache_dir)
    assert [result["value"] for result in run.of("result")] == [
        '{"name":"<José & co>","count":3,"tags":[]}',
        '{"raw":true}',  # bytes are sent as they are, not base64
    ]


def test_logs_are_emitted_in_order_and_truncated_to_max_log_chars(cache_dir: str) -> None:
    source = """package main

func Run(engine *Engine) {
	engine.Log.Info("first")
	engine.Log.Debug("0123456789abcdef")
	engine.Log.Error(42)
	engine.Log.Info("😀😀😀😀😀😀😀😀😀😀😀😀")
}
"""
    run = run_go(source, cache_dir, max_log_chars=10)
    assert run.returncode == 0
    assert run.of("log") == [
        {"t": "log", "level": "info", "msg": "first"},
        {"t": "log", "level": "debug", "msg": "0123456789"},
        {"t": "log", "level": "error", "msg": "42"},
        {"t": "log", "level": "info", "msg": "😀" * 10},
    ]


def test_panic_reports_the_value_and_the_users_stack_and_exits_1(cache_dir: str) -> None:
    source = """package main

func Run(engine *Engine) {
	engine.Log.Info("before")
	explode(nil)
}

func explode(m map[string]int) {
	m["a"] = 1
}
"""
    run = run_go(source, cache_dir)
    assert run.returncode == 1
    assert run.of("log") == [{"t": "log", "level": "info", "msg": "before"}]
    assert run.error.startswith("panic: assignment to entry in nil map\n")
    assert "action.go:9" in run.error
    assert "action.go:5" in run.error
    assert "ca_" not in run.error
    assert cache_dir not in run.error


def test_not_calling_set_gives_no_result(cache_dir: str) -> None:
    run = run_go("package main\n\nfunc Run(engine *Engine) {}\n", cache_dir)
    assert run.returncode == 0
    assert run.events == []


def test_compile_error_names_the_users_file_and_line(cache_dir: str) -> None:
    source = "package main\n\nfunc Run(engine *Engine) {\n\tx := 1\n}\n"
    with pytest.raises(golang.CompileFailed) as failure:
        build(source, cache_dir)
    assert failure.value.message.startswith("action.go:4:2: ")
    assert "declared but not used" in failure.value.message
    assert cache_dir not in failure.value.message


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "package main\n\nfunc main() {}\n\nfunc Run(engine *Engine) {}\n",
            "action.go:3:6: main redeclared: the engine provides func main",
        ),
        ("package main\n\nfunc Other() {}\n", "action.go must define func Run(engine *Engine)"),
        ("package main\n\nfunc Run() {}\n", "action.go must define func Run(engine *Engine)"),
        (
            "package tools\n\nfunc Run(engine *Engine) {}\n",
            "action.go must start with `package main`",
        ),
        (
            'package main\n\nimport "github.com/x/y"\n\nfunc Run(engine *Engine) { y.Z() }\n',
            "only the Go standard library can be imported",
        ),
    ],
    ids=["own main", "no Run", "wrong Run", "other package", "third-party import"],
)
def test_contract_mistakes_get_a_clear_compile_message(
    source: str, expected: str, cache_dir: str
) -> None:
    with pytest.raises(golang.CompileFailed) as failure:
        build(source, cache_dir)
    assert expected in failure.value.message


def test_second_compile_of_the_same_source_is_cached(cache_dir: str) -> None:
    first = build(ECHO, cache_dir)
    started = time.perf_counter()
    second = build(ECHO, cache_dir)
    assert time.perf_counter() - started < 0.1
    assert second == first


def test_concurrent_compiles_of_one_source_agree_on_a_working_binary(cache_dir: str) -> None:
    source = 'package main\n\nfunc Run(engine *Engine) { engine.Result.Set("concurrent", 200, "text") }\n'
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: build(source, cache_dir), range(4)))
    assert len(set(paths)) == 1
    run = run_child([paths[0]], make_request())
    assert run.result is not None and run.result["value"] == "concurrent"
    assert not os.listdir(Path(cache_dir) / "build")  # no temp dirs left behind
    assert not os.listdir(Path(cache_dir) / "locks")


def test_binaries_are_executable_by_others_but_not_writable_or_listable(cache_dir: str) -> None:
    path = Path(build(ECHO, cache_dir))
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o711
    assert stat.S_IMODE((Path(cache_dir) / "gocache").stat().st_mode) == 0o700


def test_a_compile_over_its_timeout_fails_with_a_clear_message(cache_dir: str) -> None:
    source = f"package main\n\n// {time.time_ns()}\nfunc Run(engine *Engine) {{}}\n"
    with pytest.raises(golang.CompileFailed, match=r"^compile timed out$"):
        golang.compile(source, go=GO, cache_dir=cache_dir, timeout=0.001)


def test_go_available_tells_a_working_toolchain_from_a_missing_one() -> None:
    assert golang.go_available(GO)
    assert not golang.go_available("/nonexistent/go")


SECRETS = """package main

func Run(engine *Engine) {
	engine.Result.Set(map[string]any{
		"get":     engine.Secrets.Get("API_KEY"),
		"missing": engine.Secrets.Get("NOPE"),
		"has":     []bool{engine.Secrets.Has("API_KEY"), engine.Secrets.Has("EMPTY"), engine.Secrets.Has("NOPE")},
		"keys":    engine.Secrets.Keys(),
	}, 200, "json")
}
"""


def test_secrets_get_has_and_keys(cache_dir: str) -> None:
    run = run_go(SECRETS, cache_dir, secrets={"API_KEY": "s3cr3t", "EMPTY": "", "B": "2"})
    assert run.returncode == 0, run
    assert run.result is not None
    assert json.loads(run.result["value"]) == {
        "get": "s3cr3t",
        "missing": "",
        "has": [True, True, False],
        "keys": ["API_KEY", "B", "EMPTY"],
    }


def test_no_secrets_is_an_empty_set(cache_dir: str) -> None:
    run = run_go(SECRETS, cache_dir)
    assert run.result is not None
    assert json.loads(run.result["value"])["keys"] == []


@pytest.mark.parametrize(
    ("source", "program"),
    [
        ('package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("hi")\n}\n', True),
        ("package main\n\nfunc main () { f := func() {}; f() }\n", True),
        ("package main\n\nfunc main() { _ = '}' }\n\n/* func Run(engine *Engine) {} */\n", True),
        ("package main\n\nfunc Run(engine *Engine) {}\n", False),
        ("package main\n\nfunc main() {}\n\nfunc Run(engine *Engine) {}\n", False),
        ("package main\n\n// func main() {}\nfunc Run(engine *Engine) {}\n", False),
        (
            'package main\n\nvar s = "func main() {"\n\nfunc Run(engine *Engine) {\n'
            "\tx := `}\nfunc main() {`\n\t_ = x\n}\n",
            False,
        ),
        ("package main\n\ntype T struct{}\n\nfunc (T) main() {}\n", False),
        ("package main\n\nfunc Other() {}\n", False),
    ],
    ids=[
        "main",
        "main with a literal",
        "brace rune, Run in a comment",
        "Run",
        "main and Run",
        "main in a comment",
        "main in strings",
        "method main",
        "neither",
    ],
)
def test_a_top_level_main_without_run_is_a_program(source: str, program: bool) -> None:
    assert golang.is_program(source) is program


PROGRAM = """package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	in, _ := io.ReadAll(os.Stdin)
	fmt.Printf("stdin had %d bytes\\n", len(in))
	fmt.Fprintln(os.Stderr, "a warning")
	if len(in) > 0 && in[0] == 'x' {
		os.Exit(3)
	}
}
"""


def test_a_program_is_built_without_the_engine_and_runs_alone(cache_dir: str) -> None:
    path = build(PROGRAM, cache_dir)
    # With the engine, an empty stdin would be a bad request (exit 1).
    done = subprocess.run([path], input=b"", capture_output=True, timeout=20, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        b"stdin had 0 bytes\n",
        b"a warning\n",
    )
    failed = subprocess.run([path], input=b"x", capture_output=True, timeout=20, check=False)
    assert failed.returncode == 3


def test_a_program_compile_error_names_the_users_file_and_line(cache_dir: str) -> None:
    source = "package main\n\nfunc main() {\n\tundefinedThing()\n}\n"
    with pytest.raises(golang.CompileFailed) as failure:
        build(source, cache_dir)
    assert failure.value.message.startswith("action.go:4:2: undefined: undefinedThing")
    assert "engine" not in failure.value.message


def test_large_request_is_read_whole(cache_dir: str) -> None:
    body = "x" * 300_000 + "é"
    run = run_go(ECHO, cache_dir, body=body)
    assert run.result is not None
    assert json.loads(run.result["value"])["body"] == body
