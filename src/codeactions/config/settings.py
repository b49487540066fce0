"""The whole settings tree: one group per domain, checked together."""

from __future__ import annotations

from pydantic import Field, model_validator

from codeactions.config.auth import AuthSettings
from codeactions.config.callbacks import CallbackSettings
from codeactions.config.cleaner import CleanerSettings
from codeactions.config.codes import CodeSettings
from codeactions.config.database import DatabaseSettings
from codeactions.config.dispatch import DispatchSettings
from codeactions.config.fields import Group
from codeactions.config.health import HealthSettings
from codeactions.config.live import LiveSettings
from codeactions.config.logs import LogSettings
from codeactions.config.rabbitmq import RabbitSettings
from codeactions.config.ratelimit import RateLimitSettings
from codeactions.config.runner import RunnerSettings
from codeactions.config.secrets import SecretsSettings
from codeactions.config.server import ServerSettings
from codeactions.config.spool import SpoolSettings


class Settings(Group):
    server: ServerSettings = Field(default_factory=ServerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    code: CodeSettings = Field(default_factory=CodeSettings)
    ratelimit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    runner: RunnerSettings = Field(default_factory=RunnerSettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    logs: LogSettings = Field(default_factory=LogSettings)
    rabbitmq: RabbitSettings = Field(default_factory=RabbitSettings)
    cleaner: CleanerSettings = Field(default_factory=CleanerSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    secrets: SecretsSettings = Field(default_factory=SecretsSettings)
    live: LiveSettings = Field(default_factory=LiveSettings)
    callbacks: CallbackSettings = Field(default_factory=CallbackSettings)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.auth.oidc_enabled and not (self.auth.oidc_issuer or self.auth.oidc_host):
            raise ValueError("OIDC is enabled but neither OIDC_HOST nor OIDC_ISSUER is set")
        if self.logs.s3_enabled and not self.logs.s3_bucket:
            raise ValueError("S3 logs are enabled but S3_BUCKET is not set")
        if self.dispatch.mode == "rabbitmq" and not self.rabbitmq.url:
            raise ValueError("RUNNER_DISPATCH is rabbitmq but RABBITMQ_URL is not set")
        return self


GROUPS: dict[str, type[Group]] = {
    name: field.annotation  # type: ignore[misc]
    for name, field in Settings.model_fields.items()
}
