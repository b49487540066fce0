"""Liveness and health."""

from __future__ import annotations

import httpx


async def test_liveness_answers_ok(client: httpx.AsyncClient) -> None:
    for path in ("/", "/healthz"):
        response = await client.get(path)
        assert response.status_code == 200
        assert response.json()["status"] == "ok"


async def test_health_checks_the_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json()["services"]["database"]["status"] == "healthy"


async def test_unknown_route_is_a_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/nope")
    assert response.status_code == 404
    assert response.json() == {"message": "Not Found"}
