"""Project and permission rules, as the HTTP routes and the RabbitMQ consumers use them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from codeactions.db.models import Project, UserPermission
from codeactions.db.session import SESSIONMAKER
from codeactions.errors import BadRequest
from codeactions.projects import service


@pytest.fixture
async def session(app: FastAPI) -> AsyncIterator[AsyncSession]:
    async with app.state.parts[SESSIONMAKER]() as s:
        yield s
        await s.commit()


async def count(session: AsyncSession, model: Any) -> int:
    return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_create_project_is_idempotent(session: AsyncSession) -> None:
    first = await service.create_project(session, uuid="p1", name="First")
    again = await service.create_project(session, uuid="p1", name="Renamed")
    assert again.id == first.id
    assert again.name == "First"
    assert await count(session, Project) == 1


async def test_ensure_project_says_whether_it_created(session: AsyncSession) -> None:
    assert (await service.ensure_project(session, uuid="p1", name="n"))[1] is True
    assert (await service.ensure_project(session, uuid="p1", name="n"))[1] is False


@pytest.mark.parametrize("uuid,name", [("", "n"), ("  ", "n"), ("p", ""), ("p" * 256, "n")])
async def test_create_project_refuses_empty_or_long_values(
    session: AsyncSession, uuid: str, name: str
) -> None:
    with pytest.raises(BadRequest):
        await service.create_project(session, uuid=uuid, name=name)


async def test_add_permission_inserts_once_and_keeps_the_first_role(
    session: AsyncSession,
) -> None:
    assert await service.add_permission(session, project_uuid="p1", email="a@x.org", role=1)
    assert not await service.add_permission(session, project_uuid="p1", email="A@X.org ", role=3)
    permissions = await service.list_permissions(session, project_uuid="p1")
    assert [(p.email, p.role) for p in permissions] == [("a@x.org", 1)]


async def test_grant_role_adds_then_updates(session: AsyncSession) -> None:
    added = await service.grant_role(session, project_uuid="p1", email="a@x.org", role=1)
    updated = await service.grant_role(session, project_uuid="p1", email="a@x.org", role=3)
    assert updated.id == added.id
    assert updated.role == 3
    assert await count(session, UserPermission) == 1


async def test_revoke_role_reports_whether_there_was_a_member(session: AsyncSession) -> None:
    await service.grant_role(session, project_uuid="p1", email="a@x.org", role=2)
    assert await service.revoke_role(session, project_uuid="p1", email="A@x.org")
    assert not await service.revoke_role(session, project_uuid="p1", email="a@x.org")
    assert await count(session, UserPermission) == 0


async def test_permissions_of_one_project_do_not_touch_another(session: AsyncSession) -> None:
    await service.grant_role(session, project_uuid="p1", email="a@x.org", role=3)
    await service.grant_role(session, project_uuid="p2", email="a@x.org", role=1)
    assert await service.revoke_role(session, project_uuid="p2", email="a@x.org")
    [kept] = await service.list_permissions(session, project_uuid="p1")
    assert kept.role == 3


async def test_rows_written_by_the_original_match_in_any_case(session: AsyncSession) -> None:
    # The original stored emails as given; such a row must not be duplicated by a new write.
    session.add(UserPermission(project_uuid="p1", email="Legacy@X.org", role=1))
    await session.flush()
    assert not await service.add_permission(
        session, project_uuid="p1", email="legacy@x.org", role=2
    )
    updated = await service.grant_role(session, project_uuid="p1", email="LEGACY@x.org", role=3)
    assert updated.email == "Legacy@X.org"
    assert updated.role == 3
    assert await count(session, UserPermission) == 1
    assert await service.revoke_role(session, project_uuid="p1", email="legacy@x.org")


@pytest.mark.parametrize("role", [0, 4, -1, True, "2", 2.0, None])
async def test_roles_outside_1_to_3_are_refused(session: AsyncSession, role: Any) -> None:
    for call in (service.add_permission, service.grant_role):
        with pytest.raises(BadRequest, match="role must be 1 \\(viewer\\)"):
            await call(session, project_uuid="p1", email="a@x.org", role=role)
    assert await count(session, UserPermission) == 0


@pytest.mark.parametrize("email", ["", "   ", "a" * 250 + "@x.org"])
async def test_empty_or_long_emails_are_refused(session: AsyncSession, email: str) -> None:
    with pytest.raises(BadRequest):
        await service.grant_role(session, project_uuid="p1", email=email, role=1)
