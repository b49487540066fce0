"""Projects and permissions as the HTTP API reads and writes them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from codeactions.db.models import Project

# The service's rules for identifiers and names (projects/service.py, db/text.py) as JSON Schema
# patterns, so the document says exactly what is accepted. Values are stripped of whitespace
# (`str.strip()`, which also takes some control characters) before they are checked.
_CONTROL = r"\x00-\x1f\x7f-\x9f"  # C0, DEL, C1
_WHITESPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Not blank (free text: a name).
NOT_BLANK = rf"[^{_WHITESPACE}]"
# Stripped, not blank and without control characters (a project uuid or an email).
IDENTIFIER = (
    rf"^[{_WHITESPACE}]*[^{_CONTROL}]*[^{_CONTROL}{_WHITESPACE}][^{_CONTROL}]*[{_WHITESPACE}]*$"
)
# A project created over HTTP is read back at /projects/{uuid}: its uuid holds no `/` and is not
# only dots (`.` and `..` are path steps). Checked by the route.
PROJECT_UUID = (
    rf"^[{_WHITESPACE}]*[^{_CONTROL}/]*[^{_CONTROL}{_WHITESPACE}/.][^{_CONTROL}/]*[{_WHITESPACE}]*$"
)
NO_CONTROL_CHARACTERS = rf"^[^{_CONTROL}]*$"


def _stripped(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value.strip()


# Strict: a number is not a uuid, "2" is not a role. The length is the sent value's, as the
# document says; the value is then stripped.
Text255 = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=255), AfterValidator(_stripped)
]


class ProjectIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    uuid: Text255 = Field(
        description="The project's uuid, as the projects service knows it.",
        json_schema_extra={"pattern": PROJECT_UUID},
    )
    name: Text255 = Field(json_schema_extra={"pattern": NOT_BLANK})


class ProjectOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    uuid: str
    name: str
    created_at: datetime
    updated_at: datetime


class ProjectWithRoleOut(ProjectOut):
    """A project as `GET /projects/{uuid}` answers it, with the caller's role in it."""

    role: str = Field(
        description="`admin` (the static token, service accounts), else the caller's role: "
        "`viewer`, `contributor` or `moderator`",
        json_schema_extra={"enum": ["admin", "viewer", "contributor", "moderator"]},
    )

    @classmethod
    def of(cls, project: Project, role: str) -> ProjectWithRoleOut:
        return cls(**ProjectOut.model_validate(project).model_dump(), role=role)


def _whole_number(value: object) -> object:
    """`3.0` as `3`: JSON Schema (and JavaScript) count it as the integer it is."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class RoleIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # The range is checked by the service, which words the error for people.
    role: Annotated[int, BeforeValidator(_whole_number)] = Field(
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
