"""FastAPI dependencies: a route's signature says who may call it."""

from __future__ import annotations

import hmac
from typing import Annotated, Protocol

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from codeactions.auth.principals import Principal
from codeactions.config import AuthSettings
from codeactions.errors import Forbidden, Unauthorized
from codeactions.parts import Part, SettingsDep, part


class TokenVerifier(Protocol):
    """What checks an OIDC access token (`OidcVerifier`, or a test's fake)."""

    async def principal(self, token: str) -> Principal:
        """The caller the token names; raise Unauthorized when it names no one."""
        ...


# None: only the static token is accepted.
VERIFIER: Part[TokenVerifier | None] = Part("verifier")
VerifierDep = Annotated[TokenVerifier | None, Depends(part(VERIFIER))]


def bearer_token(request: Request) -> str:
    """The token of `Authorization: Token X`, `Bearer X` or a bare `X`, as the original accepts."""
    token = token_of_header(request.headers.get("authorization", ""))
    if not token:
        raise Unauthorized("invalid token")
    return token


def token_of_header(header: str) -> str:
    """The token an Authorization header value carries ("" when none)."""
    parts = header.strip().split(None, 1)
    if not parts:
        return ""
    return parts[1].strip() if len(parts) == 2 else parts[0]


def is_static_token(settings: AuthSettings, token: str) -> bool:
    return bool(settings.token) and hmac.compare_digest(
        token.encode("utf-8", "surrogateescape"), settings.token.encode()
    )


# Declares, in the OpenAPI document, the header every authenticated route reads; the routes
# check it themselves (`bearer_token`), so a missing one is the service's 401.
AUTHORIZATION = APIKeyHeader(
    name="Authorization",
    scheme_name="token",
    description="`Token <token>`, `Bearer <token>` or the bare token: the static admin token, "
    "or an OIDC access token when OIDC is on.",
    auto_error=False,
)


async def current_principal(
    request: Request,
    _header: Annotated[str | None, Security(AUTHORIZATION)],
    settings: SettingsDep,
    verifier: VerifierDep,
) -> Principal:
    """Deny by default: the static token, or a verified OIDC token when OIDC is enabled."""
    return await principal_of_token(settings.auth, verifier, bearer_token(request))


async def principal_of_token(
    settings: AuthSettings, verifier: TokenVerifier | None, token: str
) -> Principal:
    """Who `token` is: the static token's admin, or the OIDC token's caller; Unauthorized."""
    if is_static_token(settings, token):
        return Principal(kind="admin")
    if verifier is None:
        raise Unauthorized("not authorized")
    return await verifier.principal(token)


async def current_admin(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """The static token or a service account (`can_communicate_internally`); users get 403."""
    if not principal.sees_all_projects:
        raise Forbidden()
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
CurrentAdmin = Annotated[Principal, Depends(current_admin)]
