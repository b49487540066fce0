"""Settings: one tree of groups read from CODEACTIONS_* variables, with the original's names as aliases."""

from __future__ import annotations

import base64
import os
import re
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]


def env(name: str, *legacy: str, **kwargs: Any) -> Any:
    """A field read from CODEACTIONS_<name>, or from the original's legacy names, in that order."""
    return Field(validation_alias=AliasChoices(f"CODEACTIONS_{name}", *legacy), **kwargs)


class Group(BaseSettings):
    # Empty values count as unset, as in the original (config.go:373-379).
    model_config = SettingsConfigDict(
        env_ignore_empty=True, populate_by_name=True, extra="ignore", frozen=True
    )


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


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
        return _split_list(value)

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.strip().lower()
        if level not in {"debug", "info", "warning", "warn", "error", "critical"}:
            raise ValueError(f"unknown log level {value!r}")
        return "warning" if level == "warn" else level


POSTGRES_SCHEMES = (
    "postgres://",
    "postgresql://",
    "postgresql+psycopg2://",
    "postgresql+asyncpg://",
)
# libpq's TLS parameters. asyncpg reads them from a DSN only (its keyword arguments have no room
# for the certificate files): DatabaseSettings moves them from the URL to `ssl_connect_args`.
LIBPQ_SSL_PARAMETERS = frozenset(
    {
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslpassword",
        "sslcrl",
        "sslnegotiation",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
    }
)
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def split_ssl_parameters(url: str) -> tuple[str, list[str]]:
    """`url` without libpq's TLS parameters, and those parameters (`name=value` as written)."""
    base, _, query = url.partition("?")
    kept: list[str] = []
    ssl: list[str] = []
    for item in filter(None, query.split("&")):
        (ssl if item.partition("=")[0] in LIBPQ_SSL_PARAMETERS else kept).append(item)
    return (f"{base}?{'&'.join(kept)}" if kept else base), ssl


class DatabaseSettings(Group):
    # The URL may hold a password: a validation error must not print it.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    url: str = env(
        "DATABASE_URL",
        "FLOWS_CODE_ACTIONS_DB_URI",
        default="sqlite:///./codeactions.db",
        description="SQLite (`sqlite:///path`) or PostgreSQL (`postgresql://user@host/db`). "
        "libpq's TLS parameters work as in libpq: `sslmode` (`disable`, `allow`, `prefer` (the "
        "default), `require`, `verify-ca`, `verify-full`), `sslrootcert`, `sslcert`, `sslkey`, "
        "`sslpassword`, `sslcrl`.",
    )
    pool_size: int = env(
        "DATABASE_POOL_SIZE",
        "FLOWS_CODE_ACTIONS_DB_MAX_POOL_SIZE",
        default=20,
        ge=1,
        description="PostgreSQL connection pool size.",
    )
    connect_timeout: float = env(
        "DATABASE_CONNECT_TIMEOUT",
        "FLOWS_CODE_ACTIONS_POSTGRES_DB_TIMEOUT",
        default=10.0,
        description="Seconds to wait for a database connection.",
    )
    command_timeout: float = env(
        "DATABASE_COMMAND_TIMEOUT",
        default=30.0,
        gt=0,
        description="Seconds a PostgreSQL statement may take before it fails (a hung database "
        "answers 503 instead of holding callers).",
    )

    @field_validator("url")
    @classmethod
    def _known_ssl_mode(cls, value: str) -> str:
        if value.startswith(POSTGRES_SCHEMES):
            for item in split_ssl_parameters(value)[1]:
                name, _, mode = item.partition("=")
                if name == "sslmode" and unquote(mode) not in SSL_MODES:
                    raise ValueError(f"sslmode must be one of {', '.join(SSL_MODES)}")
        return value

    @property
    def async_url(self) -> str:
        """The URL with the async driver SQLAlchemy needs, without libpq's TLS parameters:
        asyncpg would take them for keyword arguments it does not have (`ssl_connect_args`
        carries them). What names the database stays as written."""
        url = self.url
        for prefix in POSTGRES_SCHEMES:
            if url.startswith(prefix):
                return split_ssl_parameters("postgresql+asyncpg://" + url[len(prefix) :])[0]
        if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite://"):
            return "sqlite+aiosqlite://" + url[len("sqlite://") :]
        return url

    @property
    def ssl_connect_args(self) -> dict[str, str]:
        """The URL's libpq TLS parameters as asyncpg takes them: a DSN holding only them, which
        asyncpg completes with the host, user and database SQLAlchemy passes as keyword
        arguments. asyncpg then does what libpq does with them: the same modes and defaults
        (`prefer`, `~/.postgresql/root.crt`, the `PGSSL*` variables), `require` with a
        `sslrootcert` verifying the server's certificate as `verify-ca` does."""
        if not self.url.startswith(POSTGRES_SCHEMES):
            return {}
        ssl = split_ssl_parameters(self.url)[1]
        return {"dsn": "postgresql://?" + "&".join(ssl)} if ssl else {}

    @property
    def is_sqlite(self) -> bool:
        return self.async_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> str | None:
        """The database file when the database is a SQLite file."""
        if not self.is_sqlite:
            return None
        path = self.async_url.split(":///", 1)[-1].split("?", 1)[0]
        return path if path and path != ":memory:" else None


class AuthSettings(Group):
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
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"


class CodeSettings(Group):
    blacklist: Annotated[list[str], NoDecode] = env(
        "BLACKLIST",
        "FLOWS_CODE_ACTIONS_BLACKLIST",
        default_factory=list,
        description="Comma list of terms rejected in sources (whole-word match).",
    )
    max_source_bytes: int = env(
        "MAX_SOURCE_BYTES",
        default=1024 * 1024,
        description="Sources of this size or more are refused.",
    )
    default_timeout: int = env(
        "DEFAULT_TIMEOUT",
        default=60,
        ge=5,
        le=300,
        description="Timeout of codes created without one.",
    )
    cache_seconds: float = env(
        "CODE_CACHE_SECONDS",
        default=2.0,
        ge=0,
        description="How long a replica reuses a code it looked up to run it; its own updates "
        "apply at once, other replicas' after this delay. 0 turns the cache off.",
    )

    @field_validator("blacklist", mode="before")
    @classmethod
    def _blacklist(cls, value: Any) -> Any:
        value = _split_list(value)
        return sorted(value) if isinstance(value, list) else value


class RateLimitSettings(Group):
    max_requests: int = env(
        "RATELIMIT_MAX_REQUESTS",
        "FLOWS_CODE_ACTIONS_CODE_LIMITER_MAX_REQUESTS",
        default=600,
        ge=1,
        description="Runs allowed per code and window on the execution endpoints (429 above).",
    )
    window_seconds: int = env(
        "RATELIMIT_WINDOW_SECONDS",
        "FLOWS_CODE_ACTIONS_CODE_LIMITER_WINDOW_WINDOW",
        default=60,
        ge=1,
        description="Length of the sliding rate-limit window.",
    )
    redis_url: str = env(
        "REDIS_URL",
        "FLOWS_CODE_ACTIONS_REDIS",
        default="",
        description="Redis for a limiter shared by replicas; empty keeps it in process.",
    )
    fail_open: bool = env(
        "RATELIMIT_FAIL_OPEN",
        default=True,
        description="When Redis is down: allow runs (true) or answer 503 (false).",
    )


class RunnerSettings(Group):
    enabled: bool = env(
        "RUNNER_ENABLED",
        default=True,
        description="Start the sandbox runner; when false every execution answers 503.",
    )
    slots: int = env(
        "RUNNER_SLOTS",
        "FLOWS_CODE_ACTIONS_WORKER_POOL_SIZE",
        default=8,
        ge=1,
        le=64,
        description="Runs executed at once (sandbox slots).",
    )
    queue_size: int = env(
        "RUNNER_QUEUE_SIZE",
        "FLOWS_CODE_ACTIONS_WORKER_POOL_QUEUE_SIZE",
        default=100,
        ge=0,
        description="Runs that may wait for a slot; more answer 503.",
    )
    project_max_concurrency: int = env(
        "PROJECT_MAX_CONCURRENCY",
        default=0,
        ge=0,
        description="Runs of one project executing at once, so no tenant takes every slot; "
        "0: half the slots, at least 1.",
    )
    project_max_queued: int = env(
        "PROJECT_MAX_QUEUED",
        default=0,
        ge=0,
        description="Runs of one project waiting for a slot; more answer 429 at once. "
        "0: a quarter of the queue size, at least 1.",
    )
    code_max_concurrency: int = env(
        "CODE_MAX_CONCURRENCY",
        default=0,
        ge=0,
        description="Runs of one code executing at once; 0: the same as its project's.",
    )
    code_max_queued: int = env(
        "CODE_MAX_QUEUED",
        default=0,
        ge=0,
        description="Runs of one code waiting for a slot; more answer 429 at once. "
        "0: the same as its project's.",
    )
    memory_mb: int = env(
        "RUNNER_MEMORY_MB",
        default=256,
        ge=16,
        description="Memory limit of one run (its whole process tree).",
    )
    max_processes: int = env(
        "RUNNER_MAX_PROCESSES",
        default=64,
        ge=1,
        description="Processes and threads one run may have at once.",
    )
    cpu_seconds: int = env(
        "RUNNER_CPU_SECONDS",
        default=0,
        ge=0,
        description="CPU time per run; 0 = the code's timeout.",
    )
    file_size_mb: int = env(
        "RUNNER_FILE_SIZE_MB", default=64, ge=1, description="Largest file a run may write."
    )
    output_bytes: int = env(
        "RUNNER_OUTPUT_BYTES",
        default=1024 * 1024,
        ge=1024,
        description="Largest result plus logs of one run; more ends the run (reason `output`).",
    )
    network: Literal["public", "off"] = env(
        "RUNNER_NETWORK",
        default="public",
        description="`public`: egress allowed except loopback/private/link-local; `off`: none.",
    )
    network_namespaces: bool = env(
        "RUNNER_NETWORK_NAMESPACES",
        default=True,
        description="With `public` network: give each sandbox slot its own network namespace "
        "(a veth pair to the host, NAT; it sees only its own sockets; turns on IPv4 forwarding "
        "for those veths and the uplink). false, or where it cannot be set up: sandboxes share "
        "the host's namespace behind an iptables filter on their uids.",
    )
    uid_base: int = env(
        "RUNNER_UID_BASE",
        default=64000,
        ge=1000,
        description="First of the unprivileged uids given to sandbox slots (one per slot).",
    )
    work_dir: str = env(
        "RUNNER_WORK_DIR",
        default="/tmp/codeactions-runner",
        description="Sandbox dirs and Go cache.",
    )
    python: str = env(
        "RUNNER_PYTHON",
        default=".venv-runtime/bin/python",
        description="Interpreter for user Python (with the preinstalled libraries); "
        "a relative path is taken from the checkout.",
    )
    node: str = env(
        "RUNNER_NODE", default="/usr/bin/node", description="Node.js for JavaScript codes."
    )
    go: str = env(
        "RUNNER_GO",
        default="/usr/bin/go",
        description="Go toolchain for Go codes (compiled when saved).",
    )
    go_build_jobs: int = env(
        "RUNNER_GO_BUILD_JOBS",
        default=2,
        ge=1,
        le=16,
        description="Go compiles running at once; more wait their turn.",
    )
    go_build_memory_mb: int = env(
        "RUNNER_GO_BUILD_MEMORY_MB",
        default=512,
        ge=128,
        description="Memory limit of one Go compile (the toolchain's whole process tree).",
    )
    go_build_seconds: int = env(
        "RUNNER_GO_BUILD_SECONDS",
        default=60,
        ge=5,
        description="Wall-clock limit of one Go compile, and CPU-time limit of each of its "
        "processes.",
    )
    go_build_output_mb: int = env(
        "RUNNER_GO_BUILD_OUTPUT_MB",
        default=64,
        ge=8,
        description="Largest file a Go compile may write (the binary or a build-cache entry).",
    )
    go_cache_mb: int = env(
        "RUNNER_GO_CACHE_MB",
        default=1024,
        ge=128,
        description="Disk kept for compiled Go binaries and the Go build cache; the least "
        "recently used are evicted beyond it.",
    )
    node_spares: int = env(
        "RUNNER_NODE_SPARES", default=2, ge=0, description="Booted Node processes kept ready."
    )
    node_warm_workers: int = env(
        "RUNNER_NODE_WARM_WORKERS",
        default=6,
        ge=0,
        description="Extra Node sandboxes (on top of node_spares) that may stay warm for "
        "repeated runs of the same JavaScript code; each holds one idle Node process.",
    )
    reuse: bool = env(
        "RUNNER_REUSE",
        default=True,
        description="Keep a sandboxed process after a run that ended normally as the warm "
        "worker of that code (same code id and source), for its next runs (Python and "
        "JavaScript; Lambda-style: imported modules stay loaded, temp dirs are wiped and other "
        "processes killed between runs). false: a fresh process for every run.",
    )
    ca_file: str = env(
        "RUNNER_CA_FILE",
        default="",
        description="CA bundle user code trusts for HTTPS; empty: the service's own "
        "`SSL_CERT_FILE` when set, else each library's default.",
    )

    # The caps in force, with the defaults of the settings above worked out.
    @property
    def project_concurrency(self) -> int:
        return self.project_max_concurrency or max(1, self.slots // 2)

    @property
    def project_queued(self) -> int:
        return self.project_max_queued or max(1, self.queue_size // 4)

    @property
    def code_concurrency(self) -> int:
        return self.code_max_concurrency or self.project_concurrency

    @property
    def code_queued(self) -> int:
        return self.code_max_queued or self.project_queued

    @field_validator("ca_file")
    @classmethod
    def _service_ca(cls, value: str) -> str:
        return value or os.environ.get("SSL_CERT_FILE", "")

    @field_validator("python")
    @classmethod
    def _from_checkout(cls, value: str) -> str:
        return value if Path(value).is_absolute() else str(REPO_ROOT / value)


class LogSettings(Group):
    max_content_chars: int = env(
        "LOG_MAX_CONTENT_CHARS",
        default=8000,
        ge=1,
        description="Longest log line kept (longer ones are cut, as the original).",
    )
    s3_enabled: bool = env(
        "S3_ENABLED",
        "FLOWS_CODE_ACTIONS_S3_ENABLED",
        default=False,
        description="Keep run logs in S3 (the original's key layout) instead of the database.",
    )
    s3_bucket: str = env(
        "S3_BUCKET",
        "FLOWS_CODE_ACTIONS_S3_BUCKET_NAME",
        default="",
        description="S3 bucket of the logs.",
    )
    s3_region: str = env(
        "S3_REGION", "FLOWS_CODE_ACTIONS_S3_REGION", default="us-east-1", description="S3 region."
    )
    s3_prefix: str = env(
        "S3_PREFIX",
        "FLOWS_CODE_ACTIONS_S3_PREFIX",
        default="codeactions",
        description="Key prefix of the logs (`{prefix}/logs/YYYY/MM/DD/...`).",
    )
    s3_endpoint: str = env(
        "S3_ENDPOINT",
        "FLOWS_CODE_ACTIONS_S3_ENDPOINT",
        default="",
        description="S3-compatible endpoint URL (path-style); empty: AWS.",
    )
    s3_access_key_id: str = env(
        "S3_ACCESS_KEY_ID",
        "FLOWS_CODE_ACTIONS_S3_ACCESS_KEY_ID",
        default="",
        description="S3 access key; empty: the default AWS credential chain (IAM roles).",
    )
    s3_secret_access_key: str = env(
        "S3_SECRET_ACCESS_KEY",
        "FLOWS_CODE_ACTIONS_S3_SECRET_ACCESS_KEY",
        default="",
        description="S3 secret key.",
    )
    s3_write_timeout: float = env(
        "S3_WRITE_TIMEOUT",
        default=10.0,
        gt=0,
        description="Seconds one background upload of a run's logs may take before it is "
        "retried later (uploads never delay a run's answer).",
    )
    s3_read_timeout: float = env(
        "S3_READ_TIMEOUT",
        default=5.0,
        gt=0,
        description="Seconds a log read from S3 may take before the caller gets 503.",
    )


class RabbitSettings(Group):
    url: str = env(
        "RABBITMQ_URL",
        "FLOWS_CODE_ACTIONS_RABBITMQ_URL",
        default="",
        description="RabbitMQ URL: consume project and permission events.",
    )
    project_exchange: str = env(
        "PROJECT_EXCHANGE",
        "FLOWS_CODE_ACTIONS_PROJECT_EXCHANGE",
        default="projects.topic",
        description="Topic exchange of project-created events (declared when missing).",
    )
    project_queue: str = env(
        "PROJECT_QUEUE",
        "FLOWS_CODE_ACTIONS_PROJECT_QUEUE",
        default="code-actions.projects",
        description="Queue of project-created events.",
    )
    permission_exchange: str = env(
        "PERMISSION_EXCHANGE",
        "FLOWS_CODE_ACTIONS_PERMISSION_EXCHANGE",
        default="permissions.topic",
        description="Topic exchange of permission events.",
    )
    permission_queue: str = env(
        "PERMISSION_QUEUE",
        "FLOW_CODE_ACTIONS_PERMISSION_QUEUE",
        "FLOWS_CODE_ACTIONS_PERMISSION_QUEUE",
        default="code-actions-permissions",
        description="Queue of permission events.",
    )
    dead_letter_exchange: str = env(
        "DEAD_LETTER_EXCHANGE",
        default="code-actions.dlx",
        description="Exchange receiving messages that cannot be applied (`<queue>.dead` queues).",
    )
    reconnect_seconds: float = env(
        "RABBITMQ_RECONNECT_SECONDS",
        default=2.0,
        gt=0,
        description="Wait before reconnecting to RabbitMQ.",
    )
    max_retries: int = env(
        "RABBITMQ_MAX_RETRIES",
        default=20,
        ge=0,
        description="Retries of a message that failed for a passing reason (database down) "
        "before it goes to the dead-letter queue (20 retries ride out about 16 minutes).",
    )
    retry_seconds: float = env(
        "RABBITMQ_RETRY_SECONDS",
        default=2.0,
        gt=0,
        description="Wait before the first retry; doubles each retry, at most 60 s.",
    )


class CleanerSettings(Group):
    enabled: bool = env(
        "CLEANER_ENABLED",
        default=True,
        description="Delete runs and logs older than the retention period once a day.",
    )
    schedule_time: time = env(
        "CLEANER_SCHEDULE_TIME",
        "FLOWS_CODE_ACTIONS_CLEANER_SCHEDULE_TIME",
        default=time(1, 0),
        description="Daily run time HH:MM (UTC).",
    )
    retention_days: int = env(
        "CLEANER_RETENTION_DAYS",
        "FLOWS_CODE_ACTIONS_CLEANER_RETENTION_PERIOD",
        default=30,
        ge=1,
        description="Days runs and logs are kept (at least 1).",
    )
    batch_size: int = env(
        "CLEANER_BATCH_SIZE", default=1000, ge=1, le=100_000, description="Rows deleted per batch."
    )

    @field_validator("schedule_time", mode="before")
    @classmethod
    def _hhmm(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", value)
            if not match or int(match[1]) > 23 or int(match[2]) > 59:
                raise ValueError(f"expected HH:MM, got {value!r}")
            return time(int(match[1]), int(match[2]))
        return value


class HealthSettings(Group):
    cache_seconds: float = env(
        "HEALTH_CACHE_SECONDS",
        "FLOWS_CODE_ACTIONS_HEALTH_CHECK_CACHE_TIME",
        default=3.0,
        ge=0,
        description="How long `/health` reuses its last answer.",
    )
    timeout_seconds: float = env(
        "HEALTH_TIMEOUT_SECONDS",
        default=3.0,
        gt=0,
        description="Timeout of each dependency check of `/health`.",
    )


class SpoolSettings(Group):
    dir: str = env(
        "SPOOL_DIR",
        default="",
        description="Directory of the local spools (run outcomes the database could not take, "
        "S3 log batches not yet uploaded); empty: `<sqlite file>-spool`, or `./codeactions-spool` "
        "with PostgreSQL. Keep it on a persistent disk: what is in it is replayed at start.",
    )
    max_mb: int = env(
        "SPOOL_MAX_MB",
        default=512,
        ge=1,
        description="Largest size of each spool; a run whose outcome can be neither stored nor "
        "spooled answers 503.",
    )
    fsync: bool = env(
        "SPOOL_FSYNC",
        default=True,
        description="fsync each spool write before answering (off: a machine crash may lose "
        "the last writes, a service crash does not).",
    )


KEY_HINT = "32 url-safe base64-encoded bytes; `codeactions secrets new-key` prints one"


def check_secrets_key(value: str) -> str:
    """A Fernet key: 32 bytes in url-safe base64 (standard base64 is read too)."""
    try:
        raw = base64.urlsafe_b64decode(value.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"a secrets key is {KEY_HINT}")
    return value.strip()


class SecretsSettings(Group):
    # A mistyped key must not end up in the error printed at start.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    key: str = env(
        "SECRETS_KEY",
        default="",
        repr=False,
        description="Key that encrypts project secrets at rest (" + KEY_HINT + "). Empty: "
        "a key generated once into `CODEACTIONS_SECRETS_KEY_FILE`. Replicas sharing a database "
        "need the same key.",
    )
    old_keys: Annotated[list[str], NoDecode] = env(
        "SECRETS_OLD_KEYS",
        default_factory=list,
        repr=False,
        description="Comma list of former keys: secrets written under them stay readable; "
        "`codeactions secrets encrypt` rewrites them under `CODEACTIONS_SECRETS_KEY`.",
    )
    key_file: str = env(
        "SECRETS_KEY_FILE",
        default="",
        description="Where the key is kept when `CODEACTIONS_SECRETS_KEY` is empty (created "
        "with mode 0600 when missing; a warning at every start). Empty: `<sqlite "
        "file>-secrets.key` beside the SQLite database, or `secrets.key` in the spool directory "
        "with PostgreSQL.",
    )

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return check_secrets_key(value) if value.strip() else ""

    @field_validator("old_keys", mode="before")
    @classmethod
    def _old_keys(cls, value: Any) -> Any:
        value = _split_list(value)
        return [check_secrets_key(key) for key in value] if isinstance(value, list) else value


class Settings(Group):
    server: ServerSettings = Field(default_factory=ServerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    code: CodeSettings = Field(default_factory=CodeSettings)
    ratelimit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    runner: RunnerSettings = Field(default_factory=RunnerSettings)
    logs: LogSettings = Field(default_factory=LogSettings)
    rabbitmq: RabbitSettings = Field(default_factory=RabbitSettings)
    cleaner: CleanerSettings = Field(default_factory=CleanerSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    secrets: SecretsSettings = Field(default_factory=SecretsSettings)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.auth.oidc_enabled and not (self.auth.oidc_issuer or self.auth.oidc_host):
            raise ValueError("OIDC is enabled but neither OIDC_HOST nor OIDC_ISSUER is set")
        if self.logs.s3_enabled and not self.logs.s3_bucket:
            raise ValueError("S3 logs are enabled but S3_BUCKET is not set")
        return self


GROUPS: dict[str, type[Group]] = {
    name: field.annotation  # type: ignore[misc]
    for name, field in Settings.model_fields.items()
}
