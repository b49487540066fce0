"""The event handlers: a project created, a permission changed, applied in a session."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from codeactions.errors import BadRequest
from codeactions.projects import service
from codeactions.projects.consumers.messages import (
    Authorization,
    PermissionChanged,
    ProjectCreated,
    first_error,
    parse,
)


@dataclass(frozen=True)
class SetAside:
    """A part of a message that could not be applied while the rest was: it is dead-lettered
    alone, as a message of the same kind holding only that part."""

    body: bytes
    reason: str
    context: dict[str, Any]  # for the log: which project, which item (known fields only)


async def apply_project_created(session: AsyncSession, body: bytes) -> list[SetAside]:
    message = parse(ProjectCreated, body)
    await service.create_project(session, uuid=message.uuid, name=message.name)
    set_aside = []
    for index, item in enumerate(message.authorizations or ()):
        try:
            authorization = Authorization.model_validate(item)
            await service.add_permission(
                session,
                project_uuid=message.uuid,
                email=authorization.user_email,
                role=authorization.role,
                role_as_given=True,
            )
        except (ValidationError, BadRequest) as exc:
            what = first_error(exc) if isinstance(exc, ValidationError) else str(exc)
            set_aside.append(_authorization_set_aside(message, index, item, what))
    return set_aside


def _authorization_set_aside(
    message: ProjectCreated, index: int, item: object, what: str
) -> SetAside:
    part = {"uuid": message.uuid, "name": message.name, "authorizations": [item]}
    context: dict[str, Any] = {"project_uuid": message.uuid, "authorization": index}
    if isinstance(item, dict):
        context.update({k: str(item[k])[:100] for k in ("user_email", "role") if k in item})
    return SetAside(json.dumps(part).encode(), f"authorizations.{index}: {what}", context)


async def apply_permission_changed(session: AsyncSession, body: bytes) -> list[SetAside]:
    message = parse(PermissionChanged, body)
    if message.action == "create":
        assert message.role is not None
        await service.add_permission(
            session,
            project_uuid=message.project,
            email=message.user,
            role=message.role,
            role_as_given=True,
        )
    elif message.action == "update":
        assert message.role is not None
        await service.grant_role(
            session,
            project_uuid=message.project,
            email=message.user,
            role=message.role,
            role_as_given=True,
        )
    else:
        await service.revoke_role(session, project_uuid=message.project, email=message.user)
    return []


# Applies a message in the session (the caller commits); returns the parts set aside.
Apply = Callable[[AsyncSession, bytes], Awaitable[list[SetAside]]]
