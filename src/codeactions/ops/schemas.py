"""What `GET /info` tells a client (a console) about this deployment before it signs in."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RateLimitOut(BaseModel):
    max_requests: int = Field(description="Runs allowed per code and window")
    window_seconds: int


class InfoOut(BaseModel):
    version: str
    login: bool = Field(description="Whether `POST /login` and `POST /refresh` are served")
    rate_limit: RateLimitOut = Field(
        description="The execution endpoints' limit per code (`/action/endpoint`, `/endpoint`)"
    )
    languages: list[str]
    code_types: list[str]
    max_source_bytes: int = Field(description="Sources of this size or more are refused")
    default_timeout: int = Field(description="Seconds, for codes created without a timeout")
