"""The events' messages as the original publishes them, parsed strictly; `InvalidMessage` when not."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from codeactions.projects import service

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
# Stored as given, as the original did: 3 and above act as Moderator, 0 and below grant nothing.
RoleValue = Annotated[int, Field(ge=service.STORED_ROLES[0], le=service.STORED_ROLES[1])]


class InvalidMessage(Exception):
    """A message that can never be applied: it goes to the dead-letter queue."""


class _Message(BaseModel):
    # Strict like Go's json.Unmarshal: `"3"` is not a role, `1` is not a bool. Unknown fields
    # are ignored as Go does.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


M = TypeVar("M", bound=_Message)


class Authorization(_Message):
    user_email: Text
    role: RoleValue  # required: a member without a role is a broken item, not role 0


class ProjectCreated(_Message):
    """`internal/eventdriven/events.go` ProjectCreationMessage; only uuid, name and
    authorizations are used, the other fields are type-checked as the original did."""

    uuid: Text
    name: Text
    is_template: bool | None = None
    user_email: str | None = None
    date_format: str | None = None
    template_type_uuid: str | None = None
    timezone: str | None = None
    organization_id: int | None = None
    extra_fields: Any = None
    # Each item is checked on its own: a bad one is set aside, the others are applied.
    authorizations: list[Any] | None = None
    description: str | None = None
    organization_uuid: str | None = None
    brain_on: bool | None = None


class PermissionChanged(_Message):
    action: Literal["create", "update", "delete"]
    project: Text
    user: Text
    role: RoleValue | None = None  # ignored for `delete`

    @model_validator(mode="after")
    def _role_for_writes(self) -> PermissionChanged:
        if self.action != "delete" and self.role is None:
            raise ValueError("role is required to create or update a permission")
        return self


def first_error(exc: ValidationError) -> str:
    """Where and what, never the offending value (it may be anything the publisher sent)."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where}: {first['msg']}" if where else first["msg"]


def parse(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidMessage(first_error(exc)) from exc
