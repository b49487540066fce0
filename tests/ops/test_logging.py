"""Request ids, the access log, JSON log lines and the Sentry filter."""

from __future__ import annotations

import json
import logging
import sys

import httpx
import pytest

from codeactions.errors import CodeNotFound
from codeactions.ops.logging import (
    USER_FAILURE,
    JsonFormatter,
    request_id_var,
    sane_request_id,
    sentry_before_send,
)


async def test_each_response_carries_a_generated_request_id(client: httpx.AsyncClient) -> None:
    first = await client.get("/healthz")
    second = await client.get("/healthz")
    assert first.headers["x-request-id"]
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_a_sane_incoming_request_id_is_kept(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-Id": "flows-abc.123"})
    assert response.headers["x-request-id"] == "flows-abc.123"


async def test_an_odd_incoming_request_id_is_replaced(client: httpx.AsyncClient) -> None:
    odd = "x" * 500
    response = await client.get("/healthz", headers={"X-Request-Id": odd})
    assert response.headers["x-request-id"] != odd
    assert sane_request_id('has spaces and "quotes"') is None


async def test_one_access_line_per_request_without_the_query_string(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="codeactions.access")
    response = await client.get("/healthz?token=secret-value", headers={"X-Request-Id": "rid-42"})
    assert response.status_code == 200
    lines = [r for r in caplog.records if r.name == "codeactions.access"]
    assert len(lines) == 1
    line = lines[0]
    assert (line.method, line.path, line.status) == ("GET", "/healthz", 200)  # type: ignore[attr-defined]
    assert line.request_id == "rid-42"  # type: ignore[attr-defined]
    assert isinstance(line.duration_ms, float)  # type: ignore[attr-defined]
    assert "secret-value" not in json.dumps(vars(line), default=str)


def test_json_lines_hold_time_level_logger_message_request_id_and_extras() -> None:
    record = logging.LogRecord(
        "codeactions.x", logging.WARNING, __file__, 1, "hi %s", ("there",), None
    )
    record.queue = "q1"
    token = request_id_var.set("rid-7")
    try:
        line = JsonFormatter().format(record)
    finally:
        request_id_var.reset(token)
    body = json.loads(line)
    assert "\n" not in line
    assert body["level"] == "warning"
    assert body["logger"] == "codeactions.x"
    assert body["message"] == "hi there"
    assert body["request_id"] == "rid-7"
    assert body["queue"] == "q1"
    assert body["time"].endswith("+00:00")


def test_json_lines_carry_exceptions() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    body = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in body["exception"]


def test_sentry_drops_user_failures_and_callers_mistakes_but_keeps_service_faults() -> None:
    event = {"message": "x"}
    user = logging.LogRecord("runs", logging.ERROR, __file__, 1, "run failed", (), None)
    for key, value in USER_FAILURE.items():
        setattr(user, key, value)
    assert sentry_before_send(event, {"log_record": user}) is None
    assert sentry_before_send({"extra": {"user_failure": True}}, {}) is None

    try:
        raise CodeNotFound()
    except CodeNotFound:
        assert sentry_before_send(event, {"exc_info": sys.exc_info()}) is None

    service = logging.LogRecord("db", logging.ERROR, __file__, 1, "db down", (), None)
    assert sentry_before_send(event, {"log_record": service}) is event
    try:
        raise RuntimeError("bug")
    except RuntimeError:
        assert sentry_before_send(event, {"exc_info": sys.exc_info()}) is event
