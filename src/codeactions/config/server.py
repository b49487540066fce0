"""Settings of the HTTP server: listen address, limits of requests, logs, Sentry, metric labels."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import field_validator
from pydantic_settings import NoDecode

from codeactions.config.fields import Group, env, split_comma_list


class ServerSettings(Group):
    host: str = env("HOST", default="127.0.0.1", description="Listen address.")
    port: int = env("PORT", "FLOWS_CODE_ACTIONS_PORT", default=8050, description="Listen port.")
    log_level: str = env(
        "LOG_LEVEL", "FLOWS_CODE_ACTIONS_LOG_LEVEL", default="info", description="Log level."
    )
    log_json: bool = env("LOG_JSON", default=True, description="Structured JSON logs on stdout.")
    cors_origins: Annotated[list[str], NoDecode] = env(
        "CORS_ORIGINS",
        default_factory=list,
        description="Comma list of origins allowed by CORS (`*` for any). OPTIONS is always 204.",
    )
    max_body_bytes: int = env(
        "MAX_BODY_BYTES",
        default=10 * 1024 * 1024,
        description="Largest request body accepted by the execution endpoints (413 above).",
    )
    max_header_bytes: int = env(
        "MAX_HEADER_BYTES",
        default=64 * 1024,
        ge=1024,
        description="Largest total size of a request's headers (names and values); 431 above.",
    )
    shutdown_grace_seconds: float = env(
        "SHUTDOWN_GRACE_SECONDS",
        default=30.0,
        description="On SIGTERM, how long in-flight runs may take to finish.",
    )
    sentry_dsn: str = env(
        "SENTRY_DSN",
        "FLOWS_CODE_ACTIONS_SENTRY_DSN",
        default="",
        description="Sentry DSN; errors of the service (never failed user runs) are reported there.",
    )
    environment: str = env(
        "ENVIRONMENT",
        "FLOWS_CODE_ACTIONS_ENVIRONMENT",
        default="local",
        description="Environment name reported to Sentry.",
    )
    metrics_code_labels: bool = env(
        "METRICS_CODE_LABELS",
        default=False,
        description="Fill the `code_id` label of the `ca_*` metrics (one series per code: "
        "unbounded, and public like all of `/metrics`); by default it is empty.",
    )
    metrics_project_labels: bool = env(
        "METRICS_PROJECT_LABELS",
        default=False,
        description="Fill the `project_uuid` label of the `ca_*` metrics; by default it is "
        "empty, since the anonymous `/metrics` would list every tenant.",
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        return split_comma_list(value)

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.strip().lower()
        if level not in {"debug", "info", "warning", "warn", "error", "critical"}:
            raise ValueError(f"unknown log level {value!r}")
        return "warning" if level == "warn" else level
