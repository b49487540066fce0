"""Credentials over HTTP: header forms, the static token, OIDC users and service accounts."""

from __future__ import annotations

import socket
from collections.abc import Callable

import httpx
import pytest

from codeactions.auth.dependencies import VERIFIER
from codeactions.auth.oidc import OidcVerifier
from codeactions.config import AuthSettings, Settings
from codeactions.main import create_app
from tests.auth.provider import FakeProvider, bearer, oidc_app, oidc_settings
from tests.conftest import ADMIN, ADMIN_TOKEN

PROTECTED = "/projects/p1/permissions"


async def test_missing_header_is_invalid_token(client: httpx.AsyncClient) -> None:
    response = await client.get(PROTECTED)
    assert response.status_code == 401
    assert response.json() == {"message": "invalid token"}


@pytest.mark.parametrize("header", ["", "   ", "Bearer", "Token  "])
async def test_empty_credentials_are_invalid_token(client: httpx.AsyncClient, header: str) -> None:
    response = await client.get(PROTECTED, headers={"Authorization": header})
    assert response.status_code == 401


@pytest.mark.parametrize(
    "header",
    [f"Token {ADMIN_TOKEN}", f"Bearer {ADMIN_TOKEN}", ADMIN_TOKEN, f"token  {ADMIN_TOKEN} "],
)
async def test_static_token_is_accepted_in_every_header_form(
    client: httpx.AsyncClient, header: str
) -> None:
    response = await client.get(PROTECTED, headers={"Authorization": header})
    assert response.status_code == 200
    assert response.json() == []


@pytest.mark.parametrize("token", ["wrong", ADMIN_TOKEN[:-1], ADMIN_TOKEN + "x", "tést"])
async def test_wrong_static_token_is_not_authorized(client: httpx.AsyncClient, token: str) -> None:
    header = f"Token {token}".encode("latin-1")  # a header may carry any byte
    response = await client.get(PROTECTED, headers={b"Authorization": header})
    assert response.status_code == 401
    assert response.json() == {"message": "not authorized"}


async def test_without_any_configured_credential_everything_is_denied(
    make_settings: Callable[..., Settings],
) -> None:
    # Deny by default: no static token and no OIDC means no caller is ever authenticated.
    app = create_app(make_settings(auth=AuthSettings(token="")))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for header in ("Token ", "Token x", "x"):
                response = await client.get(PROTECTED, headers={"Authorization": header})
                assert response.status_code == 401


async def test_lifespan_builds_the_verifier_only_when_oidc_is_enabled(
    make_settings: Callable[..., Settings], provider: FakeProvider
) -> None:
    for auth, expected in ((oidc_settings(provider), OidcVerifier), (AuthSettings(), type(None))):
        app = create_app(make_settings(auth=auth))
        async with app.router.lifespan_context(app):
            assert isinstance(app.state.parts[VERIFIER], expected)


async def test_oidc_user_token_reaches_the_route(
    oidc_client: httpx.AsyncClient, provider: FakeProvider
) -> None:
    await oidc_client.put(
        "/projects/p1/permissions/mod@example.org", json={"role": 3}, headers=ADMIN
    )
    response = await oidc_client.get(PROTECTED, headers=bearer(provider.token("mod@example.org")))
    assert response.status_code == 200
    assert [p["email"] for p in response.json()] == ["mod@example.org"]


async def test_static_token_still_works_with_oidc_enabled(
    oidc_client: httpx.AsyncClient, provider: FakeProvider
) -> None:
    assert (await oidc_client.get(PROTECTED, headers=ADMIN)).status_code == 200
    assert provider.jwks_calls == provider.userinfo_calls == 0


async def test_expired_oidc_token_is_not_authorized(
    oidc_client: httpx.AsyncClient, provider: FakeProvider
) -> None:
    response = await oidc_client.get(PROTECTED, headers=bearer(provider.token(expires_in=-60)))
    assert response.status_code == 401
    assert response.json() == {"message": "not authorized"}


async def test_token_without_email_is_a_401_with_its_reason(
    oidc_client: httpx.AsyncClient, provider: FakeProvider
) -> None:
    response = await oidc_client.get(PROTECTED, headers=bearer(provider.token(None)))
    assert response.status_code == 401
    assert response.json() == {"message": "token has no email claim"}


async def test_provider_down_is_a_503_not_a_500(
    oidc_client: httpx.AsyncClient, provider: FakeProvider
) -> None:
    provider.set_down(True)
    for token in (provider.token(), "opaque-token"):
        response = await oidc_client.get(PROTECTED, headers=bearer(token))
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        assert response.json() == {"message": "identity provider unavailable"}


async def test_opaque_token_of_a_service_account_sees_every_project(
    oidc_client: httpx.AsyncClient, provider: FakeProvider
) -> None:
    provider.set_userinfo("svc-token", {"can_communicate_internally": True, "sub": "svc"})
    for path in ("/projects/any-1/permissions", "/projects/any-2/permissions"):
        response = await oidc_client.get(path, headers={"Authorization": "svc-token"})
        assert response.status_code == 200


async def test_keycloak_host_and_realm_settings_find_the_provider(
    make_settings: Callable[..., Settings], provider: FakeProvider
) -> None:
    # The original's settings: the issuer, JWKS and (through discovery) userinfo URLs follow.
    auth = AuthSettings(
        token=ADMIN_TOKEN, oidc_enabled=True, oidc_host=provider.url, oidc_realm="weni"
    )
    async with oidc_app(make_settings(auth=auth)) as client:
        token = provider.token(None, can_communicate_internally=True)
        assert (await client.get(PROTECTED, headers=bearer(token))).status_code == 200
        provider.set_userinfo("opaque", {"email": "x@example.org"})
        response = await client.get(PROTECTED, headers=bearer("opaque"))
        assert response.status_code == 404  # a user, not a member of p1
        assert provider.jwks_calls == provider.userinfo_calls == 1


async def test_unreachable_provider_is_a_503(
    make_settings: Callable[..., Settings], provider: FakeProvider
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    auth = AuthSettings(
        token=ADMIN_TOKEN, oidc_enabled=True, oidc_host=f"http://127.0.0.1:{port}", oidc_realm="r"
    )
    app = create_app(make_settings(auth=auth))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for token in (provider.token(), "opaque"):
                response = await client.get(PROTECTED, headers=bearer(token))
                assert response.status_code == 503
                assert response.json() == {"message": "identity provider unavailable"}
