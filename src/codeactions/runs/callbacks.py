"""Callbacks of async runs: where a finished run may be POSTed, and POSTing it with retries."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from fastapi import Depends
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from codeactions import __version__
from codeactions.config.callbacks import CallbackSettings, Network
from codeactions.errors import BadRequest
from codeactions.ops.metrics import Metrics
from codeactions.parts import Part, part
from codeactions.runner.host.egress import BLOCKED_V4, BLOCKED_V6
from codeactions.runs.schemas import run_json
from codeactions.runs.service import Execution, Submission, get_run_by_id

log = logging.getLogger(__name__)

MAX_URL_CHARS = 2048
MAX_BACKOFF_SECONDS = 60.0
NOT_HTTP = "callback_url must be an http(s) URL with a host"
NOT_PUBLIC = "callback_url must be a public http(s) address"
NOT_RESOLVED = "callback_url host does not resolve"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# The ranges user code may not reach: a callback is sent by the service, on behalf of a user.
BLOCKED: tuple[Network, ...] = tuple(
    ipaddress.ip_network(net) for net in (*BLOCKED_V4, *BLOCKED_V6)
)


class NotAllowed(Exception):
    """The callback's host resolves to an address it may not be sent to."""


class NotResolved(Exception):
    """The callback's host does not resolve (now)."""


def is_allowed(address: Address, allowed: list[Network]) -> bool:
    """Whether a callback may connect to `address`: a public address outside the ranges user code
    may not reach, or one in the networks the settings exempt."""
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    if any(a in net for a in (address, mapped) if a is not None for net in allowed):
        return True
    if any(address in net for net in BLOCKED):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.sixtofour is not None:
        # 6to4 carries an IPv4 address the relay then reaches.
        return is_allowed(address.sixtofour, allowed)
    # Beyond the sandbox's list: documentation, benchmark (the slots' own), other reserved.
    return address.is_global


@dataclass(frozen=True)
class CallbackTarget:
    """A checked `callback_url`."""

    url: httpx.URL
    host: str  # as resolved (IDNA), without brackets
    port: int

    @property
    def where(self) -> str:
        """The receiver for the logs: no path, query or credentials, which may carry secrets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.url.scheme}://{host}:{self.port}"


def parse_callback_url(value: str) -> CallbackTarget:
    """The URL's parts, or BadRequest when it is not an absolute http(s) URL of at most 2048
    characters."""
    if len(value) > MAX_URL_CHARS:
        raise BadRequest(f"callback_url is longer than {MAX_URL_CHARS} characters")
    try:
        url = httpx.URL(value)
        host = url.raw_host.decode("ascii").strip("[]")
    except (httpx.InvalidURL, UnicodeError):
        raise BadRequest(NOT_HTTP) from None
    if url.scheme not in ("http", "https") or not host:
        raise BadRequest(NOT_HTTP)
    port = url.port or (443 if url.scheme == "https" else 80)
    return CallbackTarget(url, host, port)


async def allowed_addresses(target: CallbackTarget, allowed: list[Network]) -> list[Address]:
    """The addresses the target's host resolves to now: NotResolved when none, NotAllowed when
    any of them may not be reached (all or nothing, so a name cannot mix in a private one)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            target.host, target.port, type=socket.SOCK_STREAM
        )
    except (OSError, UnicodeError) as exc:
        raise NotResolved(str(exc)) from None
    addresses: list[Address] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise NotResolved("no address")
    if not all(is_allowed(address, allowed) for address in addresses):
        raise NotAllowed(", ".join(map(str, addresses)))
    return addresses


def backoff(settings: CallbackSettings, attempt: int) -> float:
    """The wait after failed attempt number `attempt` (from 1): doubling, at most a minute."""
    return float(min(settings.retry_seconds * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS))


def should_retry(status: int) -> bool:
    return status in (408, 429) or status >= 500


class CallbackSender:
    """Sends each async run's callback once the run is recorded finished; its tasks are drained,
    then cancelled, when the app stops."""

    def __init__(
        self,
        settings: CallbackSettings,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        metrics: Metrics,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._sessionmaker = sessionmaker
        self._metrics = metrics
        # A transport of its own: no proxy from the environment (one would connect elsewhere
        # than the checked address), while its CA settings (SSL_CERT_FILE) still count. No
        # redirects: a receiver could point one anywhere.
        self._client = httpx.AsyncClient(
            transport=transport or httpx.AsyncHTTPTransport(),
            trust_env=False,
            follow_redirects=False,
            timeout=settings.timeout_seconds,
            headers={"User-Agent": f"codeactions/{__version__}"},
        )
        self._tasks: set[asyncio.Task[None]] = set()

    async def check(self, value: str) -> CallbackTarget:
        """The `callback_url` of a request, checked as its deliveries will be: BadRequest when it
        is not an http(s) URL whose host resolves, only to addresses it may reach."""
        target = parse_callback_url(value)
        try:
            async with asyncio.timeout(self.settings.timeout_seconds):
                await allowed_addresses(target, self.settings.allowed_networks)
        except (NotResolved, TimeoutError):
            raise BadRequest(NOT_RESOLVED) from None
        except NotAllowed:
            raise BadRequest(NOT_PUBLIC) from None
        return target

    def send_when_finished(self, submission: Submission, target: CallbackTarget) -> None:
        """POST the run to `target` once it is recorded finished, in the background."""
        task = asyncio.create_task(
            self._deliver(submission, target), name=f"callback-{submission.run_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, grace_seconds: float) -> None:
        """Let deliveries under way finish for up to `grace_seconds`, cancel the rest."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace_seconds)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()

    async def _deliver(self, submission: Submission, target: CallbackTarget) -> None:
        run_id = submission.run_id
        try:
            outcome = await self._deliver_run(submission, target)
        except asyncio.CancelledError:
            log.warning("run %s: callback to %s abandoned at shutdown", run_id, target.where)
            self._metrics.callback_finished(outcome="cancelled")
            raise
        except Exception:
            log.exception("run %s: callback to %s failed", run_id, target.where)
            outcome = "failed"
        self._metrics.callback_finished(outcome=outcome)

    async def _deliver_run(self, submission: Submission, target: CallbackTarget) -> str:
        """Wait for the run's end, then deliver it: the outcome for the metrics."""
        try:
            execution = await submission.execution
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # kept by neither the database nor the journal: nothing to tell
            log.warning(
                "run %s: no callback, its outcome was not recorded: %s", submission.run_id, exc
            )
            return "dropped"
        payload = json.dumps(
            await self._stored_record(execution),
            ensure_ascii=False,
            allow_nan=False,
            separators=(",", ":"),
        ).encode()
        return await self._attempts(submission.run_id, target, payload)

    async def _stored_record(self, execution: Execution) -> dict[str, Any]:
        """The run as `GET /coderun/{id}` shows it; while the database cannot tell (the outcome
        waits in the journal), the record its live followers got at its end."""
        try:
            async with self._sessionmaker() as session:
                stored = await get_run_by_id(session, str(execution.run.id))
        except Exception as exc:
            log.warning("run %s: reading it for its callback failed: %s", execution.run.id, exc)
            stored = None
        if stored is not None and stored.status != "started":
            return run_json(stored)
        record = run_json(execution.run)
        return execution.mask.json(record) if execution.mask else record

    async def _attempts(self, run_id: uuid.UUID, target: CallbackTarget, payload: bytes) -> str:
        """Deliver until done, refused or out of attempts: the outcome for the metrics."""
        attempts = self.settings.attempts
        for attempt in range(1, attempts + 1):
            outcome, detail = await self._attempt(run_id, target, payload)
            if outcome == "delivered":
                log.info("run %s: callback delivered to %s (%s)", run_id, target.where, detail)
                return outcome
            if outcome != "retry":
                log.warning(
                    "run %s: callback to %s not delivered, not retried: %s",
                    run_id,
                    target.where,
                    detail,
                )
                return outcome
            log.warning(
                "run %s: callback attempt %d/%d to %s failed: %s",
                run_id,
                attempt,
                attempts,
                target.where,
                detail,
            )
            if attempt < attempts:
                await asyncio.sleep(backoff(self.settings, attempt))
        log.warning(
            "run %s: callback to %s given up after %d attempts", run_id, target.where, attempts
        )
        return "failed"

    async def _attempt(
        self, run_id: uuid.UUID, target: CallbackTarget, payload: bytes
    ) -> tuple[str, str]:
        """One delivery: (delivered | retry | rejected | refused, what happened)."""
        try:
            async with asyncio.timeout(self.settings.timeout_seconds):
                # Checked again at each attempt: the name may point elsewhere by now.
                addresses = await allowed_addresses(target, self.settings.allowed_networks)
                status = await self._post(run_id, target, addresses[0], payload)
        except NotAllowed as exc:
            return "refused", f"its host resolves to an address it may not reach ({exc})"
        except NotResolved as exc:
            return "retry", f"its host does not resolve: {exc}"
        except TimeoutError:
            return "retry", f"no answer within {self.settings.timeout_seconds:g} s"
        except (httpx.HTTPError, OSError) as exc:
            # Without a message that quotes the URL: its path or query may carry a secret.
            text = str(exc)[:200]
            return "retry", type(exc).__name__ + ("" if "://" in text else f": {text}")
        if 200 <= status < 300:
            return "delivered", f"status {status}"
        if should_retry(status):
            return "retry", f"status {status}"
        return "rejected", f"status {status}"

    async def _post(
        self, run_id: uuid.UUID, target: CallbackTarget, address: Address, payload: bytes
    ) -> int:
        """POST to the checked address (not the name again, which could resolve elsewhere), as
        the URL's host for the receiver and for TLS; only the status is read."""
        url = target.url.copy_with(host=str(address))
        host_header = target.url.netloc.decode("ascii")
        extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
        request = self._client.build_request(
            "POST",
            url,
            content=payload,
            headers={
                "Host": host_header,
                "Content-Type": "application/json",
                "X-Run-Id": str(run_id),
            },
            extensions=extensions,
        )
        response = await self._client.send(request, stream=True)
        await response.aclose()
        return response.status_code


CALLBACKS: Part[CallbackSender] = Part("callbacks")
CallbacksDep = Annotated[CallbackSender, Depends(part(CALLBACKS))]
