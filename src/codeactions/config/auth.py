"""Settings of authentication: the static admin token, OIDC (Keycloak) verification and login."""

from __future__ import annotations

from typing import Literal

from pydantic_settings import SettingsConfigDict

from codeactions.config.fields import Group, env


class AuthSettings(Group):
    # A mistyped client secret must not end up in the error printed at start.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    token: str = env(
        "AUTH_TOKEN",
        "FLOWS_CODE_ACTIONS_AUTH_TOKEN",
        default="",
        description="Static admin token (`Authorization: Token X` or `Bearer X`).",
    )
    oidc_enabled: bool = env(
        "OIDC_ENABLED",
        "FLOWS_CODE_ACTIONS_OIDC_AUTH_ENABLED",
        default=False,
        description="Verify OIDC tokens (Keycloak) and map their `email` to project roles.",
    )
    oidc_host: str = env(
        "OIDC_HOST", "FLOWS_CODE_ACTIONS_OIDC_HOST", default="", description="Keycloak base URL."
    )
    oidc_realm: str = env(
        "OIDC_REALM", "FLOWS_CODE_ACTIONS_OIDC_REALM", default="", description="Keycloak realm."
    )
    oidc_issuer: str = env(
        "OIDC_ISSUER", default="", description="Issuer; default `{host}/realms/{realm}`."
    )
    oidc_jwks_url: str = env(
        "OIDC_JWKS_URL",
        default="",
        description="JWKS URL; default `{issuer}/protocol/openid-connect/certs`.",
    )
    oidc_userinfo_url: str = env(
        "OIDC_USERINFO_URL",
        default="",
        description="Userinfo URL; default: the `userinfo_endpoint` of the provider's discovery "
        "document (`{issuer}/.well-known/openid-configuration`; Keycloak's is "
        "`{issuer}/protocol/openid-connect/userinfo`, the URL the original called).",
    )
    oidc_claims_source: Literal["token", "userinfo", "auto"] = env(
        "OIDC_CLAIMS_SOURCE",
        default="auto",
        description="Where a JWT caller's `email` and `can_communicate_internally` come from: "
        "`token`: the token's claims only; `userinfo`: the provider's userinfo answer for every "
        "token, as the original; `auto`: the token's claims, and userinfo when the token lacks one "
        "of them (not for a token already saying `can_communicate_internally: true`). Userinfo "
        "answers are cached per token until it expires.",
    )
    oidc_audience: str = env(
        "OIDC_AUDIENCE", default="", description="Required `aud` claim; empty accepts any."
    )
    oidc_jwks_cache_seconds: int = env(
        "OIDC_JWKS_CACHE_SECONDS",
        default=600,
        ge=0,
        description="How long the provider's signing keys are cached (an unknown key id refreshes them).",
    )
    oidc_userinfo_cache_seconds: int = env(
        "OIDC_USERINFO_CACHE_SECONDS",
        default=60,
        ge=0,
        description="How long a userinfo answer for an opaque token is cached (answers for JWTs "
        "are kept until the token expires).",
    )
    oidc_client_id: str = env(
        "OIDC_CLIENT_ID",
        default="",
        description="Client id with which `POST /login` and `POST /refresh` ask the provider's token "
        "endpoint (password and refresh_token grants) for tokens; empty (or OIDC off) turns "
        "these routes off (404).",
    )
    oidc_client_secret: str = env(
        "OIDC_CLIENT_SECRET",
        default="",
        repr=False,
        description="Secret of that client when it is confidential (sent as the provider's "
        "discovery document allows: `client_secret_basic`, else `client_secret_post`); empty for "
        "a public client. A secret the provider refuses is the service's fault: 503, not 401.",
    )
    oidc_timeout_seconds: float = env(
        "OIDC_TIMEOUT_SECONDS",
        default=5.0,
        gt=0,
        description="Timeout of calls to the identity provider.",
    )

    @property
    def issuer(self) -> str:
        if self.oidc_issuer:
            return self.oidc_issuer.rstrip("/")
        return f"{self.oidc_host.rstrip('/')}/realms/{self.oidc_realm}"

    @property
    def jwks_url(self) -> str:
        return self.oidc_jwks_url or f"{self.issuer}/protocol/openid-connect/certs"

    @property
    def login_enabled(self) -> bool:
        """Whether `POST /login` and `POST /refresh` are served."""
        return self.oidc_enabled and bool(self.oidc_client_id)

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"
