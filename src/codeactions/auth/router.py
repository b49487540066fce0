"""Login routes: /login and /refresh hand out the identity provider's tokens (public: they are how
a caller gets credentials)."""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Response

from codeactions.auth import login as service
from codeactions.auth.login import TOKEN_CLIENT, TokenClient, Tokens
from codeactions.auth.schemas import LoginIn, RefreshIn, TokensOut
from codeactions.auth.sessions import SESSION_STORE, SessionStore
from codeactions.errors import NotFound
from codeactions.ops.docs import error_responses
from codeactions.parts import part

router = APIRouter(tags=["auth"])

T = TypeVar("T")
TokenClientDep = Annotated[TokenClient | None, Depends(part(TOKEN_CLIENT))]
SessionStoreDep = Annotated[SessionStore | None, Depends(part(SESSION_STORE))]

_BAD_BODY = (400, "Invalid body or field: the message says which")
_OFF = (404, "Login is off: OIDC or `CODEACTIONS_OIDC_CLIENT_ID` is not configured")
_UNAVAILABLE = (
    503,
    "The identity provider (or the session store) cannot serve now, or refuses the service's "
    "own client (`CODEACTIONS_OIDC_CLIENT_SECRET`); retry after `Retry-After`",
)
# RFC 6749 5.1: responses holding tokens are not cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _configured(value: T | None) -> T:
    if value is None:
        raise NotFound("login is not configured")
    return value


def _answer(tokens: Tokens, response: Response) -> TokensOut:
    response.headers.update(NO_STORE)
    return TokensOut(
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_in=tokens.expires_in,
    )


@router.post(
    "/login",
    summary="Log in with a username and password at the identity provider",
    description="The provider's password grant, through the service's OIDC client. The access "
    "token authenticates every route (`Authorization: Bearer ...`).",
    responses=error_responses(_BAD_BODY, (401, "Wrong username or password"), _OFF, _UNAVAILABLE),
)
async def login(
    body: LoginIn, tokens: TokenClientDep, sessions: SessionStoreDep, response: Response
) -> TokensOut:
    issued = await service.log_in(
        tokens=_configured(tokens),
        sessions=_configured(sessions),
        username=body.username,
        password=body.password,
    )
    return _answer(issued, response)


@router.post(
    "/refresh",
    summary="New tokens for a refresh token",
    description="The provider's refresh_token grant, through the service's OIDC client.",
    responses=error_responses(
        _BAD_BODY, (401, "Invalid, expired or revoked refresh token"), _OFF, _UNAVAILABLE
    ),
)
async def refresh(
    body: RefreshIn, tokens: TokenClientDep, sessions: SessionStoreDep, response: Response
) -> TokensOut:
    issued = await service.refresh(
        tokens=_configured(tokens), sessions=_configured(sessions), refresh_token=body.refresh_token
    )
    return _answer(issued, response)
