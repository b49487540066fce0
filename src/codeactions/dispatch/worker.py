"""`codeactions worker`: runs the codes API replicas hand it through RabbitMQ in its own sandbox
runner, as many at once as it has slots, and tells them (heartbeats) that it is alive, how busy
it is and which codes are warm in it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import aio_pika
from aio_pika import DeliveryMode, ExchangeType
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)
from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector

from codeactions.config import Settings
from codeactions.dispatch import wire
from codeactions.dispatch.broker import Broker
from codeactions.dispatch.workers import remember
from codeactions.ops.health import runner_health
from codeactions.runner.base import (
    CompileError,
    RunLogLine,
    Runner,
    RunOutcome,
    RunRequest,
    wire_lines,
    wire_outcome,
)
from codeactions.runner.wire import Language

log = logging.getLogger(__name__)

SEEN_RUNS = 10_000  # run ids remembered, so a request delivered again is never run twice
REPLY_RETRY_SECONDS = 60.0  # how long the end of a run is retried while RabbitMQ is away


class WorkerMetrics:
    """What `/metrics` of a worker shows."""

    def __init__(self, worker_id: str, slots: int) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.slots = Gauge(
            "codeactions_worker_slots", "Runs this worker executes at once.", registry=r
        )
        self.busy = Gauge("codeactions_worker_busy", "Runs executing now.", registry=r)
        self.runs = Counter(
            "codeactions_worker_runs",
            "Runs executed, by outcome (completed, failed, refused: not taken).",
            ("outcome",),
            registry=r,
        )
        self.info = Gauge("codeactions_worker_info", "This worker.", ("worker",), registry=r)
        self.info.labels(worker_id).set(1)
        self.slots.set(slots)
        ProcessCollector(registry=r)


class Worker:
    """One worker process: consume its queue, run, answer, beat; on stop, drain."""

    def __init__(self, settings: Settings, runner: Runner) -> None:
        self.settings = settings
        self.dispatch = settings.dispatch
        self.runner = runner
        self.id = self.dispatch.worker_id
        self.slots = settings.runner.slots
        self.queue_name = wire.worker_queue(self.dispatch.prefix, self.id)
        self.metrics = WorkerMetrics(self.id, self.slots)
        self.busy = 0
        self.draining = False
        self.warm: deque[str] = deque(maxlen=self.slots)  # the codes it ran last
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self.broker = Broker(
            settings.rabbitmq.url,
            name=f"codeactions-worker {self.id} {socket.gethostname()} {os.getpid()}",
            retry_seconds=settings.rabbitmq.reconnect_seconds,
        )
        self._exchange: AbstractExchange | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None

    # ------------------------------------------------------------------ lifecycle

    async def serve(self, stop: asyncio.Event) -> None:
        """Connect, take runs until `stop` is set, then drain and say goodbye."""
        await self.runner.start()
        beating: asyncio.Task[None] | None = None
        try:
            if not await self._connect(stop):
                return
            beating = asyncio.create_task(self._beat(), name="worker-heartbeat")
            log.info(
                "worker %s: taking runs (%d slots) from %s", self.id, self.slots, self.queue_name
            )
            await stop.wait()
            await self._drain()
        finally:
            if beating is not None:
                beating.cancel()
                await asyncio.gather(beating, return_exceptions=True)
            await self._goodbye()
            await self.broker.close()
            await self.runner.close()

    async def _connect(self, stop: asyncio.Event) -> bool:
        async def consume(channel: AbstractChannel) -> None:
            await channel.set_qos(prefetch_count=self.slots)
            self._exchange = await channel.declare_exchange(
                wire.workers_exchange(self.dispatch.prefix), ExchangeType.FANOUT, durable=True
            )
            self._queue = await channel.declare_queue(
                self.queue_name, exclusive=True, auto_delete=True
            )
            self._consumer_tag = await self._queue.consume(self._on_order)

        return await self.broker.connect(consume, stop=stop)

    async def _drain(self) -> None:
        """Take nothing new; let the runs under way finish (within the shutdown grace)."""
        self.draining = True
        log.info("worker %s: draining %d runs", self.id, self.busy)
        await self._send_heartbeat()  # the replicas stop handing it runs now
        if self._queue is not None and self._consumer_tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._consumer_tag)
        if self._tasks:
            await asyncio.wait(
                list(self._tasks), timeout=self.settings.server.shutdown_grace_seconds
            )

    async def _goodbye(self) -> None:
        with contextlib.suppress(Exception):
            await self._send_heartbeat(gone=True)

    # ------------------------------------------------------------------ heartbeats

    async def _beat(self) -> None:
        while True:
            try:
                await self._send_heartbeat()
            except Exception as exc:
                log.warning("worker %s: heartbeat not sent: %s", self.id, exc)
            await asyncio.sleep(self.dispatch.heartbeat_seconds)

    async def _send_heartbeat(self, *, gone: bool = False) -> None:
        if self._exchange is None:
            return
        status = self.runner.status()
        languages: dict[Language, wire.LanguageReady] = {
            name: {"ready": s["ready"], "error": s["error"]}
            for name, s in status["languages"].items()
        }
        beat: wire.Heartbeat = {
            "worker": self.id,
            "queue": self.queue_name,
            "slots": self.slots,
            "busy": self.busy,
            "warm": list(self.warm),
            "draining": self.draining or gone,
            "gone": gone,
            "isolation": status["isolation"],
            "languages": languages,
            "sent_at": time.time(),
        }
        await self._exchange.publish(
            aio_pika.Message(
                wire.encode(beat),
                delivery_mode=DeliveryMode.NOT_PERSISTENT,
                expiration=self.dispatch.lost_seconds,
            ),
            routing_key="",
        )

    # ------------------------------------------------------------------ orders

    async def _on_order(self, message: AbstractIncomingMessage) -> None:
        try:
            order = wire.decode(message.body)
            op, order_id, reply_to = order["op"], str(order["id"]), str(order["reply_to"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("worker %s: an order that is not one was dropped: %s", self.id, exc)
            await message.reject(requeue=False)
            return
        task = asyncio.create_task(self._take(message, op, order_id, reply_to, order))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _take(
        self,
        message: AbstractIncomingMessage,
        op: str,
        order_id: str,
        reply_to: str,
        order: dict[str, Any],
    ) -> None:
        # Acknowledged once it has ended: the broker hands this worker no more than its slots
        # at once. Its queue is its own and dies with it, so no other worker ever gets it.
        try:
            if op == "compile":
                await self._compile(order_id, reply_to, order)
            elif order_id in self._seen:
                log.warning("worker %s: run %s delivered again, not run again", self.id, order_id)
            elif why := self._refusal(order):
                self.metrics.runs.labels("refused").inc()
                await self._reply(reply_to, {"op": "refused", "id": order_id, "error": why})
            else:
                self._seen[order_id] = None
                if len(self._seen) > SEEN_RUNS:
                    self._seen.popitem(last=False)
                await self._run(order_id, reply_to, order)
        finally:
            with contextlib.suppress(Exception):  # its channel may be gone with the broker
                await message.ack()

    def _refusal(self, order: dict[str, Any]) -> str:
        if self.draining:
            return "the worker is stopping"
        deadline = order.get("deadline")
        if isinstance(deadline, (int, float)) and deadline <= time.time():
            return "its deadline passed before a worker could take it"
        return ""

    async def _run(self, order_id: str, reply_to: str, order: dict[str, Any]) -> None:
        lines: asyncio.Queue[list[RunLogLine] | None] = asyncio.Queue()
        sender = asyncio.create_task(self._send_lines(order_id, reply_to, lines))
        self.busy += 1
        self.metrics.busy.set(self.busy)
        try:
            await self._reply(reply_to, {"op": "started", "id": order_id, "worker": self.id})
            outcome = await self._execute(order_id, order, lines.put_nowait)
            lines.put_nowait(None)
            await sender
        finally:
            sender.cancel()
            self.busy -= 1  # before the end is told: the slot is free when the replica hears it
            self.metrics.busy.set(self.busy)
        remember(self.warm, str(order.get("code_id")))
        self.metrics.runs.labels("completed" if outcome.ok else "failed").inc()
        done: wire.Reply = {"op": "done", "id": order_id, "outcome": wire_outcome(outcome)}
        await self._reply(reply_to, done, retry=True)

    async def _execute(
        self,
        order_id: str,
        order: dict[str, Any],
        on_logs: Callable[[list[RunLogLine]], None],
    ) -> RunOutcome:
        try:
            request = RunRequest(
                run_id=order_id,
                code_id=str(order["code_id"]),
                language=order["language"],
                source=str(order["source"]),
                timeout=float(order["timeout"]),
                params=dict(order.get("params") or {}),
                body=str(order.get("body") or ""),
                headers=dict(order.get("headers") or {}),
                method=str(order.get("method") or "POST"),
                secrets=dict(order.get("secrets") or {}),
                on_logs=on_logs,
            )
            return await self.runner.run(request)
        except Exception as exc:
            log.exception("worker %s: run %s failed in the runner", self.id, order_id)
            return RunOutcome(
                ok=False, reason="runner", error=f"runner error: {type(exc).__name__}"
            )

    async def _send_lines(
        self, order_id: str, reply_to: str, lines: asyncio.Queue[list[RunLogLine] | None]
    ) -> None:
        """A run's log lines, in the order the runner gave them."""
        while (batch := await lines.get()) is not None:
            with contextlib.suppress(Exception):  # lines are also in the outcome
                await self._reply(
                    reply_to, {"op": "logs", "id": order_id, "logs": wire_lines(batch)}
                )

    async def _compile(self, order_id: str, reply_to: str, order: dict[str, Any]) -> None:
        error: str | None = None
        try:
            await self.runner.check(order["language"], str(order["source"]))
        except CompileError as exc:
            error = str(exc)
        await self._reply(reply_to, {"op": "compiled", "id": order_id, "error": error})

    async def _reply(self, reply_to: str, reply: wire.Reply, *, retry: bool = False) -> None:
        """Answer the replica that handed the order; the end of a run is retried while
        RabbitMQ is away (up to REPLY_RETRY_SECONDS)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + (REPLY_RETRY_SECONDS if retry else 0)
        while True:
            try:
                channel = self.broker.channel
                if channel is None:
                    raise RuntimeError("not connected")
                reply["busy"] = self.busy  # fresher than its last heartbeat
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        wire.encode(reply),
                        correlation_id=reply.get("id"),
                        delivery_mode=DeliveryMode.NOT_PERSISTENT,
                        content_type="application/json",
                    ),
                    routing_key=reply_to,
                    mandatory=False,
                )
                return
            except Exception as exc:
                if loop.time() >= give_up:
                    log.warning(
                        "worker %s: answer %s of %s not sent: %s",
                        self.id,
                        reply.get("op"),
                        reply.get("id"),
                        exc,
                    )
                    return
                await asyncio.sleep(1.0)

    # ------------------------------------------------------------------ health

    def health(self) -> tuple[bool, dict[str, str]]:
        """Whether this worker can take runs now, and the word of each part."""
        connected = self.broker.connected
        runner_ok, runner_word = runner_health(self.runner.status())
        checks = {
            "rabbitmq": "ok" if connected else (self.broker.error or "disconnected"),
            "runner": runner_word,
        }
        return connected and runner_ok and not self.draining, checks


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """A worker with its own sandbox runner until SIGTERM or SIGINT (or `stop`), then drained."""
    import signal

    from codeactions.dispatch.probe import start_probe
    from codeactions.runner.sandbox import SandboxRunner

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    worker = Worker(settings, SandboxRunner(settings.runner, settings.logs))
    probe = None
    if settings.dispatch.worker_port:
        probe = await start_probe(
            settings.dispatch.worker_host,
            settings.dispatch.worker_port,
            health=worker.health,
            registry=worker.metrics.registry,
        )
    try:
        await worker.serve(stop)
    finally:
        if probe is not None:
            probe.close()
            await probe.wait_closed()
    log.info("worker %s: stopped", worker.id)
