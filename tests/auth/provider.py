"""The OIDC provider the tests run against: the handle on its process (`provider_server`), started
once per session, and the fixtures that give each test a reset provider and an app trusting it."""

from __future__ import annotations

import atexit
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from codeactions.config import AuthSettings, Settings
from codeactions.main import create_app
from tests.auth.provider_server import REALM_PATH, TOKEN_PATH, USERINFO_PATH, PrivateKey
from tests.conftest import ADMIN_TOKEN

REPO_ROOT = Path(__file__).resolve().parents[2]

# Keys the provider never saw (a forger's), for tokens the tests forge themselves.
FORGER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
FORGER_EC = ec.generate_private_key(ec.SECP256R1())


class FakeProvider:
    """Drives the provider process: tokens it signs, what its userinfo says, its calls, outages."""

    def __init__(self, service_port: int, control_port: int) -> None:
        self.url = f"http://127.0.0.1:{service_port}"
        self.issuer = f"{self.url}{REALM_PATH}"
        self.userinfo_url = f"{self.url}{USERINFO_PATH}"
        self.token_url = f"{self.url}{TOKEN_PATH}"
        self._control = httpx.Client(base_url=f"http://127.0.0.1:{control_port}", timeout=30)

    def _post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self._control.post(path, json=body or {})
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def _calls(self, name: str) -> int:
        return int(self._control.get("/state").json()[name])

    def reset(self) -> None:
        self._post("/reset")

    @property
    def discovery_calls(self) -> int:
        return self._calls("discovery")

    @property
    def jwks_calls(self) -> int:
        return self._calls("jwks")

    @property
    def userinfo_calls(self) -> int:
        return self._calls("userinfo")

    @property
    def token_calls(self) -> int:
        return self._calls("token")

    @property
    def last_client_auth(self) -> str:
        """How the last token request authenticated its client: `client_secret_basic`,
        `client_secret_post` or `none`."""
        return str(self._control.get("/state").json()["last_client_auth"])

    def add_user(
        self, username: str, password: str, *, subject: str | None = None, **claims: Any
    ) -> str:
        """Register a user the password grant accepts; its tokens carry `claims` (e.g. `email`).
        Returns its subject (`sub`)."""
        subject = subject or f"user-{username}"
        body = {"username": username, "password": password, "subject": subject, "claims": claims}
        self._post("/users", body)
        return subject

    def add_client(self, client_id: str, secret: str | None = None) -> None:
        """Register a client of the token endpoint: confidential with a secret, else public."""
        self._post("/clients", {"client_id": client_id, "secret": secret})

    def set_client_auth_methods(self, methods: list[str]) -> None:
        """The client authentications discovery advertises and the token endpoint accepts."""
        self._post("/mode", {"auth_methods": methods})

    def set_lifetimes(self, *, access_seconds: int, refresh_seconds: int) -> None:
        """How long the tokens it issues from now on live."""
        self._post("/mode", {"access_seconds": access_seconds, "refresh_seconds": refresh_seconds})

    def revoke(self, session_id: str) -> None:
        """End a session (a logout at the provider): its refresh tokens stop working."""
        self._post("/revoke", {"session_id": session_id})

    def set_down(self, down: bool) -> None:
        """Close (or reopen) the provider's port: calls to it are refused."""
        self._post("/mode", {"down": down})

    def set_status(self, status: int) -> None:
        """Make every endpoint answer this status (200: normal)."""
        self._post("/mode", {"status": status})

    def set_delay(self, seconds: float) -> None:
        """Make every endpoint answer after this long."""
        self._post("/mode", {"delay": seconds})

    def publish(self, kid: str, algorithm: str = "RS256") -> None:
        """Have the provider sign with (and publish) one more key."""
        self._post("/publish", {"kid": kid, "algorithm": algorithm})

    def public_jwk(self, kid: str) -> dict[str, Any]:
        keys: list[dict[str, Any]] = self._control.get("/keys").json()["keys"]
        return next(key for key in keys if key["kid"] == kid)

    def set_userinfo(self, token: str, claims: dict[str, Any]) -> None:
        """What userinfo answers for this bearer token (an opaque one, or any other)."""
        self._post("/userinfo", {"token": token, "claims": claims})

    def sign(self, payload: dict[str, Any], *, kid: str = "k1", algorithm: str = "RS256") -> str:
        """The payload as it is, signed by the provider (userinfo does not know the token)."""
        return str(
            self._post(
                "/sign", {"payload": payload, "kid": kid, "algorithm": algorithm, "userinfo": None}
            )["token"]
        )

    def token(
        self,
        email: str | None = "user@example.org",
        *,
        kid: str = "k1",
        key: PrivateKey | None = None,
        algorithm: str = "RS256",
        issuer: str | None = None,
        expires_in: int = 300,
        userinfo: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """An access token the provider issues; its userinfo answer is `userinfo` (default: the
        token's own `email` and `can_communicate_internally`). With `key`, a token the tests forge
        with a key of their own, which the provider never issued."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": issuer or self.issuer,
            "sub": "subject",
            "aud": "account",
            "iat": now,
            "exp": now + expires_in,
            **claims,
        }
        if email is not None:
            payload["email"] = email
        if key is not None:
            return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid})
        if userinfo is None:
            userinfo = {
                name: payload[name]
                for name in ("email", "can_communicate_internally")
                if name in payload
            }
        answer = {"sub": payload["sub"], **userinfo}
        body = {"payload": payload, "kid": kid, "algorithm": algorithm, "userinfo": answer}
        return str(self._post("/sign", body)["token"])


@cache
def provider_process() -> FakeProvider:
    """The provider, started once per test session and stopped when the session ends."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.auth.provider_server"],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"the OIDC provider process did not start (exit {process.wait()})")
    ports = json.loads(line)
    atexit.register(_stop, process)
    return FakeProvider(ports["service"], ports["control"])


def _stop(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.close()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()


def oidc_settings(provider: FakeProvider, **overrides: Any) -> AuthSettings:
    return AuthSettings(
        token=ADMIN_TOKEN, oidc_enabled=True, oidc_issuer=provider.issuer, **overrides
    )


@asynccontextmanager
async def oidc_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A started app (its verifier talks to the provider process); yields a client for it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
def provider() -> FakeProvider:
    handle = provider_process()
    handle.reset()
    return handle


@pytest.fixture
async def oidc_client(
    make_settings: Callable[..., Settings], provider: FakeProvider
) -> AsyncIterator[httpx.AsyncClient]:
    async with oidc_app(make_settings(auth=oidc_settings(provider))) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
