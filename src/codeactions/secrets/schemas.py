"""The Secret JSON object (the original's field names, value always masked) and request bodies."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from codeactions.codes.schemas import go_time
from codeactions.codes.service import PROJECT_UUID_MAX_CHARS
from codeactions.db.models import Secret
from codeactions.projects.schemas import NO_CONTROL_CHARACTERS
from codeactions.secrets.masking import MASK
from codeactions.secrets.service import NAME_MAX_CHARS, VALUE_MAX_CHARS


class SecretOut(BaseModel):
    """The original's Secret object (`internal/secrets/secret.go`), its value write-only."""

    id: str
    name: str
    value: Literal["********"] = Field(description="Always `********`: values are write-only")
    project_uuid: str
    created_at: str = Field(description="RFC 3339, UTC")
    updated_at: str = Field(description="RFC 3339, UTC")


def secret_json(secret: Secret) -> dict[str, Any]:
    return SecretOut(
        id=str(secret.id),
        name=secret.name,
        value=MASK,
        project_uuid=secret.project_uuid,
        created_at=go_time(secret.created_at),
        updated_at=go_time(secret.updated_at),
    ).model_dump()


# The bodies are read by the routes (the service words their errors as the original did), so
# they are declared here for the API document, with the rules the service enforces.
_NAME: dict[str, Any] = {
    "type": "string",
    "maxLength": NAME_MAX_CHARS,
    "pattern": NO_CONTROL_CHARACTERS,
    "description": "What code asks for: `engine.secrets.get(name)`; unique in the project.",
}
_VALUE: dict[str, Any] = {
    "type": "string",
    "maxLength": VALUE_MAX_CHARS,
    "pattern": "^[^\\x00]*$",
    "description": "Stored encrypted; never returned.",
}
_PROJECT_UUID: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": PROJECT_UUID_MAX_CHARS,
    "pattern": NO_CONTROL_CHARACTERS,
}


def _json_body(schema: dict[str, Any], *, required: bool, description: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": required,
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    }


CREATE_BODY = _json_body(
    {
        "type": "object",
        "properties": {
            "name": {**_NAME, "minLength": 1},
            "value": {**_VALUE, "minLength": 1},
            "project_uuid": _PROJECT_UUID,
        },
        "required": ["name", "value", "project_uuid"],
    },
    required=True,
    description="The new secret.",
)
UPDATE_BODY = _json_body(
    {
        "type": "object",
        "properties": {
            "name": {"anyOf": [_NAME, {"type": "null"}]},
            "value": {"anyOf": [_VALUE, {"type": "null"}]},
        },
    },
    required=False,
    description="What changes; absent, null or empty fields keep what is stored.",
)
