"""Settings of the callbacks of async runs: where they may go, how often and how long they try."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from pydantic import field_validator
from pydantic_settings import NoDecode

from codeactions.config.fields import Group, env, split_comma_list

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class CallbackSettings(Group):
    allowed_networks: Annotated[list[Network], NoDecode] = env(
        "CALLBACK_ALLOWED_NETWORKS",
        default_factory=list,
        description="Comma list of CIDRs a `callback_url` may reach although user code may not "
        "(loopback, private...): internal receivers. Empty: public addresses only.",
    )
    attempts: int = env(
        "CALLBACK_ATTEMPTS",
        default=5,
        ge=1,
        le=100,
        description="Deliveries tried per callback (network error, timeout, 408, 429, 5xx are "
        "retried; another 4xx is not).",
    )
    retry_seconds: float = env(
        "CALLBACK_RETRY_SECONDS",
        default=1.0,
        ge=0,
        description="Wait before the second delivery of a callback, doubled before each next "
        "one, at most 60 s.",
    )
    timeout_seconds: float = env(
        "CALLBACK_TIMEOUT_SECONDS",
        default=10.0,
        gt=0,
        description="How long one delivery of a callback may take (resolving its host, "
        "connecting, sending, reading the status).",
    )

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        items = split_comma_list(value)
        if isinstance(items, list):
            return [ipaddress.ip_network(item, strict=False) for item in items]
        return items
