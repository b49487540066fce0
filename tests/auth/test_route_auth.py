"""Every route is authenticated unless it is listed here as public: deny by default."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from codeactions.auth.dependencies import current_admin, current_principal
from codeactions.config import Settings
from codeactions.main import create_app

# (method or "*" for any, path): reachable without credentials, by the original's contract.
PUBLIC = {
    ("GET", "/"),
    ("GET", "/health"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
    ("POST", "/login"),  # how a caller gets credentials
    ("POST", "/refresh"),
    ("GET", "/web/schema"),  # the WebSocket's documentation
    ("GET", "/info"),  # what a client (the console) needs before signing in
    ("GET", "/console"),  # the console's page and files: it signs in through the API
    ("GET", "/console/{path}"),
    ("GET", "/console/assets/{name}"),
    ("*", "/web"),  # the WebSocket checks its token itself (closed 1008): tests/live/test_web.py
    ("*", "/docs/assets/{path}"),  # the documentation page's static files
    ("*", "/action/endpoint/{code_id}"),
    ("*", "/endpoint/{code_id}"),
}
AUTH_DEPENDENCIES = {current_principal, current_admin}


def is_public(method: str, path: str) -> bool:
    return (method, path) in PUBLIC or ("*", path) in PUBLIC


def calls(dependant: Dependant) -> Iterator[Any]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from calls(dependency)


def routes(app: FastAPI) -> Iterator[tuple[str, str, Any]]:
    """(method, path, route) for every route, also inside included routers (FastAPI keeps
    those lazily, so `app.routes` alone does not list them)."""
    for route in iter_route_contexts(app.routes):
        path = route.path_format or route.path or repr(route.original_route)
        # A mount or a websocket has no methods: it must still be authenticated or public.
        for method in sorted(route.methods or {"*"}):
            if method != "HEAD":
                yield method, path, route


def authenticated(route: Any) -> bool:
    dependant = getattr(route, "dependant", None)
    return (
        isinstance(route.original_route, APIRoute)
        and isinstance(dependant, Dependant)
        and any(call in AUTH_DEPENDENCIES for call in calls(dependant))
    )


def test_every_route_is_authenticated_or_listed_as_public() -> None:
    app = create_app(Settings())
    unprotected = [
        f"{method} {path}"
        for method, path, route in routes(app)
        if not is_public(method, path) and not authenticated(route)
    ]
    assert unprotected == [], "routes without an auth dependency and not in PUBLIC"


def test_the_walk_finds_the_auth_dependency() -> None:
    # Guards the test above against passing because it sees nothing.
    app = create_app(Settings())
    found = {path: authenticated(route) for method, path, route in routes(app)}
    assert found["/projects/{project_uuid}/permissions"] is True
    assert found["/healthz"] is False


async def test_every_non_public_route_answers_401_without_credentials(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings())
    failures = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for method, path, _route in routes(app):
                if is_public(method, path):
                    continue
                url = re.sub(r"\{[^}]+\}", "00000000-0000-0000-0000-000000000000", path)
                for headers in ({}, {"Authorization": "Token not-the-token"}):
                    response = await client.request(method, url, headers=headers)
                    if response.status_code != 401:
                        failures.append(f"{method} {url} {headers}: {response.status_code}")
    assert failures == []


@pytest.mark.parametrize("path", ["/docs", "/openapi.json", "/healthz"])
async def test_public_pages_answer_without_credentials(
    client: httpx.AsyncClient, path: str
) -> None:
    assert (await client.get(path)).status_code == 200
