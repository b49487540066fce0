"""The API side of the sandbox runner: starts the supervisor process and talks to it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from codeactions.config import LogSettings, RunnerSettings
from codeactions.runner import wire
from codeactions.runner.base import (
    CompileError,
    Language,
    RunLogLine,
    RunnerStatus,
    RunOutcome,
    RunRequest,
    log_lines,
    outcome_of,
)

logger = logging.getLogger(__name__)

# Started by path (the runtime interpreter has no codeactions installed): this checkout's host.
SUPERVISOR = Path(__file__).resolve().parent / "host" / "__main__.py"
# The only variables the supervisor gets: none of the service's secrets.
SUPERVISOR_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
START_TIMEOUT = 60.0
# How long past a run's own timeout the API waits before pinging the supervisor (a run may
# also be queued behind others, so lateness alone does not mean the supervisor is stuck).
GRACE = 15.0
COMPILE_TIMEOUT = 120.0
PING_TIMEOUT = 10.0


class SupervisorGone(Exception):
    """The supervisor process ended or stopped answering."""


class SandboxRunner:
    """Runs user code in a separate, clean supervisor process; implements runner.base.Runner."""

    def __init__(self, settings: RunnerSettings, logs: LogSettings) -> None:
        self.settings = settings
        self.max_log_chars = logs.max_content_chars
        self._ids = itertools.count(1)
        # Keys the secrets' share of a warm key: the key names them without revealing them.
        self._warm_salt = os.urandom(32)
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        # Runs under way whose request wants their log lines live (RunRequest.on_logs).
        self._log_sinks: dict[str, Callable[[list[RunLogLine]], None]] = {}
        self._process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[wire.SupervisorStatus] | None = None
        self._status: wire.SupervisorStatus | None = None
        self._status_at = 0.0  # when it came (its languages' retry_in count from then)
        self._closing = False
        self._restart_lock = asyncio.Lock()
        self._generation = 0
        self._live_generation = -1
        self._in_flight = 0
        self._restart_task: asyncio.Task[None] | None = None
        self.restarts = 0
        self.grace = GRACE
        self.ping_timeout = PING_TIMEOUT

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._closing = False
        await self._spawn()

    async def _spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        loop = asyncio.get_running_loop()
        try:
            self._process = await asyncio.create_subprocess_exec(
                self.settings.python,
                "-I",
                str(SUPERVISOR),
                str(theirs.fileno()),
                pass_fds=[theirs.fileno()],
                env=SUPERVISOR_ENV,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                cwd="/",
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            raise RuntimeError(f"cannot start the runner supervisor: {exc}") from exc
        finally:
            theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours, limit=1 << 26)
        self._writer = writer
        self._generation += 1
        self._ready = loop.create_future()
        self._status = None  # until its "ready": each language that cannot run is logged once
        self._reader_task = asyncio.create_task(self._read(reader, self._generation))
        self._stderr_task = asyncio.create_task(self._relay_stderr(self._process))
        self._send(
            {
                "op": "init",
                "settings": self.settings.model_dump(),
                "max_log_chars": self.max_log_chars,
            }
        )
        try:
            status = await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT)
        except (TimeoutError, SupervisorGone) as exc:
            await self._kill_process()
            raise RuntimeError(f"the runner supervisor did not start: {exc}") from exc
        for warning in status["warnings"]:
            logger.warning("runner: weaker isolation: %s", warning)
        logger.info(
            "runner ready: isolation=%s network=%s cgroups=%s slots=%s",
            status["isolation"],
            status["network"],
            status["cgroups"],
            status["slots"],
        )

    async def close(self) -> None:
        self._closing = True
        await self._kill_process(graceful=True)
        self._fail_waiters("the runner was stopped")

    async def _kill_process(self, graceful: bool = False) -> None:
        process = self._process
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if process is not None and process.returncode is None:
            # EOF on its socket makes the supervisor kill every sandbox and exit; SIGKILL if not.
            if graceful:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), 10)
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        for task in (self._reader_task, self._stderr_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    # ------------------------------------------------------------------ protocol

    def _send(self, message: dict[str, Any], blob: bytes = b"") -> None:
        if self._writer is None or self._writer.is_closing():
            raise SupervisorGone("no supervisor")
        self._writer.write(wire.encode_frame(message, blob))

    async def _read(self, reader: asyncio.StreamReader, generation: int) -> None:
        try:
            while True:
                header = await reader.readexactly(wire.FRAME_HEADER.size)
                meta_size, blob_size = wire.FRAME_HEADER.unpack(header)
                frame = wire.loads(await reader.readexactly(meta_size))
                if blob_size:
                    await reader.readexactly(blob_size)  # the supervisor sends none today
                op: wire.SupervisorOp | None = frame.get("op")
                if op == "ready":
                    self._live_generation = generation
                    self._update_status(frame["status"])
                    if self._ready is not None and not self._ready.done():
                        self._ready.set_result(frame["status"])
                elif op == "logs":
                    self._live_logs(frame["id"], frame["logs"])
                elif op in ("done", "compiled", "pong"):
                    waiter = self._waiters.pop(frame["id"], None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(frame)
                elif op == "status":
                    self._update_status(frame["status"])
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            logger.debug("runner connection ended: %r", exc)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(SupervisorGone("the supervisor exited during start-up"))
        if generation == self._generation:
            self._fail_waiters("the runner supervisor stopped")
            # Only a supervisor that once worked is restarted; a failed start raises in start().
            if not self._closing and self._live_generation == generation:
                self._restart_task = asyncio.create_task(self._restart(generation))

    def _live_logs(self, request_id: str, entries: list[wire.LogEntry]) -> None:
        on_logs = self._log_sinks.get(request_id)
        if on_logs is None:
            return  # nobody listens, or the run is over
        try:
            on_logs(log_lines(entries))
        except Exception:
            logger.exception("runner: the live log callback of run %s failed", request_id)

    async def _relay_stderr(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        with contextlib.suppress(ValueError, ConnectionError):  # a line over the reader's limit
            async for line in process.stderr:
                logger.warning("%s", line.decode("utf-8", "replace").rstrip())

    def _fail_waiters(self, message: str) -> None:
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            if not waiter.done():
                waiter.set_exception(SupervisorGone(message))

    async def _restart(self, generation: int) -> None:
        async with self._restart_lock:
            if self._closing or generation != self._generation:
                return
            logger.error("runner supervisor died; restarting it")
            self.restarts += 1
            await self._kill_process()
            delay = 0.1
            while not self._closing:
                try:
                    await self._spawn()
                    return
                except Exception as exc:
                    logger.error("runner supervisor restart failed: %s", exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)

    async def _request(
        self,
        message: dict[str, Any],
        wait_seconds: float,
        blob: bytes = b"",
        on_logs: Callable[[list[RunLogLine]], None] | None = None,
    ) -> dict[str, Any]:
        if self._restart_lock.locked():
            async with self._restart_lock:
                pass  # wait for the restart in progress
        request_id = str(next(self._ids))
        message["id"] = request_id
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = waiter
        if on_logs is not None:
            self._log_sinks[request_id] = on_logs
        generation = self._generation
        try:
            self._send(message, blob)
            while True:
                # asyncio.wait leaves the waiter alone on timeout (no cancel, no shield needed).
                await asyncio.wait((waiter,), timeout=wait_seconds)
                if waiter.done():
                    return waiter.result()
                # Late: either queued behind other runs (fine) or the supervisor is stuck.
                if not await self._responsive():
                    break
        finally:
            self._waiters.pop(request_id, None)
            self._log_sinks.pop(request_id, None)
        if generation == self._generation and not self._closing:
            logger.error("runner supervisor stopped answering; restarting it")
            self._restart_task = asyncio.create_task(self._restart(generation))
        raise SupervisorGone("the runner did not answer")

    async def _responsive(self) -> bool:
        """Ping the supervisor: a stuck one does not answer within PING_TIMEOUT."""
        request_id = f"ping-{next(self._ids)}"
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = waiter
        try:
            self._send({"op": "ping", "id": request_id})
            await asyncio.wait_for(waiter, self.ping_timeout)
            return True
        except (TimeoutError, SupervisorGone):
            return False
        finally:
            self._waiters.pop(request_id, None)

    # ------------------------------------------------------------------ Runner

    async def run(self, request: RunRequest) -> RunOutcome:
        started = time.monotonic()
        meta: wire.RunMeta = {"language": request.language, "timeout": request.timeout}
        child: dict[str, Any] = {
            "run_id": request.run_id,
            "code_id": request.code_id,
            "params": request.params,
            "headers": request.headers,
            "method": request.method,
            "secrets": request.secrets,
            "max_log_chars": self.max_log_chars,
            "reuse": self.settings.reuse,
        }
        if request.language == "go":
            meta["source"] = request.source  # compiled by the supervisor; the binary is the code
        else:
            child["source"] = request.source
            digest = hashlib.sha256(request.source.encode("utf-8", "replace")).hexdigest()
            meta["warm_key"] = f"{request.code_id}:{digest}:{self._secrets_digest(request)}"
        payload = wire.child_request(child, request.body.encode("utf-8", "replace"))
        self._in_flight += 1
        try:
            frame = await self._request(
                {"op": "run", "run": meta}, request.timeout + self.grace, payload, request.on_logs
            )
        except SupervisorGone as exc:
            return RunOutcome(
                ok=False,
                reason="runner",
                error=f"runner failure: {exc}",
                duration=time.monotonic() - started,
            )
        finally:
            self._in_flight -= 1
        outcome: wire.Outcome = frame["outcome"]
        return outcome_of(outcome)

    def _secrets_digest(self, request: RunRequest) -> str:
        """Part of a warm key: a warm worker serves only runs with the very same secrets, so
        whatever a run keeps in its process never shows a rotated or deleted secret to the next."""
        if not request.secrets:
            return ""
        data = json.dumps(sorted(request.secrets.items())).encode("utf-8", "replace")
        return hmac.new(self._warm_salt, data, hashlib.sha256).hexdigest()

    async def check(self, language: Language, source: str) -> None:
        if language != "go":
            return
        try:
            frame = await self._request({"op": "compile", "source": source}, COMPILE_TIMEOUT)
        except SupervisorGone as exc:
            raise CompileError(f"the Go compiler is unavailable: {exc}") from None
        if frame.get("error"):
            raise CompileError(str(frame["error"]))
        if frame.get("runner_error"):
            raise CompileError(str(frame["runner_error"]))

    def _update_status(self, status: wire.SupervisorStatus) -> None:
        """The supervisor's latest word; a language that stops or starts running again is logged."""
        before = self._status["languages"] if self._status is not None else {}
        self._status, self._status_at = status, time.monotonic()
        for name, language in status["languages"].items():
            was_ready = before[name]["ready"] if name in before else True
            if was_ready and not language["ready"]:
                logger.error("runner: %s cannot run: %s", name, language["error"])
            elif language["ready"] and not was_ready:
                logger.info("runner: %s runs again", name)

    def status(self) -> RunnerStatus:
        alive = (
            self._process is not None
            and self._process.returncode is None
            and self._writer is not None
            and not self._writer.is_closing()
        )
        reported = self._status if alive else None
        languages: dict[Language, wire.LanguageStatus] = {}
        errors: list[str] = []
        if reported is None:
            down = "the runner supervisor is not running (it is being started)"
            for name in wire.LANGUAGES:
                languages[name] = {"ready": False, "error": down, "failures": 0, "retry_in": 0.0}
            errors.append(down)
        else:
            waited = time.monotonic() - self._status_at
            for name, language in reported["languages"].items():
                retry_in = round(max(0.0, language["retry_in"] - waited), 1)
                languages[name] = {**language, "retry_in": retry_in}
                if not language["ready"]:
                    errors.append(
                        f"{name} cannot run: {language['error']} ({language['failures']} failed "
                        f"starts, next try in {retry_in:g} s)"
                    )
        slots = reported["slots"] if reported is not None else self.settings.slots
        return RunnerStatus(
            ok=not errors,
            error="; ".join(errors),
            isolation=reported["isolation"] if reported is not None else "unknown",
            network=reported["network"] if reported is not None else "unknown",
            cgroups=reported["cgroups"] if reported is not None else "none",
            slots=slots,
            busy=min(self._in_flight, slots),
            queued=max(0, self._in_flight - slots),
            node_spares=reported["node_spares"] if reported is not None else 0,
            warnings=list(reported["warnings"]) if reported is not None else [],
            restarts=self.restarts,
            supervisor_pid=self._process.pid if self._process is not None else None,
            languages=languages,
        )
