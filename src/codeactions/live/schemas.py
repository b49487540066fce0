"""The /web frames and each package's data, as JSON Schemas (published at `GET /web/schema`)."""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from codeactions.codes.schemas import CODE_TYPES, LANGUAGES
from codeactions.codes.service import TIMEOUT_MAX, TIMEOUT_MIN

MAX_PER_PAGE = 100


class Status(IntEnum):
    OK = 0
    ERROR = 1  # the service failed, or the rate limit was exceeded
    INVALID = 2  # the frame or its data is not what the package takes
    DENIED = 3  # the principal's project role does not allow it
    NOT_FOUND = 4


class Data(BaseModel):
    # As a JSON Schema validator would: no coercion ("1" is no integer), no unknown fields.
    model_config = ConfigDict(extra="forbid", strict=True)


class ListCodes(Data):
    project_uuid: str
    code_type: Literal[CODE_TYPES] | None = None  # type: ignore[valid-type]
    page: int = Field(1, ge=1)
    per_page: int = Field(20, ge=1, le=MAX_PER_PAGE)


class ById(Data):
    id: str = Field(min_length=1)


class SaveCode(Data):
    id: str | None = Field(None, description="The code to update; absent: create one")
    project_uuid: str
    name: str
    language: Literal[LANGUAGES]  # type: ignore[valid-type]
    type: Literal[CODE_TYPES]  # type: ignore[valid-type]
    source: str
    timeout: int | None = Field(None, ge=TIMEOUT_MIN, le=TIMEOUT_MAX)


class RunCode(Data):
    id: str = Field(min_length=1)
    params: dict[str, str] = Field(default_factory=dict)
    body: str = ""
    headers: dict[str, list[str]] = Field(default_factory=dict)
    method: str = "POST"
    source: str | None = Field(
        None, description="Run this source instead of the code's (a draft), as a run of the code"
    )


class ListRuns(Data):
    code_id: str = Field(min_length=1)
    status: Literal["started", "completed", "failed"] | None = None
    after: str | None = Field(None, description="Runs created at or after (RFC 3339 or a date)")
    before: str | None = Field(None, description="Runs created at or before")
    page: int = Field(1, ge=1)
    per_page: int = Field(20, ge=1, le=MAX_PER_PAGE)


class FollowRun(Data):
    run_id: str = Field(min_length=1)
    after_seq: int = Field(0, ge=0, description="Send the run's lines after this one")


class FollowProject(Data):
    project_uuid: str


class StopFollowing(Data):
    req_id: str = Field(description="The req_id of the pkg 5, 8 or 9 request to stop")


class Request(BaseModel):
    """A client frame."""

    pkg_id: int
    req_id: str
    data: dict[str, Any] = Field(default_factory=dict)


class Answer(BaseModel):
    """A server frame: the answer to a request, or an event of a subscription (`data.event`)."""

    pkg_id: int
    req_id: str
    status_code: Status
    msg: str | None = None
    data: Any = None
    meta: dict[str, int] | None = Field(None, description="page, per_page, total, pages")
