"""Login and refresh as the HTTP API reads and writes them."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints


def _encodable(value: str) -> str:
    # A lone surrogate (`"\ud800"` in JSON) cannot be form-encoded for the provider.
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


Username = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=255), AfterValidator(_encodable)
]
Password = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=4096), AfterValidator(_encodable)
]
RefreshToken = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=16384), AfterValidator(_encodable)
]


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    username: Username = Field(description="The user's name (or email) at the identity provider.")
    password: Password = Field(description="Sent to the identity provider only, never stored.")


class RefreshIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    refresh_token: RefreshToken = Field(description="The `refresh_token` of a login or refresh.")


class TokensOut(BaseModel):
    access_token: str = Field(
        description="An OIDC access token: `Authorization: Bearer <access_token>` on every route."
    )
    refresh_token: str = Field(description="For `POST /refresh`, when the access token expires.")
    expires_in: int = Field(description="Seconds the access token is valid for.")
