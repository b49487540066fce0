"""The Code JSON object, with the original's field names and Go's time format."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from codeactions.db.models import Code

CODE_TYPES = ("flow", "endpoint")
LANGUAGES = ("python", "javascript", "go")

# Raw-text request bodies are read from the stream, so FastAPI cannot infer them: declared here
# so that /docs shows the source field on create and update.
# Below `CODEACTIONS_MAX_SOURCE_BYTES` (1 MiB by default); the limit counts UTF-8 bytes.
MAX_SOURCE_CHARS = 1024 * 1024 - 1
RAW_SOURCE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "description": "The code's source, as raw UTF-8 text (any content type): less than "
        "`CODEACTIONS_MAX_SOURCE_BYTES` bytes (1 MiB by default), no NUL, none of the "
        "deployment's blacklisted terms.",
        "content": {
            "text/plain": {
                "schema": {
                    "type": "string",
                    "maxLength": MAX_SOURCE_CHARS,
                    "pattern": "^[^\\x00]*$",
                }
            }
        },
    }
}


def go_time(value: datetime) -> str:
    """RFC 3339 in UTC with `Z`, trailing zeros of the fraction dropped, as Go's time.MarshalJSON."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += "." + f"{value.microsecond:06d}".rstrip("0")
    return text + "Z"


class CodeOut(BaseModel):
    """The original's Code object (`internal/code/code.go`); empty `mongo_object_id`/`url` omitted."""

    id: str
    mongo_object_id: str | None = Field(default=None, description="Legacy ObjectID, when any.")
    name: str
    type: str
    source: str
    language: str
    url: str | None = None
    project_uuid: str
    created_at: str = Field(description="RFC 3339, UTC")
    updated_at: str = Field(description="RFC 3339, UTC")
    timeout: int = Field(description="Seconds")


@dataclass(frozen=True)
class LastRun:
    """What a code listing shows of the code's newest run."""

    id: uuid.UUID
    status: str
    created_at: datetime
    updated_at: datetime


class LastRunOut(BaseModel):
    id: str
    status: str = Field(description="started | completed | failed")
    created_at: str = Field(description="RFC 3339, UTC")
    updated_at: str = Field(description="RFC 3339, UTC")


class ListedCodeOut(CodeOut):
    """A code as `GET /code` lists it: with `last_run=true`, also its newest run."""

    last_run: LastRunOut | None = Field(
        default=None,
        description="Only with `last_run=true`: the code's newest run, or null when it has none",
    )


def last_run_json(run: LastRun | None) -> dict[str, str] | None:
    if run is None:
        return None
    return LastRunOut(
        id=str(run.id),
        status=run.status,
        created_at=go_time(run.created_at),
        updated_at=go_time(run.updated_at),
    ).model_dump()


def code_json(code: Code, *, default_timeout: int = 60) -> dict[str, Any]:
    body = CodeOut(
        id=str(code.id),
        mongo_object_id=code.mongo_object_id or None,
        name=code.name,
        type=code.type,
        source=code.source,
        language=code.language,
        url=code.url or None,
        project_uuid=code.project_uuid,
        created_at=go_time(code.created_at),
        updated_at=go_time(code.updated_at),
        # The original read a stored 0 back as 60.
        timeout=code.timeout or default_timeout,
    )
    return body.model_dump(exclude_none=True)
