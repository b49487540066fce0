"""Codes without Run run as the original ran them: a Go `main` and a JavaScript script, whose
standard output is the result."""

from __future__ import annotations

import pytest

from codeactions.runner.base import CompileError
from codeactions.runner.sandbox import SandboxRunner
from tests.conftest import needs_go, needs_node
from tests.runner.conftest import RunCode

pytestmark = pytest.mark.sandbox

GO_PROGRAM = """package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	in, _ := io.ReadAll(os.Stdin)
	fmt.Println("hello from main")
	fmt.Printf("stdin: %d bytes\\n", len(in))
	fmt.Fprintln(os.Stderr, "a warning")
}
"""


@needs_go
async def test_a_go_main_program_compiles_on_check_and_its_stdout_is_the_result(
    runner: SandboxRunner, run_code: RunCode
) -> None:
    await runner.check("go", GO_PROGRAM)
    outcome = await run_code(GO_PROGRAM, language="go", secrets={"API_KEY": "s3cr3t"})
    assert outcome.ok, outcome.error
    # No request on its stdin (nor the secrets in it): a program reads nothing there.
    assert outcome.result == "hello from main\nstdin: 0 bytes\n"
    assert (outcome.status_code, outcome.content_type) == (200, "text")
    assert [(line.type, line.content) for line in outcome.logs] == [("error", "a warning")]


@needs_go
async def test_a_go_main_program_exiting_non_zero_fails_with_its_stderr(run_code: RunCode) -> None:
    source = """package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Println("partial")
	fmt.Fprintln(os.Stderr, "cannot go on")
	os.Exit(3)
}
"""
    outcome = await run_code(source, language="go")
    assert (outcome.ok, outcome.reason) == (False, "exception")
    assert outcome.error == "exited with status 3: cannot go on"
    assert [(line.type, line.content) for line in outcome.logs] == [("error", "cannot go on")]


@needs_go
async def test_a_go_main_program_that_panics_fails(run_code: RunCode) -> None:
    source = 'package main\n\nfunc main() {\n\tpanic("boom")\n}\n'
    outcome = await run_code(source, language="go")
    assert (outcome.ok, outcome.reason) == (False, "exception")
    assert "panic: boom" in outcome.error


@needs_go
async def test_a_go_main_program_over_the_output_limit_ends_with_reason_output(
    run_code: RunCode,
) -> None:
    source = """package main

import (
	"os"
	"strings"
)

func main() {
	line := strings.Repeat("x", 1023) + "\\n"
	for i := 0; i < 4096; i++ {
		os.Stdout.WriteString(line)
	}
}
"""
    outcome = await run_code(source, language="go")  # 4 MB against the suite's 1 MB
    assert (outcome.ok, outcome.reason) == (False, "output")


@needs_go
async def test_a_go_main_program_compile_error_comes_back_from_check(
    runner: SandboxRunner,
) -> None:
    with pytest.raises(CompileError) as error:
        await runner.check("go", "package main\n\nfunc main() {\n\tundefinedThing()\n}\n")
    assert str(error.value).startswith("action.go:4:2: undefined: undefinedThing")


@needs_node
async def test_javascript_without_run_is_a_script_whose_stdout_is_the_result(
    run_code: RunCode,
) -> None:
    source = """
console.log("start");
console.error("to stderr");
setTimeout(() => console.log("after a timer"), 50);
Promise.resolve().then(() => process.stdout.write("from a promise\\n"));
"""
    for _ in range(2):  # the second run goes to the warm worker the first one left
        outcome = await run_code(source, language="javascript")
        assert outcome.ok, outcome.error
        assert outcome.result == "start\nfrom a promise\nafter a timer\n"
        assert (outcome.status_code, outcome.content_type) == (200, "text")
        assert [(line.type, line.content) for line in outcome.logs] == [("error", "to stderr")]


@needs_node
async def test_a_javascript_script_exiting_non_zero_fails_with_its_stderr(
    run_code: RunCode,
) -> None:
    source = 'console.log("partial");\nconsole.error("cannot go on");\nprocess.exit(2);\n'
    outcome = await run_code(source, language="javascript")
    assert (outcome.ok, outcome.reason) == (False, "exception")
    assert outcome.error == "exited with status 2: cannot go on"


@needs_node
async def test_an_uncaught_exception_in_a_javascript_script_fails_it(run_code: RunCode) -> None:
    source = 'setTimeout(() => { throw new Error("late boom"); }, 10);\n'
    outcome = await run_code(source, language="javascript")
    assert (outcome.ok, outcome.reason) == (False, "exception")
    assert outcome.error.startswith("Error: late boom")


@needs_node
async def test_javascript_with_run_keeps_its_console_output_as_logs(run_code: RunCode) -> None:
    source = 'console.log("module level");\nfunction Run(engine) { engine.result.set("ok"); }\n'
    outcome = await run_code(source, language="javascript")
    assert (outcome.ok, outcome.result) == (True, "ok")
    assert [(line.type, line.content) for line in outcome.logs] == [("info", "module level")]


async def test_python_without_run_is_still_an_error(run_code: RunCode) -> None:
    # The original imported the code and called action.Run: without it, nothing was a result.
    outcome = await run_code('print("hello")\n')
    assert (outcome.ok, outcome.reason) == (False, "exception")
    assert "does not define a function Run(engine)" in outcome.error
