"""Settings of the RabbitMQ consumers of project and permission events."""

from __future__ import annotations

from codeactions.config.fields import Group, env


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
