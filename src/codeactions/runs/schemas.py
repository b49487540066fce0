"""The CodeRun object, the /run request and response, with the original's field names."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from codeactions.codes.schemas import go_time
from codeactions.db.models import CodeRun
from codeactions.db.text import storable_json


class CodeRunOut(BaseModel):
    """The original's CodeRun object (`internal/coderun/coderun.go`); empty legacy ids omitted."""

    id: str
    mongo_object_id: str | None = Field(default=None, description="Legacy ObjectID, when any.")
    code_id: str = Field(description="UUID of the code (empty when unknown)")
    code_mongo_id: str | None = Field(
        default=None, description="The legacy ObjectID the code was invoked with, when any."
    )
    status: str = Field(description="started | completed | failed")
    result: str | None = Field(description="What the code set; the error text on failure")
    extra: dict[str, Any] | None = Field(
        description="status_code and content_type; on failure also reason and error"
    )
    params: dict[str, Any] | None
    body: str | None
    headers: dict[str, Any] | None = Field(description="Request headers, credentials redacted")
    created_at: str = Field(description="RFC 3339, UTC")
    updated_at: str = Field(description="RFC 3339, UTC")


# What `GET /coderun?status=` and `/coderun/stats` count (`queued` is stored by no current path).
RUN_STATUSES = ("started", "completed", "failed")
# `bucket` of `/coderun/stats`, in seconds.
BUCKETS = {"hour": 3600, "day": 86400}


@dataclass(frozen=True)
class RunBucket:
    """A code's runs created in one bucket: counts by status, and percentiles of the durations
    (updated_at - created_at) of the finished ones (completed or failed), in milliseconds."""

    index: int  # the bucket's start, in bucket lengths since the Unix epoch
    started: int = 0
    completed: int = 0
    failed: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None


class RunBucketOut(BaseModel):
    start: str = Field(description="RFC 3339, UTC: where the bucket starts")
    completed: int
    failed: int
    started: int
    p50_ms: float | None = Field(description="Median duration of the finished runs; null: none")
    p95_ms: float | None = Field(description="95th percentile (linear, as percentile_cont)")


class RunStatsOut(BaseModel):
    code_id: str = Field(description="As given")
    after: str = Field(description="RFC 3339, UTC: runs created at or after this")
    before: str = Field(description="RFC 3339, UTC: and before this")
    bucket_seconds: int = Field(description="3600 (hour) or 86400 (day)")
    buckets: list[RunBucketOut] = Field(description="Every bucket of the range, oldest first")


def run_stats_out(
    code_id: str, after: datetime, before: datetime, bucket_seconds: int, buckets: list[RunBucket]
) -> RunStatsOut:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return RunStatsOut(
        code_id=code_id,
        after=go_time(after),
        before=go_time(before),
        bucket_seconds=bucket_seconds,
        buckets=[
            RunBucketOut(
                start=go_time(datetime.fromtimestamp(b.index * bucket_seconds, UTC)),
                completed=b.completed,
                failed=b.failed,
                started=b.started,
                p50_ms=ms(b.p50_ms),
                p95_ms=ms(b.p95_ms),
            )
            for b in buckets
        ],
    )


class RunCodeIn(BaseModel):
    """Optional body of `POST /run/{code_id}`: what the code sees as its request."""

    model_config = ConfigDict(extra="forbid", strict=True)

    params: dict[str, str] = Field(default_factory=dict)
    body: str = ""
    headers: dict[str, list[str]] = Field(default_factory=dict)
    method: str = "POST"


class RunCodeOut(BaseModel):
    code_id: str = Field(description="The id given in the path")
    result: CodeRunOut


class RunAcceptedOut(BaseModel):
    """`POST /run/{code_id}?async=true`: the run is recorded `started` and runs on."""

    run_id: str = Field(description="The run's id: `GET /coderun/{run_id}` reads it")


def run_json(run: CodeRun) -> dict[str, Any]:
    """The CodeRun object; `mongo_object_id` and `code_mongo_id` only when set, as `omitempty`.

    Rendered as it is stored (the run just executed is not read back), and rows written before
    values were cleaned on the way in (NaN kept by SQLite) still render: NaN becomes null.
    """
    body: dict[str, Any] = {"id": str(run.id)}
    if run.mongo_object_id:
        body["mongo_object_id"] = run.mongo_object_id
    body["code_id"] = str(run.code_id) if run.code_id else ""
    if run.code_mongo_id:
        body["code_mongo_id"] = run.code_mongo_id
    body.update(
        status=run.status,
        result=run.result if run.result is not None else "",
        extra=run.extra,
        params=run.params,
        body=run.body if run.body is not None else "",
        headers=run.headers,
        created_at=go_time(run.created_at),
        updated_at=go_time(run.updated_at),
    )
    rendered: dict[str, Any] = storable_json(body)
    return rendered
