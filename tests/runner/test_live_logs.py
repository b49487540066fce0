"""A run's log lines reach RunRequest.on_logs while it runs, as a prefix of its outcome's logs."""

from __future__ import annotations

import time

import pytest

from codeactions.runner.base import Language, RunLogLine, RunOutcome
from codeactions.runner.sandbox import SandboxRunner
from tests.conftest import needs_go, needs_node
from tests.runner.conftest import request

pytestmark = pytest.mark.sandbox


class LiveLogs:
    """What on_logs received: each call's lines, and when (monotonic) it came."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, list[RunLogLine]]] = []

    def __call__(self, lines: list[RunLogLine]) -> None:
        self.calls.append((time.monotonic(), lines))

    @property
    def lines(self) -> list[RunLogLine]:
        return [line for _, batch in self.calls for line in batch]

    def came_at(self, content: str) -> float:
        """When the line with this content came to on_logs."""
        return next(at for at, batch in self.calls for line in batch if line.content == content)


async def run_live(
    runner: SandboxRunner, source: str, language: Language = "python"
) -> tuple[RunOutcome, LiveLogs, float]:
    """Run with on_logs; also answers when run() returned (monotonic)."""
    live = LiveLogs()
    outcome = await runner.run(request(source, language, on_logs=live))
    return outcome, live, time.monotonic()


def assert_prefix_of_outcome(live: LiveLogs, outcome: RunOutcome) -> None:
    assert live.lines == outcome.logs[: len(live.lines)]


async def test_python_log_lines_reach_on_logs_while_the_run_sleeps(
    runner: SandboxRunner,
) -> None:
    source = (
        "import time\n"
        "def Run(engine):\n"
        '    engine.log.info("one")\n'
        "    time.sleep(1)\n"
        '    print("two")\n'
    )
    outcome, live, returned = await run_live(runner, source)
    assert outcome.ok, outcome.error
    assert [line.content for line in outcome.logs] == ["one", "two"]
    assert returned - live.came_at("one") >= 0.8
    assert_prefix_of_outcome(live, outcome)


async def test_a_trivial_run_sends_no_live_logs(runner: SandboxRunner) -> None:
    source = 'def Run(engine):\n    engine.log.info("quick")\n    engine.result.set("ok")\n'
    outcome, live, _ = await run_live(runner, source)
    assert outcome.ok, outcome.error
    assert [line.content for line in outcome.logs] == ["quick"]
    assert live.calls == []


async def test_many_lines_come_live_in_bounded_frames_in_order(runner: SandboxRunner) -> None:
    source = (
        "import time\n"
        "def Run(engine):\n"
        "    for n in range(2500):\n"
        "        print(n)\n"
        "    time.sleep(0.5)\n"
    )
    outcome, live, _ = await run_live(runner, source)
    assert outcome.ok, outcome.error
    assert [line.content for line in live.lines] == [str(n) for n in range(2500)]
    assert max(len(batch) for _, batch in live.calls) <= 1000
    assert_prefix_of_outcome(live, outcome)


async def test_a_failing_on_logs_does_not_break_the_runner(runner: SandboxRunner) -> None:
    def broken(lines: list[RunLogLine]) -> None:
        raise RuntimeError("listener gone")

    source = 'import time\ndef Run(engine):\n    print("a")\n    time.sleep(0.2)\n    print("b")\n'
    outcome = await runner.run(request(source, on_logs=broken))
    assert outcome.ok, outcome.error
    assert [line.content for line in outcome.logs] == ["a", "b"]
    outcome = await runner.run(request('def Run(engine):\n    engine.result.set("still")\n'))
    assert outcome.result == "still"


@needs_node
async def test_javascript_console_log_reaches_on_logs_while_run_awaits(
    runner: SandboxRunner,
) -> None:
    source = """
console.log("top");  // before Run is known to exist: a log all the same
async function Run(engine) {
  console.log("one");
  await new Promise((resolve) => setTimeout(resolve, 1000));
  engine.log.info("two");
  engine.result.set("ok");
}
"""
    outcome, live, returned = await run_live(runner, source, "javascript")
    assert outcome.ok, outcome.error
    assert outcome.result == "ok"
    assert [line.content for line in outcome.logs] == ["top", "one", "two"]
    assert returned - live.came_at("one") >= 0.8
    assert_prefix_of_outcome(live, outcome)


@needs_node
async def test_a_javascript_script_streams_no_stdout_and_its_stdout_is_its_result(
    runner: SandboxRunner,
) -> None:
    source = 'console.log("result line");\nsetTimeout(() => console.log("later"), 500);\n'
    outcome, live, _ = await run_live(runner, source, "javascript")
    assert outcome.ok, outcome.error
    assert outcome.result == "result line\nlater\n"
    assert outcome.logs == []
    assert live.calls == []


@needs_go
async def test_go_log_lines_reach_on_logs_while_the_run_sleeps(runner: SandboxRunner) -> None:
    source = """package main

import "time"

func Run(engine *Engine) {
	engine.Log.Info("one")
	time.Sleep(time.Second)
	engine.Log.Info("two")
}
"""
    await runner.check("go", source)
    outcome, live, returned = await run_live(runner, source, "go")
    assert outcome.ok, outcome.error
    assert [line.content for line in outcome.logs] == ["one", "two"]
    assert returned - live.came_at("one") >= 0.8
    assert_prefix_of_outcome(live, outcome)


@needs_go
async def test_a_go_program_streams_no_stdout(runner: SandboxRunner) -> None:
    source = """package main

import (
	"fmt"
	"time"
)

func main() {
	fmt.Println("result")
	time.Sleep(500 * time.Millisecond)
}
"""
    await runner.check("go", source)
    outcome, live, _ = await run_live(runner, source, "go")
    assert outcome.ok, outcome.error
    assert outcome.result == "result\n"
    assert live.calls == []
