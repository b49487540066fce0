"""The ids the API is called with: canonical UUIDs, and the original's 24-hex ObjectIDs."""

from __future__ import annotations

import re
import uuid

OBJECT_ID = re.compile(r"[0-9a-fA-F]{24}")


def parse_uuid(value: str) -> uuid.UUID | None:
    """A canonical 8-4-4-4-12 UUID, else None (as the original's IsValidUUID)."""
    if len(value) != 36:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def is_object_id(value: str) -> bool:
    return OBJECT_ID.fullmatch(value) is not None


def is_id(value: str) -> bool:
    """A UUID or an ObjectID: something a record could be stored under."""
    return parse_uuid(value) is not None or is_object_id(value)
