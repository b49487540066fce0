"""GET /info: what a client needs to know of the deployment before it signs in (public)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from codeactions import __version__
from codeactions.config import CodeSettings, RateLimitSettings, Settings
from tests.auth.provider import FakeProvider, oidc_app, oidc_settings


async def test_info_is_public_and_describes_the_defaults(client: httpx.AsyncClient) -> None:
    response = await client.get("/info")
    assert response.status_code == 200
    assert response.json() == {
        "version": __version__,
        "login": False,
        "rate_limit": {"max_requests": 600, "window_seconds": 60},
        "languages": ["python", "javascript", "go"],
        "code_types": ["flow", "endpoint"],
        "max_source_bytes": 1024 * 1024,
        "default_timeout": 60,
    }
    # `login` says what POST /login does: off here.
    assert (await client.post("/login", json={"username": "u", "password": "p"})).status_code == 404


async def test_info_follows_the_settings_and_login_when_it_is_served(
    make_settings: Callable[..., Settings], provider: FakeProvider
) -> None:
    settings = make_settings(
        auth=oidc_settings(provider, oidc_client_id="console"),
        code=CodeSettings(max_source_bytes=4096, default_timeout=30),
        ratelimit=RateLimitSettings(max_requests=5, window_seconds=10),
    )
    async with oidc_app(settings) as client:
        body = (await client.get("/info")).json()
        assert body["login"] is True
        assert body["rate_limit"] == {"max_requests": 5, "window_seconds": 10}
        assert (body["max_source_bytes"], body["default_timeout"]) == (4096, 30)
        login = await client.post("/login", json={"username": "nobody", "password": "wrong"})
        # Served: the provider answers (this one knows no `console` client); off would be 404.
        assert login.status_code != 404


async def test_info_without_a_client_id_says_login_is_off(
    make_settings: Callable[..., Settings], provider: FakeProvider
) -> None:
    async with oidc_app(make_settings(auth=oidc_settings(provider))) as client:
        assert (await client.get("/info")).json()["login"] is False
