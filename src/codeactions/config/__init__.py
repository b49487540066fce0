"""Settings: one tree of groups read from CODEACTIONS_* variables, with the original's names as aliases."""

from codeactions.config.auth import AuthSettings
from codeactions.config.callbacks import CallbackSettings
from codeactions.config.cleaner import CleanerSettings
from codeactions.config.codes import CodeSettings
from codeactions.config.database import (
    LIBPQ_SSL_PARAMETERS,
    POSTGRES_SCHEMES,
    SSL_MODES,
    DatabaseSettings,
    split_ssl_parameters,
)
from codeactions.config.dispatch import DispatchSettings
from codeactions.config.fields import Group, env
from codeactions.config.health import HealthSettings
from codeactions.config.live import LiveSettings
from codeactions.config.logs import LogSettings
from codeactions.config.rabbitmq import RabbitSettings
from codeactions.config.ratelimit import RateLimitSettings
from codeactions.config.runner import REPO_ROOT, RunnerSettings
from codeactions.config.secrets import KEY_HINT, SecretsSettings, check_secrets_key
from codeactions.config.server import ServerSettings
from codeactions.config.settings import GROUPS, Settings
from codeactions.config.spool import SpoolSettings

__all__ = [
    "GROUPS",
    "KEY_HINT",
    "LIBPQ_SSL_PARAMETERS",
    "POSTGRES_SCHEMES",
    "REPO_ROOT",
    "SSL_MODES",
    "AuthSettings",
    "CallbackSettings",
    "CleanerSettings",
    "CodeSettings",
    "DatabaseSettings",
    "DispatchSettings",
    "Group",
    "HealthSettings",
    "LiveSettings",
    "LogSettings",
    "RabbitSettings",
    "RateLimitSettings",
    "RunnerSettings",
    "SecretsSettings",
    "ServerSettings",
    "Settings",
    "SpoolSettings",
    "check_secrets_key",
    "env",
    "split_ssl_parameters",
]
