"""The runner of an API replica under `rabbitmq` dispatch: it executes nothing itself, it hands
each run to a worker through RabbitMQ and waits for its outcome (same answers as the embedded
runner), passing the run's log lines on as they come."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import aio_pika
from aio_pika import DeliveryMode, ExchangeType
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aio_pika.exceptions import PublishError

from codeactions.config import Settings
from codeactions.dispatch import wire
from codeactions.dispatch.broker import Broker
from codeactions.dispatch.workers import WorkerTable, WorkerView
from codeactions.errors import Unavailable
from codeactions.ops.metrics import Metrics
from codeactions.runner.base import (
    CompileError,
    Language,
    LanguageStatus,
    RunLogLine,
    RunnerStatus,
    RunOutcome,
    RunRequest,
    log_lines,
    outcome_of,
)
from codeactions.runner.wire import LANGUAGES
from codeactions.runs.outcome import failed_outcome

log = logging.getLogger(__name__)

# Past a run's own timeout, how long its worker has to report the outcome (the worker's sandbox
# kills it at the timeout; this covers the trip back).
REPLY_GRACE_SECONDS = 3.0
COMPILE_SECONDS = 120.0
# After a worker's last word, how long its answers sent before it may still be on their way.
GONE_GRACE_SECONDS = 1.0


class _Again:
    """A run to hand to another worker: the one it went to never started it."""


AGAIN = _Again()


@dataclass(eq=False)
class Pending:
    """A run (or compile) handed to a worker and not yet answered."""

    id: str
    worker: WorkerView
    kind: Literal["run", "compile"]
    on_logs: Callable[[list[RunLogLine]], None] | None = None
    started: bool = False
    published_at: float = field(default_factory=time.perf_counter)
    # A run's outcome, or a compile's error ("" when it compiles); AGAIN: hand it elsewhere.
    settled: asyncio.Future[RunOutcome | _Again | str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def settle(self, value: RunOutcome | _Again | str) -> None:
        if not self.settled.done():
            self.settled.set_result(value)


class DispatchRunner:
    """Hands runs to workers (affinity first), learns of workers from their heartbeats, and
    fails the runs of a worker that falls silent with reason `worker lost`."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics,
        on_capacity: Callable[[int], None] = lambda slots: None,
    ) -> None:
        self.settings = settings.dispatch
        self.broker = Broker(
            settings.rabbitmq.url,
            name=f"codeactions-api {socket.gethostname()} {os.getpid()}",
            retry_seconds=settings.rabbitmq.reconnect_seconds,
        )
        self.metrics = metrics
        self.on_capacity = on_capacity
        self.table = WorkerTable(self.settings.lost_seconds)
        self.reply_queue = wire.api_queue(self.settings.prefix, self.settings.worker_id)
        self._pending: dict[str, Pending] = {}
        self._changed = asyncio.Event()  # set (and replaced) whenever the table changes
        self._tasks: list[asyncio.Task[None]] = []
        self._capacity = -1

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect in the background: the API serves (and runs wait) while RabbitMQ is down."""
        self._tasks.append(asyncio.create_task(self._connect(), name="dispatch-connect"))
        self._tasks.append(asyncio.create_task(self._watch(), name="dispatch-watch"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for pending in list(self._pending.values()):
            pending.settle(_lost(pending.worker.id, "was not heard from: this API replica stopped"))
        await self.broker.close()

    async def _connect(self) -> None:
        async def consume(channel: AbstractChannel) -> None:
            exchange = await channel.declare_exchange(
                wire.workers_exchange(self.settings.prefix), ExchangeType.FANOUT, durable=True
            )
            ttl = int(self.settings.lost_seconds * 1000)
            beats = await channel.declare_queue(
                exclusive=True, auto_delete=True, arguments={"x-message-ttl": ttl}
            )
            await beats.bind(exchange)
            await beats.consume(self._on_heartbeat, no_ack=True)
            replies = await channel.declare_queue(
                self.reply_queue, exclusive=True, auto_delete=True
            )
            await replies.consume(self._on_reply, no_ack=True)

        await self.broker.connect(consume, on_return_raises=True)
        log.info("dispatch: connected to RabbitMQ, waiting for workers")

    async def _watch(self) -> None:
        """Take silent workers out of the table, often enough to notice within `lost_seconds`."""
        interval = min(1.0, self.settings.lost_seconds / 4)
        while True:
            await asyncio.sleep(interval)
            for worker in self.table.silent(time.monotonic()):
                silent_for = time.monotonic() - worker.last_seen
                log.error("dispatch: worker %s lost (silent for %.1f s)", worker.id, silent_for)
                self._worker_lost(
                    worker, f"stopped answering (no heartbeat for {silent_for:.0f} s)"
                )
                self._table_changed()

    # ------------------------------------------------------------------ messages

    async def _on_heartbeat(self, message: AbstractIncomingMessage) -> None:
        try:
            beat = wire.heartbeat(message.body)
        except ValueError as exc:
            log.warning("dispatch: a heartbeat that is not one was dropped: %s", exc)
            return
        known = beat["worker"] in self.table.workers
        worker = self.table.heard(beat, time.monotonic())
        if not known:
            log.info("dispatch: worker %s joined (%d slots)", worker.id, worker.slots)
        if beat["gone"]:
            # It stopped after its runs ended. What it was handed and never took goes to
            # another worker, once the answers it sent before this word (on another queue,
            # which may come later) have had time to arrive.
            asyncio.get_running_loop().call_later(GONE_GRACE_SECONDS, self._hand_back, worker)
        self._table_changed()

    def _hand_back(self, worker: WorkerView) -> None:
        for pending in self._of(worker):
            if not pending.started:
                pending.settle(AGAIN)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        try:
            reply: wire.Reply = wire.decode(message.body)  # type: ignore[assignment]
            pending = self._pending.get(str(reply["id"]))
            op = reply["op"]
        except (ValueError, KeyError, TypeError):
            log.warning("dispatch: a reply that is not one was dropped")
            return
        if pending is None:
            return  # settled already (its worker was lost, its caller gave up)
        if isinstance(reply.get("busy"), int):
            pending.worker.busy = reply["busy"]
        if op == "started":
            pending.started = True
            self.metrics.dispatched(time.perf_counter() - pending.published_at)
        elif op == "logs" and pending.on_logs is not None:
            try:
                pending.on_logs(log_lines(reply.get("logs") or []))
            except Exception:
                log.exception("dispatch: passing on a run's log lines failed")
        elif op == "done":
            pending.settle(outcome_of(reply["outcome"]))
        elif op == "refused":
            pending.settle(AGAIN)
        elif op == "compiled":
            pending.settle(reply.get("error") or "")  # "": it compiles

    def _of(self, worker: WorkerView) -> list[Pending]:
        return [p for p in self._pending.values() if p.worker is worker]

    def _worker_lost(self, worker: WorkerView, why: str) -> None:
        """Its runs under way fail; what it had not started is settled too: handing it to
        another worker could run it twice if it did start and its word was lost."""
        for pending in self._of(worker):
            if pending.kind == "compile":
                pending.settle(AGAIN)
            else:
                pending.settle(_lost(worker.id, why))

    def _table_changed(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        capacity = self.table.capacity
        if capacity != self._capacity:
            self._capacity = capacity
            self.on_capacity(capacity)
        self.metrics.workers_seen({w.id: (w.slots, w.load) for w in self.table.workers.values()})

    # ------------------------------------------------------------------ Runner

    async def _worker_for(self, code_id: str, until: float) -> tuple[WorkerView, bool] | None:
        """A worker to take a run, waiting for one to join until `until` (loop time)."""
        loop = asyncio.get_running_loop()
        while True:
            picked = self.table.pick(code_id)
            if picked is not None and self.broker.channel is not None:
                return picked
            remaining = until - loop.time()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()

    async def _hand(
        self, order: wire.RunOrder | wire.CompileOrder, pending: Pending, until: float
    ) -> RunOutcome | _Again | str | None:
        """Publish an order to its worker and wait for its answer until `until` (loop time)."""
        channel = self.broker.channel
        if channel is None:
            raise Unavailable("RabbitMQ is unavailable: cannot hand the run to a worker")
        worker = pending.worker
        self._pending[pending.id] = pending
        worker.mine += 1
        try:
            message = aio_pika.Message(
                wire.encode(order),
                correlation_id=pending.id,
                delivery_mode=DeliveryMode.NOT_PERSISTENT,
                content_type="application/json",
            )
            try:
                await channel.default_exchange.publish(
                    message, routing_key=worker.queue, mandatory=True
                )
            except PublishError:  # its queue is gone: so is the worker
                log.warning("dispatch: worker %s is gone (its queue was deleted)", worker.id)
                if self.table.drop(worker.id) is not None:
                    self._table_changed()
                return AGAIN
            except Exception as exc:
                raise Unavailable(
                    f"RabbitMQ is unavailable: cannot hand the run to a worker ({exc})"
                ) from exc
            remaining = until - asyncio.get_running_loop().time()
            try:
                async with asyncio.timeout(max(0.0, remaining)):
                    return await pending.settled
            except TimeoutError:
                return None
        finally:
            worker.mine -= 1
            self._pending.pop(pending.id, None)

    async def run(self, request: RunRequest) -> RunOutcome:
        loop = asyncio.get_running_loop()
        until = loop.time() + request.timeout + REPLY_GRACE_SECONDS
        order: wire.RunOrder = {
            "op": "run",
            "id": request.run_id,
            "reply_to": self.reply_queue,
            "code_id": request.code_id,
            "language": request.language,
            "source": request.source,
            "timeout": request.timeout,
            "deadline": time.time() + request.timeout,
            "params": request.params,
            "body": request.body,
            "headers": request.headers,
            "method": request.method,
            "secrets": request.secrets,
        }
        while True:
            picked = await self._worker_for(request.code_id, until - REPLY_GRACE_SECONDS)
            if picked is None:
                return failed_outcome("timeout", "no worker took the run before its timeout")
            worker, warm = picked
            self.metrics.affinity(hit=warm)
            pending = Pending(request.run_id, worker, "run", request.on_logs)
            order["timeout"] = max(0.1, until - REPLY_GRACE_SECONDS - loop.time())
            order["deadline"] = time.time() + order["timeout"]
            answer = await self._hand(order, pending, until)
            if isinstance(answer, RunOutcome):
                worker.warmed(request.code_id)
                return answer
            if answer is None:
                if pending.started:
                    return _lost(worker.id, "gave no outcome by the run's timeout")
                return failed_outcome("timeout", "no worker took the run before its timeout")
            # AGAIN: never started there; another worker (or this one again) takes it.

    async def check(self, language: Language, source: str) -> None:
        if language != "go":
            return
        loop = asyncio.get_running_loop()
        wait_until = loop.time() + self.settings.compile_wait_seconds
        while True:
            picked = await self._worker_for("", wait_until)
            if picked is None:
                raise Unavailable("no worker is alive to compile the Go code: retry later")
            compile_id = uuid.uuid4().hex
            order: wire.CompileOrder = {
                "op": "compile",
                "id": compile_id,
                "reply_to": self.reply_queue,
                "language": language,
                "source": source,
                "deadline": time.time() + COMPILE_SECONDS,
            }
            pending = Pending(compile_id, picked[0], "compile")
            answer = await self._hand(order, pending, loop.time() + COMPILE_SECONDS)
            if isinstance(answer, _Again):
                continue
            if answer is None:
                raise Unavailable("the worker compiling the Go code did not answer: retry later")
            if answer:
                raise CompileError(str(answer))
            return

    def status(self) -> RunnerStatus:
        workers = self.table.open()
        languages: dict[Language, LanguageStatus] = {}
        for name in LANGUAGES:
            ready = [w for w in workers if _ready(w, name)]
            why = "" if ready else _why_not(name, workers)
            languages[name] = {"ready": bool(ready), "error": why, "failures": 0, "retry_in": 0}
        errors = []
        if self.broker.error:
            errors.append(self.broker.error)
        elif not workers:
            errors.append("no worker is alive: runs wait for one within their timeout")
        else:
            errors += [
                f"{name} cannot run: {s['error']}" for name, s in languages.items() if s["error"]
            ]
        slots = sum(w.slots for w in workers)
        busy = sum(min(w.load, w.slots) for w in workers)
        isolations = sorted({w.isolation for w in workers if w.isolation})
        return RunnerStatus(
            ok=not errors,
            error="; ".join(errors),
            isolation=f"dispatched to {len(workers)} workers over RabbitMQ"
            + (f" ({'; '.join(isolations)})" if isolations else ""),
            network="on the workers",
            cgroups="on the workers",
            slots=slots,
            busy=busy,
            queued=0,
            node_spares=0,
            warnings=[],
            restarts=0,
            supervisor_pid=None,
            languages=languages,
        )


def _ready(worker: WorkerView, language: Language) -> bool:
    status = worker.languages.get(language)
    return bool(status and status["ready"])


def _why_not(language: Language, workers: list[WorkerView]) -> str:
    if not workers:
        return "no worker is alive"
    errors = {w.languages[language]["error"] for w in workers if language in w.languages}
    return "; ".join(sorted(e for e in errors if e)) or "no worker can run it now"


def _lost(worker_id: str, why: str) -> RunOutcome:
    return failed_outcome("worker lost", f"worker lost: {worker_id} {why}")
