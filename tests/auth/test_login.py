"""POST /login and POST /refresh against the provider process's token endpoint: the tokens work on
the service's routes, refusals are 401, our own misconfiguration or a provider down is 503, and
each login leaves a session (no password) in memory or in Redis."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from codeactions.auth.login import CLIENT_REFUSED
from codeactions.auth.sessions import SESSION_STORE, MemorySessionStore, redis_key
from codeactions.config import AuthSettings, RateLimitSettings, Settings
from codeactions.main import create_app
from codeactions.parts import parts_of
from tests.auth.provider import FakeProvider, bearer, oidc_settings
from tests.conftest import ADMIN, need_service

CLIENT_ID = "codeactions"
USERNAME, PASSWORD, EMAIL = "alice", "correct horse battery staple", "alice@example.org"
PROJECT = "22222222-2222-2222-2222-222222222222"
REDIS_URL = "redis://127.0.0.1:6379/15"
REFRESH_SECONDS = 1800


@asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield app, client


def login_settings(provider: FakeProvider, **overrides: Any) -> AuthSettings:
    return oidc_settings(provider, **{"oidc_client_id": CLIENT_ID, **overrides})


@pytest.fixture
def subject(provider: FakeProvider) -> str:
    """Alice, a user of the provider, and the service's client there (public)."""
    provider.add_client(CLIENT_ID)
    return provider.add_user(USERNAME, PASSWORD, email=EMAIL)


@pytest.fixture
async def service(
    make_settings: Callable[..., Settings], provider: FakeProvider, subject: str
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with started(make_settings(auth=login_settings(provider))) as pair:
        yield pair


@pytest.fixture
def api(service: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return service[1]


async def log_in(
    api: httpx.AsyncClient, username: str = USERNAME, password: str = PASSWORD
) -> httpx.Response:
    return await api.post("/login", json={"username": username, "password": password})


async def make_member(api: httpx.AsyncClient, email: str) -> None:
    created = await api.post("/projects", json={"uuid": PROJECT, "name": "P"}, headers=ADMIN)
    assert created.status_code == 201, created.text
    added = await api.put(
        f"/projects/{PROJECT}/permissions/{email}", json={"role": 1}, headers=ADMIN
    )
    assert added.status_code in (200, 201), added.text


def session_id(access_token: str) -> str:
    return str(jwt.decode(access_token, options={"verify_signature": False})["sid"])


# --- login -------------------------------------------------------------------------------


async def test_login_answers_the_providers_tokens(api: httpx.AsyncClient) -> None:
    response = await log_in(api)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "expires_in"}
    assert body["expires_in"] == 300
    assert response.headers["cache-control"] == "no-store"


async def test_the_access_token_of_a_login_opens_the_users_projects(
    api: httpx.AsyncClient,
) -> None:
    token = (await log_in(api)).json()["access_token"]
    # Verified (signature, issuer, email) by the service's OIDC verifier: a stranger to the project.
    assert (await api.get(f"/projects/{PROJECT}", headers=bearer(token))).status_code == 404
    await make_member(api, EMAIL)
    response = await api.get(f"/projects/{PROJECT}", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json()["uuid"] == PROJECT


async def test_wrong_password_is_401(api: httpx.AsyncClient, provider: FakeProvider) -> None:
    response = await log_in(api, password="wrong")
    assert response.status_code == 401
    assert response.json() == {"message": "invalid username or password"}
    assert provider.token_calls == 1


async def test_unknown_user_is_401(api: httpx.AsyncClient) -> None:
    response = await log_in(api, username="mallory")
    assert response.status_code == 401
    assert response.json() == {"message": "invalid username or password"}


@pytest.mark.parametrize(
    "body",
    [
        {"username": USERNAME},
        {"username": 1, "password": PASSWORD},
        {"username": "", "password": PASSWORD},
        {"username": "\ud800", "password": PASSWORD},
        ["not", "an", "object"],
    ],
    ids=["no-password", "number", "empty", "lone-surrogate", "array"],
)
async def test_a_malformed_login_is_400_and_never_reaches_the_provider(
    api: httpx.AsyncClient, provider: FakeProvider, body: Any
) -> None:
    response = await api.post(
        "/login",
        content=json.dumps(body),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["message"]
    assert provider.token_calls == 0


# --- refresh -----------------------------------------------------------------------------


async def test_refresh_answers_new_tokens_that_work(api: httpx.AsyncClient) -> None:
    first = (await log_in(api)).json()
    response = await api.post("/refresh", json={"refresh_token": first["refresh_token"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "expires_in"}
    assert body["access_token"] != first["access_token"]
    assert response.headers["cache-control"] == "no-store"
    await make_member(api, EMAIL)
    assert (
        await api.get(f"/projects/{PROJECT}", headers=bearer(body["access_token"]))
    ).status_code == 200
    # The new refresh token refreshes again.
    again = await api.post("/refresh", json={"refresh_token": body["refresh_token"]})
    assert again.status_code == 200, again.text


@pytest.mark.parametrize(
    "refresh_token",
    [
        "garbage",
        jwt.encode(
            {"sid": "s", "azp": CLIENT_ID, "exp": 2**40}, "a forger's secret, 32 bytes or more"
        ),
    ],
    ids=["garbage", "forged"],
)
async def test_a_bad_refresh_token_is_401(api: httpx.AsyncClient, refresh_token: str) -> None:
    response = await api.post("/refresh", json={"refresh_token": refresh_token})
    assert response.status_code == 401
    assert response.json() == {"message": "invalid refresh token"}


async def test_a_refresh_token_of_an_ended_session_is_401(
    api: httpx.AsyncClient, provider: FakeProvider
) -> None:
    tokens = (await log_in(api)).json()
    provider.revoke(session_id(tokens["access_token"]))
    response = await api.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 401


async def test_a_refresh_token_is_not_an_access_token(api: httpx.AsyncClient) -> None:
    tokens = (await log_in(api)).json()
    await make_member(api, EMAIL)
    response = await api.get(f"/projects/{PROJECT}", headers=bearer(tokens["refresh_token"]))
    assert response.status_code == 401


# --- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize("oidc", ["off", "no-client-id"])
async def test_login_and_refresh_are_404_when_oidc_login_is_not_configured(
    make_settings: Callable[..., Settings], provider: FakeProvider, oidc: str
) -> None:
    auth = AuthSettings() if oidc == "off" else oidc_settings(provider)
    async with started(make_settings(auth=auth)) as (_app, api):
        for path, body in (
            ("/login", {"username": USERNAME, "password": PASSWORD}),
            ("/refresh", {"refresh_token": "x"}),
        ):
            response = await api.post(path, json=body)
            assert response.status_code == 404
            assert response.json() == {"message": "login is not configured"}
    assert provider.token_calls == 0


@pytest.mark.parametrize(
    ("advertised", "used"),
    [
        (["client_secret_basic", "client_secret_post"], "client_secret_basic"),
        (["client_secret_post"], "client_secret_post"),
    ],
)
async def test_a_confidential_client_logs_in_with_its_secret(
    make_settings: Callable[..., Settings],
    provider: FakeProvider,
    subject: str,
    advertised: list[str],
    used: str,
) -> None:
    provider.add_client("confidential", secret="s3cret: with + odd/chars")
    provider.set_client_auth_methods(advertised)
    auth = login_settings(
        provider, oidc_client_id="confidential", oidc_client_secret="s3cret: with + odd/chars"
    )
    async with started(make_settings(auth=auth)) as (_app, api):
        tokens = await log_in(api)
        assert tokens.status_code == 200, tokens.text
        assert provider.last_client_auth == used
        refreshed = await api.post(
            "/refresh", json={"refresh_token": tokens.json()["refresh_token"]}
        )
        assert refreshed.status_code == 200, refreshed.text
        assert provider.last_client_auth == used


@pytest.mark.parametrize("secret", ["wrong", ""], ids=["wrong-secret", "no-secret"])
async def test_a_client_secret_the_provider_refuses_is_503_not_the_callers_401(
    make_settings: Callable[..., Settings],
    provider: FakeProvider,
    subject: str,
    secret: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The service's misconfiguration: the caller's credentials may be right, a 401 would lie.
    provider.add_client("confidential", secret="right")
    auth = login_settings(provider, oidc_client_id="confidential", oidc_client_secret=secret)
    async with started(make_settings(auth=auth)) as (_app, api):
        response = await log_in(api)
        assert response.status_code == 503
        assert response.json() == {"message": CLIENT_REFUSED}
        assert "CODEACTIONS_OIDC_CLIENT_SECRET" in caplog.text
        response = await api.post("/refresh", json={"refresh_token": "x"})
        assert response.status_code == 503


# --- provider down -----------------------------------------------------------------------


async def test_login_and_refresh_are_503_while_the_provider_is_down(
    api: httpx.AsyncClient, provider: FakeProvider
) -> None:
    tokens = (await log_in(api)).json()
    provider.set_down(True)
    response = await log_in(api)
    assert response.status_code == 503
    assert "retry-after" in response.headers
    response = await api.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 503
    provider.set_down(False)
    assert (await log_in(api)).status_code == 200


async def test_login_is_503_when_the_provider_cannot_be_discovered(
    api: httpx.AsyncClient, provider: FakeProvider
) -> None:
    provider.set_down(True)
    assert (await log_in(api)).status_code == 503
    provider.set_down(False)
    assert (await log_in(api)).status_code == 200


async def test_login_is_503_when_the_token_endpoint_fails(
    api: httpx.AsyncClient, provider: FakeProvider
) -> None:
    assert (await log_in(api)).status_code == 200  # discovered
    provider.set_status(500)
    response = await log_in(api)
    assert response.status_code == 503
    assert response.json() == {"message": "identity provider unavailable"}


# --- sessions ----------------------------------------------------------------------------


async def test_a_login_keeps_its_session_in_memory_without_the_password(
    service: tuple[FastAPI, httpx.AsyncClient], subject: str
) -> None:
    app, api = service
    tokens = (await log_in(api)).json()
    store = parts_of(app)[SESSION_STORE]
    assert isinstance(store, MemorySessionStore)
    session = await store.get(subject, session_id(tokens["access_token"]))
    assert session is not None
    assert session.email == EMAIL
    assert (
        session.refresh_token_sha256 == hashlib.sha256(tokens["refresh_token"].encode()).hexdigest()
    )
    assert abs(session.expires_at - (time.time() + REFRESH_SECONDS)) < 5
    stored = json.dumps(asdict(session))
    assert PASSWORD not in stored and tokens["refresh_token"] not in stored


async def test_a_refresh_renews_the_session(
    service: tuple[FastAPI, httpx.AsyncClient], subject: str
) -> None:
    app, api = service
    tokens = (await log_in(api)).json()
    refreshed = (await api.post("/refresh", json={"refresh_token": tokens["refresh_token"]})).json()
    store = parts_of(app)[SESSION_STORE]
    assert store is not None
    session = await store.get(subject, session_id(refreshed["access_token"]))
    assert session is not None
    digest = hashlib.sha256(refreshed["refresh_token"].encode()).hexdigest()
    assert session.refresh_token_sha256 == digest


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis[bytes]]:
    need_service("Redis", "127.0.0.1", 6379)
    client: Redis[bytes] = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()  # type: ignore[attr-defined]


async def test_a_login_keeps_its_session_in_redis_for_the_refresh_tokens_life(
    make_settings: Callable[..., Settings],
    provider: FakeProvider,
    subject: str,
    redis_client: Redis[bytes],
) -> None:
    provider.set_lifetimes(access_seconds=60, refresh_seconds=REFRESH_SECONDS)
    settings = make_settings(
        auth=login_settings(provider), ratelimit=RateLimitSettings(redis_url=REDIS_URL)
    )
    async with started(settings) as (_app, api):
        tokens = (await log_in(api)).json()
        assert tokens["expires_in"] == 60
        key = redis_key(subject, session_id(tokens["access_token"]))
        try:
            raw = await redis_client.get(key)
            assert raw is not None
            assert REFRESH_SECONDS - 5 <= await redis_client.ttl(key) <= REFRESH_SECONDS
            stored = json.loads(raw)
            assert stored["email"] == EMAIL and stored["subject"] == subject
            assert PASSWORD.encode() not in raw and tokens["refresh_token"].encode() not in raw

            # A refresh of a session whose key was lost records it again.
            await redis_client.delete(key)
            refreshed = await api.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
            assert refreshed.status_code == 200, refreshed.text
            raw = await redis_client.get(key)
            assert raw is not None
            digest = hashlib.sha256(refreshed.json()["refresh_token"].encode()).hexdigest()
            assert json.loads(raw)["refresh_token_sha256"] == digest
        finally:
            await redis_client.delete(key)


async def test_login_is_503_when_redis_is_down(
    make_settings: Callable[..., Settings], provider: FakeProvider, subject: str
) -> None:
    # Nothing listens on port 1: the session cannot be kept, so the login is not answered.
    settings = make_settings(
        auth=login_settings(provider), ratelimit=RateLimitSettings(redis_url="redis://127.0.0.1:1")
    )
    async with started(settings) as (_app, api):
        response = await log_in(api)
        assert response.status_code == 503
        assert response.json() == {"message": "session store unavailable"}
