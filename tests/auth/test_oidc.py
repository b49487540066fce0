"""OIDC token verification against the provider process: local JWT checks, userinfo for opaque
tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codeactions.auth.oidc import MIN_REFETCH_SECONDS, OidcVerifier
from codeactions.auth.principals import Principal
from codeactions.config import AuthSettings
from codeactions.errors import AppError
from tests.auth.conftest import FakeClock
from tests.auth.provider import FORGER_EC, FORGER_RSA, FakeProvider, oidc_settings


def b64(document: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()


async def rejected(verifier: OidcVerifier, token: str) -> AppError:
    with pytest.raises(AppError) as caught:
        await verifier.principal(token)
    return caught.value


def assert_not_authorized(error: AppError) -> None:
    assert (error.status_code, error.message) == (401, "not authorized")


async def test_valid_token_gives_a_user_with_its_email(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    principal = await verifier.principal(provider.token(" Ana@Example.org "))
    assert principal == Principal(kind="user", email="ana@example.org")
    assert not principal.sees_all_projects


async def test_keys_are_fetched_once_and_cached(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    for _ in range(3):
        await verifier.principal(provider.token())
    assert provider.jwks_calls == 1


async def test_keys_are_refetched_when_the_cache_expires(
    verifier: OidcVerifier, provider: FakeProvider, clock: FakeClock
) -> None:
    await verifier.principal(provider.token())
    clock.advance(AuthSettings().oidc_jwks_cache_seconds + 1)
    await verifier.principal(provider.token())
    assert provider.jwks_calls == 2


async def test_es256_tokens_are_accepted(verifier: OidcVerifier, provider: FakeProvider) -> None:
    provider.publish("ec", "ES256")
    principal = await verifier.principal(provider.token(kid="ec", algorithm="ES256"))
    assert principal.email == "user@example.org"


async def test_expired_token_is_not_authorized(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    assert_not_authorized(await rejected(verifier, provider.token(expires_in=-3600)))


async def test_token_not_yet_valid_is_not_authorized(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    token = provider.token(nbf=int(time.time()) + 3600)
    assert_not_authorized(await rejected(verifier, token))


async def test_token_without_expiry_is_not_authorized(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    token = provider.sign({"iss": provider.issuer, "email": "a@b.c"})
    assert_not_authorized(await rejected(verifier, token))


async def test_token_from_another_issuer_is_not_authorized(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    token = provider.token(issuer="https://evil.example/realms/weni")
    assert_not_authorized(await rejected(verifier, token))


async def test_token_signed_with_another_key_is_not_authorized(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    # Claims the provider's kid but is signed with a key of the forger's.
    assert_not_authorized(await rejected(verifier, provider.token(kid="k1", key=FORGER_RSA)))


async def test_tampered_token_is_not_authorized(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    header, _payload, signature = provider.token().split(".")
    other_payload = provider.token("admin@example.org").split(".")[1]
    assert_not_authorized(await rejected(verifier, f"{header}.{other_payload}.{signature}"))


async def test_unsigned_alg_none_token_is_not_authorized(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    token = jwt.encode(
        {"iss": provider.issuer, "email": "a@b.c", "exp": 2**33},
        "",
        algorithm="none",
        headers={"kid": "k1"},
    )
    assert_not_authorized(await rejected(verifier, token))


async def test_hmac_token_keyed_with_the_public_key_is_not_authorized(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    public_key: Any = jwt.PyJWK(provider.public_jwk("k1")).key
    public_pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # PyJWT refuses to sign this, so the token is built by hand as an attacker would.
    header = b64({"alg": "HS256", "typ": "JWT", "kid": "k1"})
    payload = b64({"iss": provider.issuer, "email": "a@b.c", "exp": 2**33})
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    assert_not_authorized(await rejected(verifier, token))


async def test_rsa_kid_with_ec_algorithm_is_not_authorized(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    assert_not_authorized(
        await rejected(verifier, provider.token(key=FORGER_EC, algorithm="ES256"))
    )


async def test_garbage_jwt_is_not_authorized(verifier: OidcVerifier) -> None:
    assert_not_authorized(await rejected(verifier, "aaa.bbb.ccc"))


async def test_non_ascii_token_is_refused_without_asking_the_provider(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    assert_not_authorized(await rejected(verifier, "tökén"))
    assert provider.userinfo_calls == 0


async def test_rotated_key_is_fetched_when_an_unknown_kid_appears(
    verifier: OidcVerifier, provider: FakeProvider, clock: FakeClock
) -> None:
    await verifier.principal(provider.token(kid="k1"))
    assert provider.jwks_calls == 1
    clock.advance(MIN_REFETCH_SECONDS + 1)
    provider.publish("k2")
    principal = await verifier.principal(provider.token("new@example.org", kid="k2"))
    assert principal.email == "new@example.org"
    assert provider.jwks_calls == 2
    # The old key still works from the refreshed cache.
    await verifier.principal(provider.token(kid="k1"))
    assert provider.jwks_calls == 2


async def test_unknown_kids_cannot_hammer_the_provider(
    verifier: OidcVerifier, provider: FakeProvider, clock: FakeClock
) -> None:
    await verifier.principal(provider.token())
    for i in range(20):
        assert_not_authorized(await rejected(verifier, provider.token(kid=f"bogus{i}")))
    assert provider.jwks_calls == 1
    clock.advance(MIN_REFETCH_SECONDS + 1)
    for i in range(20):
        assert_not_authorized(await rejected(verifier, provider.token(kid=f"again{i}")))
    assert provider.jwks_calls == 2


async def test_provider_down_is_unavailable_not_a_crash(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    provider.set_down(True)
    error = await rejected(verifier, provider.token())
    assert (error.status_code, error.message) == (503, "identity provider unavailable")


async def test_provider_error_status_is_unavailable(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    provider.set_status(502)
    error = await rejected(verifier, provider.token())
    assert error.status_code == 503
    error = await rejected(verifier, "opaque-token")
    assert (error.status_code, error.message) == (503, "identity provider unavailable")


async def test_known_keys_keep_working_while_the_provider_is_down(
    verifier: OidcVerifier, provider: FakeProvider, clock: FakeClock
) -> None:
    # Tokens with both identity claims: the `auto` source needs nothing else from the provider.
    await verifier.principal(provider.token(can_communicate_internally=False))
    clock.advance(AuthSettings().oidc_jwks_cache_seconds + 1)
    provider.set_down(True)
    principal = await verifier.principal(provider.token(can_communicate_internally=False))
    assert principal.email == "user@example.org"


async def test_provider_recovers_after_an_outage(
    verifier: OidcVerifier, provider: FakeProvider, clock: FakeClock
) -> None:
    provider.set_down(True)
    assert (await rejected(verifier, provider.token())).status_code == 503
    provider.set_down(False)
    clock.advance(MIN_REFETCH_SECONDS + 1)
    assert (await verifier.principal(provider.token())).kind == "user"


async def test_opaque_token_is_checked_with_userinfo_and_cached(
    verifier: OidcVerifier, provider: FakeProvider, clock: FakeClock
) -> None:
    provider.set_userinfo("opaque-1", {"email": "Opaque@Example.org", "sub": "x"})
    first = await verifier.principal("opaque-1")
    second = await verifier.principal("opaque-1")
    assert first == second == Principal(kind="user", email="opaque@example.org")
    assert provider.userinfo_calls == 1
    clock.advance(AuthSettings().oidc_userinfo_cache_seconds + 1)
    await verifier.principal("opaque-1")
    assert provider.userinfo_calls == 2


async def test_opaque_token_refused_by_userinfo_is_not_authorized(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    assert_not_authorized(await rejected(verifier, "unknown-opaque"))
    assert provider.jwks_calls == 0


async def test_userinfo_unreachable_is_unavailable(
    verifier: OidcVerifier, provider: FakeProvider
) -> None:
    provider.set_down(True)
    error = await rejected(verifier, "opaque-1")
    assert (error.status_code, error.message) == (503, "identity provider unavailable")


@pytest.mark.parametrize("flag", [True, "true", "TRUE"])
async def test_internal_claim_gives_a_service_account_on_all_projects(
    verifier: OidcVerifier, provider: FakeProvider, flag: Any
) -> None:
    principal = await verifier.principal(provider.token(None, can_communicate_internally=flag))
    assert principal.kind == "internal"
    assert principal.sees_all_projects
    assert provider.userinfo_calls == 0  # the token says it all, as before userinfo was asked


@pytest.mark.parametrize("flag", [False, "false", 1, "yes", None])
async def test_other_internal_claim_values_give_a_plain_user(
    verifier: OidcVerifier, provider: FakeProvider, flag: Any
) -> None:
    principal = await verifier.principal(provider.token(can_communicate_internally=flag))
    assert principal.kind == "user"


async def test_internal_claim_via_userinfo(verifier: OidcVerifier, provider: FakeProvider) -> None:
    provider.set_userinfo("svc", {"can_communicate_internally": True})
    assert (await verifier.principal("svc")).kind == "internal"


@pytest.mark.parametrize("email", [None, "", "   ", 42])
async def test_token_without_email_is_refused_with_a_message(
    verifier: OidcVerifier, provider: FakeProvider, email: Any
) -> None:
    error = await rejected(verifier, provider.token(email))
    assert (error.status_code, error.message) == (401, "token has no email claim")


async def test_audience_is_checked_when_configured(provider: FakeProvider) -> None:
    verifier = OidcVerifier(oidc_settings(provider, oidc_audience="code-actions"))
    try:
        assert (await verifier.principal(provider.token(aud="code-actions"))).kind == "user"
        assert_not_authorized(await rejected(verifier, provider.token(aud="account")))
        assert_not_authorized(await rejected(verifier, provider.token()))
    finally:
        await verifier.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    header=st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit", "jku"]),
        json_values | st.sampled_from(["RS256", "ES256", "HS256", "none", "k1"]),
    ),
    payload=st.dictionaries(st.sampled_from(["iss", "exp", "email", "nbf", "iat"]), json_values),
    signature=st.from_regex(r"[A-Za-z0-9_-]{0,50}", fullmatch=True),
    raw=st.from_regex(r"[!-~]{1,60}", fullmatch=True),
)
async def test_arbitrary_tokens_are_refused_never_crash(
    verifier: OidcVerifier,
    header: dict[str, Any],
    payload: dict[str, Any],
    signature: str,
    raw: str,
) -> None:
    for token in (f"{b64(header)}.{b64(payload)}.{signature}", raw):
        with pytest.raises(AppError) as caught:
            await verifier.principal(token)
        assert caught.value.status_code == 401
