"""Principals and roles."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal


class Role(IntEnum):
    VIEWER = 1  # reads codes, runs and logs
    CONTRIBUTOR = 2  # also creates, updates and runs codes
    MODERATOR = 3  # also deletes codes and manages project settings


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    `admin`: the static token; `internal`: an OIDC token with `can_communicate_internally`
    (a service account, all projects, as the original); `user`: an OIDC user whose project
    roles come from `user_permissions`.
    """

    kind: Literal["admin", "internal", "user"]
    email: str = ""

    @property
    def sees_all_projects(self) -> bool:
        """Admins and service accounts act on every project, with the Moderator's rights."""
        return self.kind in ("admin", "internal")


def normalize_email(email: str) -> str:
    """The form emails are stored and compared in.

    Emails are compared case-insensitively (identity providers differ in the case they hand
    out, and a mail domain is case-insensitive anyway), so they are kept stripped and lowercased.
    """
    return email.strip().lower()
