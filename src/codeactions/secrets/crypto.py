"""Secret values at rest: sealed with Fernet under the current key, read under any known key.

A sealed value is `enc:v1:<Fernet token>`. A value without the prefix is plaintext, as the
original service wrote it; it stays readable until `codeactions secrets encrypt` seals it.

The key comes from `CODEACTIONS_SECRETS_KEY` (with `CODEACTIONS_SECRETS_OLD_KEYS` still read);
without it, from a key file generated once (mode 0600) beside the SQLite database, or in the
spool directory with PostgreSQL, or wherever `CODEACTIONS_SECRETS_KEY_FILE` says.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from fastapi import Depends

from codeactions.config import Settings, check_secrets_key
from codeactions.parts import Part, part
from codeactions.spool import spool_root

log = logging.getLogger(__name__)

PREFIX = "enc:v1:"
KEY_FILE_NAME = "secrets.key"


class UnreadableSecret(Exception):
    """A value sealed under a key this service does not hold (or a damaged one)."""


class SecretsKeyError(RuntimeError):
    """The configured key file cannot be used; the service does not start."""


def new_key() -> str:
    return Fernet.generate_key().decode("ascii")


def is_sealed(stored: str) -> bool:
    return stored.startswith(PREFIX)


class SecretBox:
    """Seals values under the current key and unseals those under the current or an old key."""

    def __init__(self, key: str, old_keys: Sequence[str] = ()) -> None:
        self._current = Fernet(key.encode("ascii"))
        self._any = MultiFernet([self._current, *(Fernet(k.encode("ascii")) for k in old_keys)])

    def seal(self, plaintext: str) -> str:
        return PREFIX + self._current.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def unseal(self, stored: str) -> str:
        """The plaintext of a stored value (a value without the prefix is plaintext already)."""
        if not is_sealed(stored):
            return stored
        try:
            return self._any.decrypt(_token(stored)).decode("utf-8")
        except (InvalidToken, UnicodeDecodeError):
            raise UnreadableSecret("sealed under an unknown key, or damaged") from None

    def resealed(self, stored: str) -> str | None:
        """The value sealed under the current key when it is plaintext or under an old key;
        None when it already is under the current key. Raises UnreadableSecret."""
        if is_sealed(stored):
            try:
                self._current.decrypt(_token(stored))
                return None
            except InvalidToken:
                pass
        return self.seal(self.unseal(stored))


def _token(stored: str) -> bytes:
    return stored[len(PREFIX) :].encode("ascii", "replace")


def key_file_path(settings: Settings) -> Path | None:
    """Where the key is kept when none is configured; None for an in-memory SQLite database."""
    if settings.secrets.key_file:
        return Path(settings.secrets.key_file)
    if settings.database.is_sqlite:
        path = settings.database.sqlite_path
        return Path(f"{path}-secrets.key") if path else None
    return spool_root(settings.spool, settings.database) / KEY_FILE_NAME


def secret_box(settings: Settings) -> SecretBox:
    """The box of the configured key; without one, the key file's, created on first use."""
    configured = settings.secrets
    if configured.key:
        return SecretBox(configured.key, configured.old_keys)
    path = key_file_path(settings)
    if path is None:
        log.info("in-memory database: its secrets are sealed with a key that lives as long as it")
        return SecretBox(new_key(), configured.old_keys)
    key, created = _key_from_file(path)
    shared = "" if settings.database.is_sqlite else " Every replica must use the same key."
    log.warning(
        "CODEACTIONS_SECRETS_KEY is not set: project secrets are sealed with the key %s %s; "
        "keep it with the database's backups (secrets cannot be read without it), or set "
        "CODEACTIONS_SECRETS_KEY.%s",
        "generated now in" if created else "kept in",
        path,
        shared,
    )
    return SecretBox(key, configured.old_keys)


def _key_from_file(path: Path) -> tuple[str, bool]:
    """The key in `path`, generated there first when the file does not exist; True if generated."""
    if path.exists():
        return _read_key(path), False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Written whole under a temporary name, then linked into place: a process starting at the
    # same moment either finds no file or a complete one, and exactly one key wins.
    draft = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (new_key() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(draft, path)
        created = True
    except FileExistsError:
        created = False
    finally:
        draft.unlink()
    return _read_key(path), created


def _read_key(path: Path) -> str:
    try:
        if path.stat().st_mode & 0o077:
            log.warning("secrets key file %s was readable by others: made it 0600", path)
            path.chmod(0o600)
        text = path.read_text("ascii").strip()
        return check_secrets_key(text)
    except (OSError, ValueError) as exc:
        raise SecretsKeyError(f"cannot use the secrets key file {path}: {exc}") from exc


SECRET_BOX: Part[SecretBox] = Part("secret_box")
SecretBoxDep = Annotated[SecretBox, Depends(part(SECRET_BOX))]
