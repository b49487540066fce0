"""Helpers for tests acting as OIDC users with project roles."""

from __future__ import annotations

import re

from fastapi import FastAPI

from codeactions.auth.dependencies import VERIFIER
from codeactions.auth.principals import Principal
from codeactions.db.models import UserPermission
from codeactions.db.session import SESSIONMAKER
from codeactions.errors import Unauthorized
from codeactions.runner.base import CompileError

PROJECT = "11111111-1111-4111-8111-111111111111"
OTHER_PROJECT = "22222222-2222-4222-8222-222222222222"
VIEWER = "viewer@example.com"
CONTRIBUTOR = "contributor@example.com"
MODERATOR = "moderator@example.com"
OUTSIDER = "outsider@example.com"  # a member of OTHER_PROJECT only

# RFC 3339 in UTC with `Z`, as Go's encoding/json writes time.Time.
GO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")


class FakeOidc:
    """Stands in for the OIDC verifier (the `app` fixture hands one to `create_app`). Off, it
    refuses every token, as an app without OIDC does; on, the token `user:<email>` is that user,
    anything else is refused."""

    def __init__(self) -> None:
        self.on = False

    async def principal(self, token: str) -> Principal:
        if not self.on or not token.startswith("user:"):
            raise Unauthorized("not authorized")
        return Principal(kind="user", email=token.removeprefix("user:"))


def as_user(email: str) -> dict[str, str]:
    return {"Authorization": f"Bearer user:{email}"}


async def enable_users(app: FastAPI) -> None:
    """Turn on the fake OIDC and give the standard users their roles."""
    app.state.parts[VERIFIER].on = True
    async with app.state.parts[SESSIONMAKER]() as session, session.begin():
        session.add_all(
            [
                UserPermission(project_uuid=PROJECT, email=VIEWER, role=1),
                UserPermission(project_uuid=PROJECT, email=CONTRIBUTOR, role=2),
                UserPermission(project_uuid=PROJECT, email=MODERATOR, role=3),
                UserPermission(project_uuid=OTHER_PROJECT, email=OUTSIDER, role=3),
            ]
        )


class FakeRunner:
    """Refuses Go sources that do not declare `package main`, as a compiler would."""

    def __init__(self) -> None:
        self.checked: list[str] = []

    async def check(self, language: str, source: str) -> None:
        self.checked.append(language)
        if "package main" not in source:
            raise CompileError("./main.go:1:1: expected 'package', found 'EOF'")

    async def close(self) -> None:
        return None
