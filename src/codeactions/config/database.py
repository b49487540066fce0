"""Settings of the database: its URL (SQLite or PostgreSQL with libpq's TLS parameters) and pool."""

from __future__ import annotations

from urllib.parse import unquote

from pydantic import field_validator
from pydantic_settings import SettingsConfigDict

from codeactions.config.fields import Group, env

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
