"""OIDC bearer tokens: JWTs verified locally against the provider's JWKS, opaque ones via userinfo;
who a JWT's caller is comes from its claims or the provider's userinfo answer."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import httpx
import jwt

from codeactions.auth.principals import Principal, normalize_email
from codeactions.config import AuthSettings
from codeactions.errors import Unauthorized, Unavailable

log = logging.getLogger(__name__)

# Asymmetric algorithms only: "none" and HMAC would let anyone holding the public key sign.
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS = frozenset({"ES256", "ES384", "ES512"})
ALLOWED_ALGORITHMS = RSA_ALGORITHMS | EC_ALGORITHMS

# A token whose `kid` is unknown may mean the provider rotated its keys; refetch the JWKS for it,
# but not more often than this, so tokens with made-up kids cannot hammer the provider.
MIN_REFETCH_SECONDS = 5.0
# Tolerated clock difference with the provider for exp/nbf/iat.
LEEWAY_SECONDS = 30
# Userinfo answers kept at most; beyond it the least recently used go.
USERINFO_CACHE_MAX = 4096
# The claims that say who a caller is; the rest of a userinfo answer is not kept.
IDENTITY_CLAIMS = ("email", "can_communicate_internally")

_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# What may travel in an HTTP header to the provider; anything else cannot be a valid token.
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")

NOT_AUTHORIZED = "not authorized"
PROVIDER_DOWN = "identity provider unavailable"


class ProviderError(Exception):
    """The identity provider could not be reached or answered nonsense."""


async def get_json(
    http: httpx.AsyncClient, url: str, *, token: str | None = None
) -> dict[str, Any]:
    """The provider's JSON object at `url`; ProviderError when it cannot say, Unauthorized when it
    refuses the bearer `token`."""
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = await http.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise ProviderError(f"{url}: {type(exc).__name__}") from exc
    if response.status_code in (400, 401, 403) and token is not None:
        raise Unauthorized(NOT_AUTHORIZED)
    if response.status_code != 200:
        raise ProviderError(f"{url} answered {response.status_code}")
    try:
        document = response.json()
    except ValueError as exc:
        raise ProviderError(f"{url} answered invalid JSON") from exc
    if not isinstance(document, dict):
        raise ProviderError(f"{url} answered JSON that is not an object")
    return document


def endpoint(document: Mapping[str, Any], name: str) -> str:
    """An endpoint URL the provider's discovery document advertises."""
    url = document.get(name)
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise ProviderError(f"the discovery document has no {name}")
    return url


def is_internal(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def has_claim(claims: Mapping[str, Any], name: str) -> bool:
    """Whether the claim is there with a value (an empty or blank string counts as missing)."""
    value = claims.get(name)
    return bool(value.strip()) if isinstance(value, str) else value is not None


def needs_userinfo(claims: Mapping[str, Any]) -> bool:
    """Whether a token's own claims cannot say who the caller is (the `auto` source).

    A token already saying `can_communicate_internally: true` is a service account whatever its
    email (a service account's email is never looked at), so it is served without the provider,
    as it was before userinfo was consulted.
    """
    if is_internal(claims.get("can_communicate_internally")):
        return False
    return not all(has_claim(claims, name) for name in IDENTITY_CLAIMS)


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    """Service accounts (`can_communicate_internally`) see every project; users are their email."""
    email = claims.get("email")
    email = normalize_email(email) if isinstance(email, str) else ""
    if is_internal(claims.get("can_communicate_internally")):
        return Principal(kind="internal", email=email)
    if not email:
        raise Unauthorized("token has no email claim")
    return Principal(kind="user", email=email)


class OidcVerifier:
    """Turns a bearer token into a Principal, or raises 401 (bad token) / 503 (provider down)."""

    def __init__(
        self,
        settings: AuthSettings,
        http: httpx.AsyncClient | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=settings.oidc_timeout_seconds)
        self._clock = clock
        self._keys: dict[str, tuple[jwt.PyJWK, str | None]] = {}
        self._keys_fetched_at: float | None = None
        self._keys_attempted_at = float("-inf")
        self._provider_failing = False
        self._keys_lock = asyncio.Lock()
        self._discovered_userinfo_url: str | None = None
        self._discovery_lock = asyncio.Lock()
        # sha256(token) -> (deadline on `clock`, identity claims); least recently used first.
        self._userinfo_cache: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        # sha256(token) -> the userinfo call under way for it, which concurrent requests share.
        self._userinfo_flights: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def close(self) -> None:
        for flight in list(self._userinfo_flights.values()):
            flight.cancel()
        if self._owns_http:
            await self._http.aclose()

    async def principal(self, token: str) -> Principal:
        if not _TOKEN_CHARS.fullmatch(token):
            raise Unauthorized(NOT_AUTHORIZED)
        if not _JWT_SHAPE.fullmatch(token):
            ttl = self._settings.oidc_userinfo_cache_seconds
            return principal_from_claims(await self._userinfo(token, until=self._clock() + ttl))
        claims = await self._verified_claims(token)
        source = self._settings.oidc_claims_source
        if source == "token" or (source == "auto" and not needs_userinfo(claims)):
            return principal_from_claims(claims)
        answer = await self._userinfo(token, until=self._expiry(claims))
        subject = claims.get("sub")
        if isinstance(subject, str) and answer.get("sub", subject) != subject:
            log.warning("userinfo answered for another subject than the token's")
            raise Unauthorized(NOT_AUTHORIZED)
        if source == "userinfo":
            return principal_from_claims(answer)
        # `auto`: what the token says stands; userinfo fills in what it lacks.
        present = {name: claims[name] for name in IDENTITY_CLAIMS if has_claim(claims, name)}
        return principal_from_claims({**answer, **present})

    def _expiry(self, claims: Mapping[str, Any]) -> float:
        """The token's `exp` (wall-clock time) on this verifier's clock."""
        return self._clock() + float(claims["exp"]) - time.time()

    # --- JWTs -----------------------------------------------------------------------------

    async def _verified_claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized(NOT_AUTHORIZED) from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise Unauthorized(NOT_AUTHORIZED)
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthorized(NOT_AUTHORIZED)
        key, key_alg = await self._signing_key(kid or "")
        if key_alg is not None and key_alg != alg:
            raise Unauthorized(NOT_AUTHORIZED)
        if key.key_type != ("RSA" if alg in RSA_ALGORITHMS else "EC"):
            raise Unauthorized(NOT_AUTHORIZED)
        audience = self._settings.oidc_audience or None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                issuer=self._settings.issuer,
                audience=audience,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss"], "verify_aud": audience is not None},
            )
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            log.info("rejected OIDC token: %s", exc)
            raise Unauthorized(NOT_AUTHORIZED) from exc
        return claims

    async def _signing_key(self, kid: str) -> tuple[jwt.PyJWK, str | None]:
        known = self._fresh_key(kid)
        if known is not None:
            return known
        async with self._keys_lock:
            # Another request may have refreshed the keys while this one waited.
            known = self._fresh_key(kid)
            if known is not None:
                return known
            now = self._clock()
            stale = not self._is_fresh(now)
            recently_tried = now - self._keys_attempted_at < MIN_REFETCH_SECONDS
            if not recently_tried or (stale and not self._provider_failing):
                self._keys_attempted_at = now
                try:
                    self._keys = await self._fetch_keys()
                    self._keys_fetched_at = now
                    self._provider_failing = False
                except ProviderError as exc:
                    log.warning("cannot fetch the OIDC keys: %s", exc)
                    self._provider_failing = True
            # After a failed refresh, keys still known from before keep working.
            if kid in self._keys:
                return self._keys[kid]
            if self._provider_failing:
                raise Unavailable(PROVIDER_DOWN)
            raise Unauthorized(NOT_AUTHORIZED)

    def _is_fresh(self, now: float) -> bool:
        fetched = self._keys_fetched_at
        return fetched is not None and now - fetched < self._settings.oidc_jwks_cache_seconds

    def _fresh_key(self, kid: str) -> tuple[jwt.PyJWK, str | None] | None:
        if self._is_fresh(self._clock()):
            return self._keys.get(kid)
        return None

    async def _fetch_keys(self) -> dict[str, tuple[jwt.PyJWK, str | None]]:
        document = await get_json(self._http, self._settings.jwks_url)
        entries = document.get("keys")
        if not isinstance(entries, list):
            raise ProviderError("the JWKS has no `keys` list")
        keys: dict[str, tuple[jwt.PyJWK, str | None]] = {}
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue  # encryption keys sit in the same set
            if entry.get("kty") not in ("RSA", "EC"):
                continue
            alg = entry.get("alg")
            if alg is not None and alg not in ALLOWED_ALGORITHMS:
                continue
            try:
                key = jwt.PyJWK(entry)
            except (jwt.PyJWTError, ValueError, TypeError, KeyError):
                continue
            keys[str(entry.get("kid") or "")] = (key, alg)
        return keys

    # --- userinfo -----------------------------------------------------------------------

    async def _userinfo(self, token: str, *, until: float) -> dict[str, Any]:
        """The provider's userinfo answer for the token, cached until `until`; one call at a time."""
        # Keyed by a hash so neither the cache nor the calls under way hold usable tokens.
        digest = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cached_userinfo(digest)
        if cached is not None:
            return cached
        flight = self._userinfo_flights.get(digest)
        if flight is None:
            flight = asyncio.ensure_future(self._fetch_userinfo(token, digest, until))
            self._userinfo_flights[digest] = flight
            flight.add_done_callback(partial(self._landed, digest))
        # Shielded: a caller that goes away does not cancel the call the others wait for.
        return await asyncio.shield(flight)

    def _landed(self, digest: str, flight: asyncio.Future[dict[str, Any]]) -> None:
        self._userinfo_flights.pop(digest, None)
        if not flight.cancelled():
            flight.exception()  # marks it read: callers that all left must not leave it unread

    def _cached_userinfo(self, digest: str) -> dict[str, Any] | None:
        entry = self._userinfo_cache.get(digest)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._userinfo_cache[digest]
            return None
        self._userinfo_cache.move_to_end(digest)
        return entry[1]

    async def _fetch_userinfo(self, token: str, digest: str, until: float) -> dict[str, Any]:
        try:
            url = await self._userinfo_url()
            answer = await get_json(self._http, url, token=token)
        except ProviderError as exc:
            log.warning("OIDC userinfo failed: %s", exc)
            raise Unavailable(PROVIDER_DOWN) from exc
        identity = {name: answer[name] for name in ("sub", *IDENTITY_CLAIMS) if name in answer}
        if until > self._clock():
            cache = self._userinfo_cache
            cache[digest] = (until, identity)
            cache.move_to_end(digest)
            while len(cache) > USERINFO_CACHE_MAX:
                cache.popitem(last=False)
        return identity

    async def _userinfo_url(self) -> str:
        """The configured URL, else the one the provider's discovery document advertises."""
        if self._settings.oidc_userinfo_url:
            return self._settings.oidc_userinfo_url
        async with self._discovery_lock:
            if self._discovered_userinfo_url is None:
                document = await get_json(self._http, self._settings.discovery_url)
                self._discovered_userinfo_url = endpoint(document, "userinfo_endpoint")
            return self._discovered_userinfo_url
