"""Who a JWT's caller is: the token's claims, the provider's userinfo answer, or both (`auto`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from codeactions.auth import oidc
from codeactions.auth.oidc import OidcVerifier
from codeactions.auth.principals import Principal
from codeactions.config import Settings
from codeactions.errors import AppError
from tests.auth.conftest import FakeClock
from tests.auth.provider import FakeProvider, bearer, oidc_app, oidc_settings
from tests.conftest import ADMIN

MEMBER = "member@example.org"
PROTECTED = "/projects/p1/permissions"


@asynccontextmanager
async def verifier_with(provider: FakeProvider, **settings: Any) -> AsyncIterator[OidcVerifier]:
    verifier = OidcVerifier(oidc_settings(provider, **settings))
    try:
        yield verifier
    finally:
        await verifier.close()


async def refusal(verifier: OidcVerifier, token: str) -> AppError:
    with pytest.raises(AppError) as caught:
        await verifier.principal(token)
    return caught.value


async def warm_up(verifier: OidcVerifier, provider: FakeProvider) -> int:
    """Have the verifier hold the provider's keys and userinfo URL, so that what follows concerns
    userinfo calls only; returns how many userinfo calls there were so far."""
    await verifier.principal(provider.token(None, userinfo={"email": MEMBER}, jti="warm-up"))
    return provider.userinfo_calls


# --- the `auto` source (the default) ----------------------------------------------------------


async def test_auto_token_with_both_claims_asks_userinfo_nothing(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    principal = await verifier.principal(provider.token(can_communicate_internally=False))
    assert principal == Principal(kind="user", email="user@example.org")
    assert provider.userinfo_calls == provider.discovery_calls == 0


async def test_auto_token_without_email_takes_it_from_userinfo(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    token = provider.token(None, userinfo={"email": "Ana@Example.org"})
    assert await verifier.principal(token) == Principal(kind="user", email="ana@example.org")
    assert provider.userinfo_calls == 1


async def test_auto_token_without_the_internal_claim_takes_it_from_userinfo(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    token = provider.token("svc@example.org", userinfo={"can_communicate_internally": True})
    assert (await verifier.principal(token)).kind == "internal"


async def test_auto_keeps_what_the_token_says(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    token = provider.token("token@example.org", userinfo={"email": "userinfo@example.org"})
    assert (await verifier.principal(token)).email == "token@example.org"
    assert provider.userinfo_calls == 1  # it was asked for `can_communicate_internally`


async def test_auto_service_account_token_without_email_needs_no_provider(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    await warm_up(verifier, provider)
    provider.set_down(True)
    token = provider.token(None, can_communicate_internally=True)
    assert (await verifier.principal(token)).kind == "internal"


# --- the cache --------------------------------------------------------------------------------


async def test_userinfo_answer_is_cached_per_token(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    token = provider.token(None, userinfo={"email": MEMBER})
    for _ in range(3):
        assert (await verifier.principal(token)).email == MEMBER
    assert provider.userinfo_calls == 1
    await verifier.principal(provider.token(None, userinfo={"email": MEMBER}, jti="another"))
    assert provider.userinfo_calls == 2


async def test_userinfo_cache_ends_when_the_token_expires(
    verifier: OidcVerifier, provider: FakeProvider, clock: FakeClock
) -> None:
    token = provider.token(None, expires_in=120, userinfo={"email": MEMBER})
    await verifier.principal(token)
    clock.advance(110)  # longer than the opaque tokens' cache, shorter than the token's life
    await verifier.principal(token)
    assert provider.userinfo_calls == 1
    # Past `exp` on the cache's clock; the wall clock (the token's validity) has not moved.
    clock.advance(15)
    await verifier.principal(token)
    assert provider.userinfo_calls == 2


async def test_cache_keeps_the_most_recently_used_tokens(
    verifier: OidcVerifier, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oidc, "USERINFO_CACHE_MAX", 2)
    first, second, third = (
        provider.token(None, userinfo={"email": MEMBER}, jti=str(n)) for n in range(3)
    )
    for token in (first, second, first, third):  # `second` is now the least recently used
        await verifier.principal(token)
    assert provider.userinfo_calls == 3
    await verifier.principal(first)
    assert provider.userinfo_calls == 3
    await verifier.principal(second)
    assert provider.userinfo_calls == 4


async def test_concurrent_requests_with_one_token_make_one_userinfo_call(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    before = await warm_up(verifier, provider)
    token = provider.token(None, userinfo={"email": MEMBER})
    provider.set_delay(0.3)
    principals = await asyncio.gather(*(verifier.principal(token) for _ in range(20)))
    assert {p.email for p in principals} == {MEMBER}
    assert provider.userinfo_calls == before + 1


async def test_concurrent_requests_share_a_failure_and_the_next_one_retries(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    before = await warm_up(verifier, provider)
    token = provider.token(None, userinfo={"email": MEMBER})
    provider.set_status(500)
    outcomes = await asyncio.gather(
        *(verifier.principal(token) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(o, AppError) and o.status_code == 503 for o in outcomes)
    assert provider.userinfo_calls == before + 1
    provider.set_status(200)
    assert (await verifier.principal(token)).email == MEMBER


# --- the `token` and `userinfo` sources ---------------------------------------------------------


async def test_token_source_never_asks_userinfo(provider: FakeProvider) -> None:
    async with verifier_with(provider, oidc_claims_source="token") as verifier:
        assert (await verifier.principal(provider.token())).email == "user@example.org"
        error = await refusal(verifier, provider.token(None, userinfo={"email": MEMBER}))
        assert (error.status_code, error.message) == (401, "token has no email claim")
    assert provider.userinfo_calls == 0


async def test_userinfo_source_takes_userinfo_values_over_the_token(
    provider: FakeProvider,
) -> None:
    token = provider.token(
        "token@example.org",
        can_communicate_internally=True,
        userinfo={"email": "userinfo@example.org", "can_communicate_internally": False},
    )
    async with verifier_with(provider, oidc_claims_source="userinfo") as verifier:
        principal = await verifier.principal(token)
        assert principal == Principal(kind="user", email="userinfo@example.org")
        await verifier.principal(token)
    assert provider.userinfo_calls == 1


async def test_userinfo_source_gives_a_service_account_without_email_its_access(
    provider: FakeProvider,
) -> None:
    token = provider.token(None, userinfo={"can_communicate_internally": True})
    async with verifier_with(provider, oidc_claims_source="userinfo") as verifier:
        assert (await verifier.principal(token)).sees_all_projects


# --- where userinfo is and when it fails -------------------------------------------------------


async def test_userinfo_endpoint_is_discovered_once(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    for n in range(3):
        await verifier.principal(provider.token(None, userinfo={"email": MEMBER}, jti=str(n)))
    assert provider.discovery_calls == 1
    assert provider.userinfo_calls == 3


async def test_userinfo_url_setting_skips_discovery(provider: FakeProvider) -> None:
    async with verifier_with(provider, oidc_userinfo_url=provider.userinfo_url) as verifier:
        await verifier.principal(provider.token(None, userinfo={"email": MEMBER}))
    assert provider.discovery_calls == 0
    assert provider.userinfo_calls == 1


async def test_token_refused_by_userinfo_is_not_authorized(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    # Signed by the provider, but its userinfo does not know it (a session that ended).
    token = provider.sign({"iss": provider.issuer, "sub": "s", "exp": int(time.time()) + 300})
    error = await refusal(verifier, token)
    assert (error.status_code, error.message) == (401, "not authorized")


async def test_userinfo_about_another_subject_is_not_authorized(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    token = provider.token(None, userinfo={"sub": "someone-else", "email": MEMBER})
    assert (await refusal(verifier, token)).status_code == 401


@pytest.mark.parametrize("outage", ["down", "error", "slow"])
async def test_userinfo_outage_is_unavailable_with_retry_after(
    provider: FakeProvider, outage: str
) -> None:
    async with verifier_with(provider, oidc_timeout_seconds=0.3) as verifier:
        await warm_up(verifier, provider)
        token = provider.token(None, userinfo={"email": MEMBER})
        if outage == "down":
            provider.set_down(True)
        elif outage == "error":
            provider.set_status(502)
        else:
            provider.set_delay(1.0)
        error = await refusal(verifier, token)
    assert (error.status_code, error.message) == (503, "identity provider unavailable")
    assert error.headers and error.headers["Retry-After"]


# --- over HTTP ----------------------------------------------------------------------------------


@asynccontextmanager
async def app_client(
    make_settings: Callable[..., Settings], provider: FakeProvider, **auth: Any
) -> AsyncIterator[httpx.AsyncClient]:
    async with oidc_app(make_settings(auth=oidc_settings(provider, **auth))) as client:
        response = await client.put(f"{PROTECTED}/{MEMBER}", json={"role": 3}, headers=ADMIN)
        assert response.status_code in (200, 201)
        yield client


async def test_member_with_a_full_token_gets_in_without_userinfo(
    make_settings: Callable[..., Settings], provider: FakeProvider
) -> None:
    async with app_client(make_settings, provider) as client:
        token = provider.token(MEMBER, can_communicate_internally=False)
        assert (await client.get(PROTECTED, headers=bearer(token))).status_code == 200
    assert provider.userinfo_calls == 0


async def test_member_whose_token_lacks_email_gets_in_through_userinfo(
    make_settings: Callable[..., Settings], provider: FakeProvider
) -> None:
    async with app_client(make_settings, provider) as client:
        token = provider.token(None, userinfo={"email": MEMBER})
        for _ in range(2):
            response = await client.get(PROTECTED, headers=bearer(token))
            assert response.status_code == 200
            assert [p["email"] for p in response.json()] == [MEMBER]
    assert provider.userinfo_calls == 1


@pytest.mark.parametrize("source", ["auto", "userinfo"])
async def test_service_account_without_email_keeps_its_internal_routes(
    make_settings: Callable[..., Settings], provider: FakeProvider, source: str
) -> None:
    async with app_client(make_settings, provider, oidc_claims_source=source) as client:
        # Its token carries neither claim: userinfo says it is a service account.
        token = provider.token(None, userinfo={"can_communicate_internally": True})
        project = {"uuid": f"svc-{source}", "name": "S"}
        response = await client.post("/projects", json=project, headers=bearer(token))
        assert response.status_code == 201
        for path in (PROTECTED, "/projects/any-other/permissions"):
            assert (await client.get(path, headers=bearer(token))).status_code == 200
    assert provider.userinfo_calls == 1


async def test_userinfo_source_decides_over_the_token_claims(
    make_settings: Callable[..., Settings], provider: FakeProvider
) -> None:
    async with app_client(make_settings, provider, oidc_claims_source="userinfo") as client:
        stranger = provider.token(
            MEMBER, can_communicate_internally=False, userinfo={"email": "x@example.org"}
        )
        assert (await client.get(PROTECTED, headers=bearer(stranger))).status_code == 404
        member = provider.token("x@example.org", userinfo={"email": MEMBER})
        assert (await client.get(PROTECTED, headers=bearer(member))).status_code == 200


async def test_userinfo_down_is_a_503_with_retry_after_not_a_500(
    make_settings: Callable[..., Settings], provider: FakeProvider
) -> None:
    async with app_client(make_settings, provider) as client:
        full = provider.token(MEMBER, can_communicate_internally=False)
        assert (await client.get(PROTECTED, headers=bearer(full))).status_code == 200
        token = provider.token(None, userinfo={"email": MEMBER})
        provider.set_down(True)
        response = await client.get(PROTECTED, headers=bearer(token))
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        assert response.json() == {"message": "identity provider unavailable"}
        provider.set_down(False)
        assert (await client.get(PROTECTED, headers=bearer(token))).status_code == 200


async def test_token_userinfo_refuses_is_a_401(
    make_settings: Callable[..., Settings], provider: FakeProvider
) -> None:
    token = provider.sign({"iss": provider.issuer, "sub": "s", "exp": int(time.time()) + 300})
    async with app_client(make_settings, provider) as client:
        response = await client.get(PROTECTED, headers=bearer(token))
    assert response.status_code == 401
    assert response.json() == {"message": "not authorized"}
