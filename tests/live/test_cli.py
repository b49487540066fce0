"""`codeactions run` and `codeactions tail` against the app behind a real server: lines as they are
written, the result and exit codes, following a code's new runs, and resuming after a lagging
follower or a lost connection."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from codeactions.config import LiveSettings
from codeactions.live.client import CommandError, RunInputs, Server, Terminal, run_code, tail
from codeactions.runner.base import RunLogLine, RunOutcome, RunRequest
from tests.conftest import ADMIN_TOKEN
from tests.live.conftest import WAIT, Live, StartLive

LINE = re.compile(r"^(\[[0-9a-f]{8}\] )?\d\d:\d\d:\d\d\.\d{3} (debug|info |error) (.*)$")


def terminal() -> Terminal:
    return Terminal(io.StringIO(), io.StringIO(), color=False)


def text(stream: object) -> str:
    assert isinstance(stream, io.StringIO)
    return stream.getvalue()


def printed(stream: object) -> list[str]:
    """The contents of the log lines printed on `stream`, in order."""
    return [m.group(3) for m in map(LINE.match, text(stream).splitlines()) if m]


async def until_printed(stream: object, wanted: str) -> None:
    async with asyncio.timeout(WAIT):
        while True:
            if wanted in text(stream):
                return
            await asyncio.sleep(0.01)  # printed by a task of this loop: polling is enough


def lines(*contents: str, type: str = "info") -> list[RunLogLine]:
    return [RunLogLine(type, content, time.time()) for content in contents]


def server(live: Live, token: str = ADMIN_TOKEN) -> Server:
    return Server(f"http://{live.host}", token)


async def test_run_prints_lines_as_they_are_written_then_the_result(live: Live) -> None:
    term = terminal()

    async def streaming(request: RunRequest) -> RunOutcome:
        assert request.on_logs is not None
        first = [*lines("starting", type="debug"), *lines("half way")]
        request.on_logs(first)
        await until_printed(term.err, "half way")  # printed while the run still runs
        last = lines("boom-ish", type="error")
        return RunOutcome(ok=True, result='{"answer": 42}', logs=[*first, *last])

    live.api.runner.behaviour = streaming
    code = await live.api.add_code()
    inputs = RunInputs(params={"a": "1"}, headers={"X-Trace": ["t"]}, body="hi", method="put")
    async with asyncio.timeout(WAIT):
        exit_code = await run_code(server(live), term, str(code.id), inputs)
    assert exit_code == 0
    assert text(term.out) == '{"answer": 42}\n'  # the result alone: `run X > out.json` works
    assert printed(term.err) == ["starting", "half way", "boom-ish"]
    assert re.search(r"run \S+ completed · status 200 · \d+\.\d\d s", text(term.err))
    call = live.api.runner.calls[-1]
    assert (call.params, call.body, call.method) == ({"a": "1"}, "hi", "PUT")
    assert call.headers["X-Trace"] == ["t"]


async def test_a_failed_run_exits_1_with_its_error(live: Live) -> None:
    async def failing(request: RunRequest) -> RunOutcome:
        logged = lines("about to fail")
        error = "Traceback (most recent call last):\nValueError: boom"
        return RunOutcome(ok=False, reason="exception", error=error, logs=logged)

    live.api.runner.behaviour = failing
    code = await live.api.add_code()
    term = terminal()
    async with asyncio.timeout(WAIT):
        exit_code = await run_code(server(live), term, str(code.id), RunInputs())
    assert exit_code == 1
    assert text(term.out) == ""
    # The service adds the error to the run's lines; the summary says it in short.
    assert printed(term.err) == ["about to fail", "Traceback (most recent call last):"]
    summary = text(term.err).splitlines()[-1]
    assert re.match(r"run \S+ failed · status \d+ · .* · error: ", summary), summary
    assert "ValueError: boom" in summary


async def test_running_an_unknown_code_is_exit_2_with_the_reason(live: Live) -> None:
    with pytest.raises(CommandError) as raised:
        await run_code(server(live), terminal(), str(uuid.uuid4()), RunInputs())
    assert raised.value.exit_code == 2
    assert "run code" in raised.value.message


async def test_tail_of_a_finished_run_prints_its_stored_lines_and_summary(live: Live) -> None:
    async def logging(request: RunRequest) -> RunOutcome:
        return RunOutcome(ok=True, result="done", logs=lines("one", "two", "three"))

    live.api.runner.behaviour = logging
    code = await live.api.add_code()
    async with live.socket() as sock:
        req = await sock.send(5, {"id": str(code.id)})
        run_id = (await sock.next(req))["data"]["run_id"]
        await sock.events_until(req)
    term = terminal()
    async with asyncio.timeout(WAIT):
        assert await tail(server(live), term, run_id) == 0
    assert printed(term.out) == ["one", "two", "three"]
    summary = text(term.out).splitlines()[-1]
    assert summary.startswith(f"run {run_id} completed · status 200 · ")
    assert summary.endswith("result: done")


async def test_tail_of_a_failed_run_exits_0_and_shows_its_status(live: Live) -> None:
    async def failing(request: RunRequest) -> RunOutcome:
        return RunOutcome(ok=False, reason="exception", error="ValueError: boom")

    live.api.runner.behaviour = failing
    code = await live.api.add_code()
    async with live.socket() as sock:
        req = await sock.send(5, {"id": str(code.id)})
        run_id = (await sock.next(req))["data"]["run_id"]
        await sock.events_until(req)
    term = terminal()
    assert await tail(server(live), term, run_id) == 0
    assert f"run {run_id} failed" in text(term.out)
    assert "error: ValueError: boom" in text(term.out)


@pytest.mark.parametrize("unknown", [str(uuid.uuid4()), "not-an-id"])
async def test_tail_of_an_unknown_id_is_exit_1(live: Live, unknown: str) -> None:
    with pytest.raises(CommandError) as raised:
        await tail(server(live), terminal(), unknown)
    assert raised.value.exit_code == 1
    assert "no run or code with id" in raised.value.message


async def test_tail_of_a_code_follows_its_runs_started_after_it(live: Live) -> None:
    async def logging(request: RunRequest) -> RunOutcome:
        assert request.on_logs is not None
        request.on_logs(lines(f"live from {request.code_id}"))
        return RunOutcome(ok=True, result="done", logs=lines(f"live from {request.code_id}"))

    live.api.runner.behaviour = logging
    code, other = await live.api.add_code(), await live.api.add_code()  # the same project
    term = terminal()
    tailing = asyncio.create_task(tail(server(live), term, str(code.id)))
    try:
        await until_printed(term.err, "following new runs")
        async with live.socket() as sock:
            for run_of in (other, code):
                req = await sock.send(5, {"id": str(run_of.id)})
                run_id = (await sock.next(req))["data"]["run_id"]
                await sock.events_until(req)
        await until_printed(term.out, f"run {run_id} completed")
    finally:
        tailing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await tailing
    assert printed(term.out) == [f"live from {code.id}"]
    assert all(line.startswith(f"[{run_id[:8]}] ") for line in text(term.out).splitlines())


async def test_a_bad_token_is_exit_2_with_the_services_reason(live: Live) -> None:
    code = await live.api.add_code()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "codeactions.cli",
        "run",
        str(code.id),
        "--token",
        "not-a-token",
        env={**os.environ, "CODEACTIONS_URL": f"http://{live.host}"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(WAIT * 3):
        out, err = await process.communicate()
    assert process.returncode == 2, err
    assert out == b""
    assert b"refused the connection: invalid token" in err
    assert b"not-a-token" not in err  # the token is never printed


async def test_an_unreachable_service_is_exit_2(live: Live) -> None:
    with pytest.raises(CommandError) as raised:
        await run_code(Server("http://127.0.0.1:9", "t"), terminal(), "x", RunInputs())
    assert raised.value.exit_code == 2
    assert "cannot connect to ws://127.0.0.1:9/web" in raised.value.message


async def test_the_command_runs_a_code_with_options_from_the_environment(
    live: Live, tmp_path: Path
) -> None:
    async def echoing(request: RunRequest) -> RunOutcome:
        result = json.dumps({"params": request.params, "body": request.body})
        return RunOutcome(ok=True, result=result, logs=lines("echoing"))

    live.api.runner.behaviour = echoing
    code = await live.api.add_code()
    (tmp_path / "body.txt").write_text("from a file")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "codeactions.cli",
        "run",
        str(code.id),
        "--param",
        "name=Ana",
        "--header",
        "x-a=1",
        "--header",
        "x-a=2",
        "--body",
        f"@{tmp_path / 'body.txt'}",
        env={
            **os.environ,
            "CODEACTIONS_URL": f"http://{live.host}",
            "CODEACTIONS_TOKEN": ADMIN_TOKEN,
            "NO_COLOR": "1",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(WAIT * 3):
        out, err = await process.communicate()
    assert process.returncode == 0, err
    assert json.loads(out) == {"params": {"name": "Ana"}, "body": "from a file"}
    assert printed(io.StringIO(err.decode())) == ["echoing"]
    assert live.api.runner.calls[-1].headers["X-A"] == ["1", "2"]


async def test_a_lagging_follower_resumes_and_prints_every_line_in_order(
    start_live: StartLive,
) -> None:
    live = await start_live(live=LiveSettings(follower_queue=2))
    term = terminal()
    burst = lines(*(f"line {n}" for n in range(2, 22)))

    async def bursting(request: RunRequest) -> RunOutcome:
        assert request.on_logs is not None
        request.on_logs(lines("line 1"))
        await until_printed(term.err, "line 1")  # the CLI follows live now
        request.on_logs(burst)  # 20 lines at once: more than the follower may have waiting
        await asyncio.sleep(0.2)
        return RunOutcome(ok=True, result="done", logs=[*lines("line 1"), *burst])

    live.api.runner.behaviour = bursting
    code = await live.api.add_code()
    async with asyncio.timeout(WAIT):
        assert await run_code(server(live), term, str(code.id), RunInputs()) == 0
    assert printed(term.err) == [f"line {n}" for n in range(1, 22)]
    async with httpx.AsyncClient(base_url=f"http://{live.host}") as client:
        metrics = (await client.get("/metrics")).text
    assert "codeactions_ws_lagged_total 1.0" in metrics  # it did fall behind


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("color", [True, False])
def test_lines_are_coloured_by_type_on_a_terminal_only_when_asked(color: bool) -> None:
    term = Terminal(Tty(), Tty(), color=color)
    for kind in ("error", "debug", "info"):
        event = {"type": kind, "content": kind, "created_at": "2026-01-02T03:04:05.678+00:00"}
        term.line(term.out, event)
    error, debug, info = text(term.out).splitlines()
    assert ("\x1b[31m" in error, "\x1b[2m" in debug) == (color, color)
    assert "\x1b[" not in info
    assert re.search(r"\d\d:\d\d:05\.678 info  info$", info)  # local time, to the ms


class Relay:
    """A TCP relay to the served app whose connections the test cuts: what a client sees when the
    service restarts."""

    def __init__(self, target: str) -> None:
        self.host, port = target.split(":")
        self.port = int(port)
        self.writers: list[asyncio.StreamWriter] = []
        self.address = ""

    async def start(self) -> asyncio.Server:
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return server

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        self.writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()


async def test_a_lost_connection_reconnects_and_resumes_after_the_last_line(live: Live) -> None:
    release = asyncio.Event()

    async def slow(request: RunRequest) -> RunOutcome:
        assert request.on_logs is not None
        request.on_logs(lines("1", "2"))
        await release.wait()
        request.on_logs(lines("3"))
        return RunOutcome(ok=True, result="done", logs=lines("1", "2", "3", "4"))

    live.api.runner.behaviour = slow
    code = await live.api.add_code()
    relay = Relay(live.host)
    async with await relay.start():
        term = terminal()
        running = asyncio.create_task(
            run_code(
                Server(f"http://{relay.address}", ADMIN_TOKEN), term, str(code.id), RunInputs()
            )
        )
        await until_printed(term.err, " 2\n")
        relay.cut()
        await until_printed(term.err, "reconnected")
        release.set()
        async with asyncio.timeout(WAIT):
            assert await running == 0
    assert printed(term.err) == ["1", "2", "3", "4"]
    assert "reconnecting in" in text(term.err)
    assert text(term.out) == "done\n"
