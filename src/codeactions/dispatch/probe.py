"""A worker's small HTTP face for its orchestrator: `/healthz` (alive), `/health` (can take runs:
RabbitMQ and the runner) and `/metrics` (Prometheus). GET only; nothing else is served."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Health = Callable[[], tuple[bool, dict[str, str]]]
MAX_REQUEST_LINE = 8192


async def start_probe(
    host: str, port: int, *, health: Health, registry: CollectorRegistry
) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                line = await reader.readline()
                while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    if len(header) > MAX_REQUEST_LINE:
                        return
            parts = line.decode("latin-1").split()
            method, path = (parts[0], parts[1].split("?")[0]) if len(parts) >= 2 else ("", "")
            status, content_type, body = _route(method, path, health, registry)
            writer.write(
                f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                + (b"" if method == "HEAD" else body)
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    return await asyncio.start_server(answer, host, port, limit=MAX_REQUEST_LINE)


def _route(
    method: str, path: str, health: Health, registry: CollectorRegistry
) -> tuple[str, str, bytes]:
    if method not in ("GET", "HEAD"):
        return "405 Method Not Allowed", "application/json", b'{"message": "GET only"}'
    if path == "/healthz":
        return "200 OK", "application/json", b'{"status": "ok"}'
    if path == "/health":
        ok, checks = health()
        body = json.dumps({"status": "ok" if ok else "unavailable", "checks": checks}).encode()
        return ("200 OK" if ok else "503 Service Unavailable"), "application/json", body
    if path == "/metrics":
        return "200 OK", CONTENT_TYPE_LATEST, generate_latest(registry)
    return "404 Not Found", "application/json", b'{"message": "Not Found"}'
