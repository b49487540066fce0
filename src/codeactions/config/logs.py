"""Settings of run logs: line length, and the S3 store that may keep them instead of the database."""

from __future__ import annotations

from codeactions.config.fields import Group, env


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
