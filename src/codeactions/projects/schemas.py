"""Projects and permissions as the HTTP API reads and writes them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# Strict: a number is not a uuid, "2" is not a role.
Text255 = Annotated[
    str, StringConstraints(strict=True, strip_whitespace=True, min_length=1, max_length=255)
]


class ProjectIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    uuid: Text255 = Field(description="The project's uuid, as the projects service knows it.")
    name: Text255


class ProjectOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    uuid: str
    name: str
    created_at: datetime
    updated_at: datetime


class RoleIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # The range is checked by the service, which words the error for people.
    role: int = Field(
        strict=True,
        description="1 viewer, 2 contributor, 3 moderator.",
        json_schema_extra={"minimum": 1, "maximum": 3},
    )


class PermissionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    email: str
    role: int
    created_at: datetime
    updated_at: datetime
