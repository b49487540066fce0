"""Secret rules: which names and values are accepted, who may do what, and handing a run its
project's secrets. Values are sealed before they are stored and never come back through the API."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from codeactions.access.service import authorize, authorize_secret
from codeactions.auth.principals import Principal, Role
from codeactions.codes.service import valid_project_uuid
from codeactions.db.models import Secret, utcnow
from codeactions.db.text import has_control_characters, is_storable
from codeactions.errors import BadRequest, SecretNameTaken, SecretNotFound, Unavailable
from codeactions.ids import parse_uuid
from codeactions.parts import Part
from codeactions.secrets import repository
from codeactions.secrets.crypto import SecretBox, UnreadableSecret

log = logging.getLogger(__name__)

NAME_MAX_CHARS = 255  # secrets.name VARCHAR(255)
VALUE_MAX_CHARS = 64 * 1024

# A JSON object as the route parsed it.
Body = Mapping[str, object]


def _text(body: Body, field: str) -> str:
    """A string field of the body; absent or null is empty, as Go decoded it."""
    value = body.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"invalid body: {field} must be a string")
    return value


def valid_name(name: str) -> str:
    # Names are what code asks for (`engine.secrets.get("API_KEY")`): kept exactly as sent.
    if len(name) > NAME_MAX_CHARS:
        raise BadRequest(f"name is longer than {NAME_MAX_CHARS} characters")
    if has_control_characters(name):
        raise BadRequest("name must not contain control characters")
    return name


def valid_value(value: str) -> str:
    if len(value) > VALUE_MAX_CHARS:
        raise BadRequest(f"value is longer than {VALUE_MAX_CHARS} characters")
    # Refused, not replaced: a changed character would be a different secret.
    if not is_storable(value):
        raise BadRequest("value must be text without NUL characters or lone surrogates")
    return value


async def create_secret(
    session: AsyncSession, principal: Principal, *, box: SecretBox, body: Body
) -> Secret:
    # Required fields first, in the original's order and words.
    name, value, project = _text(body, "name"), _text(body, "value"), _text(body, "project_uuid")
    if not name:
        raise BadRequest("name is required")
    if not value:
        raise BadRequest("value is required")
    if not project:
        raise BadRequest("project_uuid is required")
    name, value, project = valid_name(name), valid_value(value), valid_project_uuid(project)
    # The caller names the project, so a non-member learns nothing new from a 403 (as for codes).
    await authorize(session, principal, project, Role.MODERATOR)
    if await repository.name_taken(session, project_uuid=project, name=name):
        raise SecretNameTaken(name)
    return await repository.add_secret(
        session, project_uuid=project, name=name, value=box.seal(value)
    )


async def _visible_secret(
    session: AsyncSession, principal: Principal, secret_id: str, needed: Role
) -> Secret:
    """The secret when the principal holds `needed` in its project; another project's is a 404."""
    key = parse_uuid(secret_id)
    secret = await repository.get_secret(session, key) if key is not None else None
    if secret is None:
        raise SecretNotFound()
    await authorize_secret(session, principal, secret, needed)
    return secret


async def get_secret(session: AsyncSession, principal: Principal, *, secret_id: str) -> Secret:
    return await _visible_secret(session, principal, secret_id, Role.VIEWER)


async def list_secrets(
    session: AsyncSession, principal: Principal, *, project_uuid: str | None
) -> list[Secret]:
    project = valid_project_uuid(project_uuid)
    await authorize(session, principal, project, Role.VIEWER)
    return await repository.list_secrets(session, project_uuid=project)


async def update_secret(
    session: AsyncSession, principal: Principal, *, box: SecretBox, secret_id: str, body: Body
) -> Secret:
    """Rename and/or replace the value; absent or empty fields keep what is stored."""
    secret = await _visible_secret(session, principal, secret_id, Role.MODERATOR)
    name, value = _text(body, "name"), _text(body, "value")
    if name:
        valid_name(name)
    if value:
        valid_value(value)
    if name and name != secret.name:
        if await repository.name_taken(session, project_uuid=secret.project_uuid, name=name):
            raise SecretNameTaken(name)
        secret.name = name
    if value:
        secret.value = box.seal(value)
    secret.updated_at = utcnow()
    await repository.save(session, secret)
    return secret


async def delete_secret(session: AsyncSession, principal: Principal, *, secret_id: str) -> None:
    secret = await _visible_secret(session, principal, secret_id, Role.MODERATOR)
    await repository.delete_secret(session, secret)


# --- runs -----------------------------------------------------------------------------------

SECRETS_UNAVAILABLE = "could not load the project's secrets"
SECRETS_UNREADABLE = (
    "the project's secrets cannot be decrypted with the configured keys "
    "(CODEACTIONS_SECRETS_KEY, CODEACTIONS_SECRETS_OLD_KEYS)"
)


class SecretVault:
    """Hands a run its project's secrets, decrypted, as they are when the run starts."""

    def __init__(self, values: repository.ProjectValues, box: SecretBox, *, timeout: float) -> None:
        self._values = values
        self._box = box
        self._timeout = timeout  # a database that hangs fails the read, not the caller's wait

    async def for_run(self, project_uuid: str) -> dict[str, str]:
        """{name: plaintext}; Unavailable when the database cannot say or a value cannot be
        decrypted (the run fails rather than run without a secret it expects)."""
        try:
            async with asyncio.timeout(self._timeout):
                stored = await self._values.of_project(project_uuid)
        except Exception as exc:
            log.warning("loading the secrets of project %s failed: %s", project_uuid, exc)
            raise Unavailable(SECRETS_UNAVAILABLE) from exc
        if not stored:
            return {}
        try:
            return {name: self._box.unseal(value) for name, value in stored}
        except UnreadableSecret:
            log.error("a secret of project %s: %s", project_uuid, SECRETS_UNREADABLE)
            raise Unavailable(SECRETS_UNREADABLE) from None


# --- re-encryption ----------------------------------------------------------------------------

BATCH = 500


@dataclass
class SealReport:
    total: int = 0  # rows looked at
    changed: int = 0  # rewritten under the current key (plaintext or an old key before)
    unreadable: int = 0  # under no key this service holds: left as they are


async def seal_all(sessionmaker: async_sessionmaker[AsyncSession], box: SecretBox) -> SealReport:
    """Rewrite every secret that is plaintext or sealed under an old key with the current key,
    a batch per transaction. A row changed meanwhile by the API is left to its new value."""
    report = SealReport()
    after = None
    while True:
        async with sessionmaker() as session, session.begin():
            rows = await repository.values_after(session, after, BATCH)
            for secret_id, stored in rows:
                report.total += 1
                try:
                    sealed = box.resealed(stored)
                except UnreadableSecret:
                    report.unreadable += 1
                    continue
                if sealed is not None and await repository.replace_value(
                    session, secret_id, old=stored, new=sealed
                ):
                    report.changed += 1
        if len(rows) < BATCH:
            return report
        after = rows[-1][0]


SECRET_VAULT: Part[SecretVault] = Part("secret_vault")
