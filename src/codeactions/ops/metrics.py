"""Prometheus metrics: the original's names, plus run, sandbox, queue and rate-limit figures."""

from __future__ import annotations

from prometheus_client import CollectorRegistry


class Metrics:
    """Every metric the service records, on a registry of its own (one per app)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()

    def run_finished(
        self,
        *,
        project_uuid: str,
        code_id: str,
        language: str,
        outcome: str,  # completed | failed | timeout | rejected
        reason: str | None,  # a runner FailureReason when failed
        seconds: float,
    ) -> None:
        """One execution through any execution route ended (any outcome)."""

    def queue_depth(self, waiting: int, running: int, capacity: int) -> None:
        """Runs waiting for a slot and running now."""

    def queue_rejected(self) -> None:
        """A run refused because the queue was full (503)."""

    def rate_limited(self) -> None:
        """A request refused by the rate limiter (429)."""

    def code_created(self, *, project_uuid: str, code_id: str) -> None: ...

    def code_updated(self, *, project_uuid: str, code_id: str) -> None: ...
