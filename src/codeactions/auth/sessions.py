"""Login sessions (who logged in, until when): in process, or in Redis shared by the replicas.

A session is keyed by the provider's subject and session id and lives as long as its refresh
token. It holds no password and no usable token: only a hash of the refresh token, to tell which
token it was issued with.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

from redis.exceptions import RedisError

from codeactions.config import AuthSettings, RateLimitSettings
from codeactions.errors import Unavailable
from codeactions.parts import Part

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

# Sessions kept at most in process; beyond it the oldest go (their tokens stay valid).
MEMORY_SESSIONS_MAX = 100_000
REDIS_PREFIX = "codeactions:session:"
SESSIONS_DOWN = "session store unavailable"


@dataclass(frozen=True)
class LoginSession:
    subject: str  # the provider's `sub`
    session_id: str  # its `sid` (Keycloak's session), else derived from the refresh token
    email: str
    refresh_token_sha256: str
    expires_at: float  # wall-clock time the refresh token (and so the session) ends


class SessionStore(Protocol):
    async def save(self, session: LoginSession) -> None:
        """Keep `session` until its `expires_at`, replacing one with the same subject and id."""
        ...

    async def get(self, subject: str, session_id: str) -> LoginSession | None: ...

    async def close(self) -> None: ...


def ttl_seconds(session: LoginSession) -> int:
    return max(1, round(session.expires_at - time.time()))


class MemorySessionStore:
    def __init__(self, *, max_sessions: int = MEMORY_SESSIONS_MAX) -> None:
        self._max = max_sessions
        # (subject, session id) -> session; least recently saved first.
        self._sessions: OrderedDict[tuple[str, str], LoginSession] = OrderedDict()

    async def save(self, session: LoginSession) -> None:
        key = (session.subject, session.session_id)
        self._sessions[key] = session
        self._sessions.move_to_end(key)
        now = time.time()
        # The oldest saved are the first to expire, mostly: drop expired ones from the front.
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if oldest.expires_at > now and len(self._sessions) <= self._max:
                break
            self._sessions.popitem(last=False)

    async def get(self, subject: str, session_id: str) -> LoginSession | None:
        session = self._sessions.get((subject, session_id))
        if session is None or session.expires_at <= time.time():
            return None
        return session

    async def close(self) -> None:
        self._sessions.clear()


def redis_key(subject: str, session_id: str) -> str:
    # Quoted: a `:` inside either part cannot make two sessions share a key.
    return f"{REDIS_PREFIX}{quote(subject, safe='')}:{quote(session_id, safe='')}"


class RedisSessionStore:
    """One key per session, expiring with it (Redis drops it, no sweeping)."""

    def __init__(self, url: str) -> None:
        from codeactions.ratelimit.redis import connect

        self._redis: Redis[bytes] = connect(url)

    async def save(self, session: LoginSession) -> None:
        key = redis_key(session.subject, session.session_id)
        try:
            await self._redis.set(key, json.dumps(asdict(session)), ex=ttl_seconds(session))
        except RedisError as exc:
            log.warning("cannot save a login session in Redis: %s", exc)
            raise Unavailable(SESSIONS_DOWN) from exc

    async def get(self, subject: str, session_id: str) -> LoginSession | None:
        try:
            raw = await self._redis.get(redis_key(subject, session_id))
        except RedisError as exc:
            log.warning("cannot read a login session from Redis: %s", exc)
            raise Unavailable(SESSIONS_DOWN) from exc
        if raw is None:
            return None
        try:
            return LoginSession(**json.loads(raw))
        except (ValueError, TypeError):  # written by another version of the service
            return None

    async def close(self) -> None:
        await self._redis.aclose()  # type: ignore[attr-defined]  # stubs predate aclose()


def build_session_store(auth: AuthSettings, ratelimit: RateLimitSettings) -> SessionStore | None:
    """Redis when the service has one (the rate limiter's), else in process; None without login."""
    if not auth.login_enabled:
        return None
    if ratelimit.redis_url:
        return RedisSessionStore(ratelimit.redis_url)
    return MemorySessionStore()


# None: login is off.
SESSION_STORE: Part[SessionStore | None] = Part("session_store")
