"""A fake OIDC provider (JWKS and userinfo over httpx.MockTransport) and apps that trust it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI

from codeactions.auth.oidc import OidcVerifier
from codeactions.config import AuthSettings, Settings
from codeactions.main import create_app
from tests.conftest import ADMIN_TOKEN

ISSUER = "https://id.example.test/realms/weni"
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

# Key generation is the slow part; tests share these.
_RSA = {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048) for kid in ("k1", "k2")}
_EC = ec.generate_private_key(ec.SECP256R1())


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeProvider:
    """Serves a JWKS and a userinfo endpoint, counting calls; `down` makes it unreachable."""

    def __init__(self) -> None:
        self.keys: dict[str, PrivateKey] = {"k1": _RSA["k1"]}
        self.jwks_calls = 0
        self.userinfo_calls = 0
        self.down = False
        self.status = 200  # what the provider answers when not down
        self.userinfo: dict[str, dict[str, Any]] = {}  # opaque token -> claims

    def publish(self, kid: str, key: PrivateKey | None = None) -> PrivateKey:
        self.keys[kid] = key or _RSA.get(kid) or _RSA["k2"]
        return self.keys[kid]

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self.keys.items():
            algorithm: Any = (
                jwt.algorithms.RSAAlgorithm
                if isinstance(key, rsa.RSAPrivateKey)
                else jwt.algorithms.ECAlgorithm
            )
            jwk = algorithm.to_jwk(key.public_key(), as_dict=True)
            jwk.update(kid=kid, use="sig")
            keys.append(jwk)
        # Providers list encryption keys too; they must be ignored.
        keys.append({"kid": "enc", "kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"})
        return {"keys": keys}

    def token(
        self,
        email: str | None = "user@example.org",
        *,
        kid: str = "k1",
        key: PrivateKey | None = None,
        algorithm: str = "RS256",
        issuer: str = ISSUER,
        expires_in: int = 300,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": issuer,
            "sub": "subject",
            "aud": "account",
            "iat": now,
            "exp": now + expires_in,
            **claims,
        }
        if email is not None:
            payload["email"] = email
        signing_key = key or self.keys.get(kid) or _RSA["k1"]
        return jwt.encode(payload, signing_key, algorithm=algorithm, headers={"kid": kid})

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path.endswith("/certs"):
            self.jwks_calls += 1
            if self.status != 200:
                return httpx.Response(self.status, text="oops")
            return httpx.Response(200, json=self.jwks())
        if request.url.path.endswith("/userinfo"):
            self.userinfo_calls += 1
            if self.status != 200:
                return httpx.Response(self.status, text="oops")
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            claims = self.userinfo.get(token)
            if claims is None:
                return httpx.Response(401, json={"error": "invalid_token"})
            return httpx.Response(200, json=claims)
        return httpx.Response(404)

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


def oidc_settings(**overrides: Any) -> AuthSettings:
    return AuthSettings(token=ADMIN_TOKEN, oidc_enabled=True, oidc_issuer=ISSUER, **overrides)


@asynccontextmanager
async def oidc_app(settings: Settings, provider: FakeProvider) -> AsyncIterator[httpx.AsyncClient]:
    """A started app whose OIDC verifier talks to the fake provider; yields a client for it."""
    app: FastAPI = create_app(settings)
    async with app.router.lifespan_context(app):
        http = provider.http()
        verifier = OidcVerifier(settings.auth, http=http)
        app.state.oidc = verifier
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client
        finally:
            await verifier.close()
            await http.aclose()


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
async def oidc_client(
    make_settings: Callable[..., Settings], provider: FakeProvider
) -> AsyncIterator[httpx.AsyncClient]:
    async with oidc_app(make_settings(auth=oidc_settings()), provider) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
