"""Login through the provider's token endpoint (RFC 6749): the password grant of `POST /login`, the
refresh_token grant of `POST /refresh`, and the session each one records."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote_plus

import httpx
import jwt

from codeactions.auth.oidc import PROVIDER_DOWN, ProviderError, endpoint, get_json
from codeactions.auth.sessions import LoginSession, SessionStore, build_session_store
from codeactions.config import AuthSettings, Settings
from codeactions.errors import Unauthorized, Unavailable
from codeactions.parts import Part

log = logging.getLogger(__name__)

# A session whose refresh token says nothing of its lifetime (or lives forever, as Keycloak's
# offline tokens: `refresh_expires_in: 0`) is kept this long.
SESSION_MAX_SECONDS = 30 * 24 * 3600
CLIENT_REFUSED = "identity provider refused the service's client"

ClientAuth = Literal["client_secret_basic", "client_secret_post"]


@dataclass(frozen=True)
class Tokens:
    """What the token endpoint issued."""

    access_token: str
    refresh_token: str
    expires_in: int
    # Keycloak says it; other providers may not (then the refresh token's own `exp` is read).
    refresh_expires_in: int | None = None


def _seconds(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdecimal():
        return int(value)
    return None


def _unverified_claims(token: str) -> dict[str, Any]:
    """A token's claims, read without checking its signature: it came from the provider itself,
    over the connection this service opened, in answer to this service's request."""
    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims


class TokenClient:
    """The provider's token endpoint, as this service's client (`CODEACTIONS_OIDC_CLIENT_ID`).

    The endpoint and the client authentication it accepts come from the discovery document. A
    refused grant (`invalid_grant`) is the caller's 401; anything else the provider refuses is the
    service's configuration (a wrong secret, a client without the password grant), not the
    caller's fault: 503, as when the provider is down, and an error in the log.
    """

    def __init__(self, settings: AuthSettings, http: httpx.AsyncClient | None = None) -> None:
        self._settings = settings
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=settings.oidc_timeout_seconds)
        self._endpoint: tuple[str, ClientAuth] | None = None
        self._discovery_lock = asyncio.Lock()

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def password_grant(self, username: str, password: str) -> Tokens:
        form = {"grant_type": "password", "username": username, "password": password}
        return await self._grant(form, refused="invalid username or password")

    async def refresh_grant(self, refresh_token: str) -> Tokens:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        tokens = await self._grant(form, refused="invalid refresh token")
        # RFC 6749 6: a provider that issues no new refresh token keeps the one it was sent.
        if not tokens.refresh_token:
            tokens = Tokens(
                tokens.access_token, refresh_token, tokens.expires_in, tokens.refresh_expires_in
            )
        return tokens

    async def _grant(self, form: dict[str, str], *, refused: str) -> Tokens:
        url, auth = await self._token_endpoint()
        headers = {"Accept": "application/json"}
        client_id, secret = self._settings.oidc_client_id, self._settings.oidc_client_secret
        if secret and auth == "client_secret_basic":
            # RFC 6749 2.3.1: both parts form-encoded, then base64.
            pair = f"{quote_plus(client_id)}:{quote_plus(secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif secret:
            form = {**form, "client_id": client_id, "client_secret": secret}
        else:  # a public client names itself
            form = {**form, "client_id": client_id}
        try:
            response = await self._http.post(url, data=form, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("OIDC token endpoint failed: %s: %s", url, type(exc).__name__)
            raise Unavailable(PROVIDER_DOWN) from exc
        try:
            document = response.json()
        except ValueError:
            document = None
        if not isinstance(document, dict):
            log.warning(
                "OIDC token endpoint answered %s without a JSON object", response.status_code
            )
            raise Unavailable(PROVIDER_DOWN)
        if response.status_code == 200:
            return self._issued(document, refresh=form["grant_type"] == "refresh_token")
        error = document.get("error")
        if error == "invalid_grant":
            raise Unauthorized(refused)
        if response.status_code >= 500 or not isinstance(error, str):
            log.warning("OIDC token endpoint answered %s", response.status_code)
            raise Unavailable(PROVIDER_DOWN)
        log.error(
            "the identity provider refused the login client (%s %s: %s): check "
            "CODEACTIONS_OIDC_CLIENT_ID and CODEACTIONS_OIDC_CLIENT_SECRET",
            response.status_code,
            error,
            str(document.get("error_description", ""))[:200],
        )
        raise Unavailable(CLIENT_REFUSED)

    @staticmethod
    def _issued(document: dict[str, Any], *, refresh: bool) -> Tokens:
        access, refresh_token = document.get("access_token"), document.get("refresh_token", "")
        expires_in = _seconds(document.get("expires_in"))
        if (
            not isinstance(access, str)
            or not access
            or expires_in is None
            or not isinstance(refresh_token, str)
            or not (refresh_token or refresh)
        ):
            log.warning("OIDC token endpoint answered 200 without the tokens")
            raise Unavailable(PROVIDER_DOWN)
        return Tokens(
            access, refresh_token, expires_in, _seconds(document.get("refresh_expires_in"))
        )

    async def _token_endpoint(self) -> tuple[str, ClientAuth]:
        """The token endpoint and how to authenticate there, from the discovery document (read
        once; a failed read is tried again by the next login)."""
        async with self._discovery_lock:
            if self._endpoint is None:
                self._endpoint = await self._discover()
            return self._endpoint

    async def _discover(self) -> tuple[str, ClientAuth]:
        try:
            document = await get_json(self._http, self._settings.discovery_url)
            url = endpoint(document, "token_endpoint")
        except ProviderError as exc:
            log.warning("OIDC discovery failed: %s", exc)
            raise Unavailable(PROVIDER_DOWN) from exc
        # RFC 8414: a provider that lists no methods accepts client_secret_basic.
        methods = document.get("token_endpoint_auth_methods_supported")
        if (
            isinstance(methods, list)
            and "client_secret_basic" not in methods
            and "client_secret_post" in methods
        ):
            return url, "client_secret_post"
        return url, "client_secret_basic"


def session_of(tokens: Tokens) -> LoginSession:
    """The session the tokens belong to, as their claims name it."""
    claims = _unverified_claims(tokens.access_token)
    digest = hashlib.sha256(tokens.refresh_token.encode()).hexdigest()
    subject, email = claims.get("sub"), claims.get("email")
    session_id = claims.get("sid") or claims.get("session_state")
    lifetime = tokens.refresh_expires_in
    if not lifetime:
        expiry = _unverified_claims(tokens.refresh_token).get("exp")
        lifetime = int(expiry - time.time()) if isinstance(expiry, int | float) else None
    if not lifetime or lifetime <= 0:
        lifetime = SESSION_MAX_SECONDS
    return LoginSession(
        subject=subject if isinstance(subject, str) else "",
        # Without a session claim, the refresh token names the session (a refresh starts a new one).
        session_id=session_id if isinstance(session_id, str) and session_id else digest[:32],
        email=email if isinstance(email, str) else "",
        refresh_token_sha256=digest,
        expires_at=time.time() + min(lifetime, SESSION_MAX_SECONDS),
    )


async def log_in(
    *, tokens: TokenClient, sessions: SessionStore, username: str, password: str
) -> Tokens:
    """The provider's tokens for these credentials (401 if it refuses them), session recorded."""
    issued = await tokens.password_grant(username, password)
    await sessions.save(session_of(issued))
    return issued


async def refresh(*, tokens: TokenClient, sessions: SessionStore, refresh_token: str) -> Tokens:
    """New tokens for a refresh token (401 if the provider refuses it), session extended."""
    issued = await tokens.refresh_grant(refresh_token)
    await sessions.save(session_of(issued))
    return issued


def start_login(
    settings: Settings, stack: AsyncExitStack
) -> tuple[TokenClient | None, SessionStore | None]:
    """The token client and the session store, closed by `stack`; both None when login is off."""
    sessions = build_session_store(settings.auth, settings.ratelimit)
    if sessions is None:
        return None, None
    stack.push_async_callback(sessions.close)
    client = TokenClient(settings.auth)
    stack.push_async_callback(client.close)
    return client, sessions


# None: login is off (OIDC off, or no client id).
TOKEN_CLIENT: Part[TokenClient | None] = Part("token_client")
