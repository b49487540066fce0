"""storable_text and storable_json: what neither database stores becomes U+FFFD (or null);
identifiers, checked instead, and which columns are which."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import JSON, String

from codeactions.db.models import Base, StorableJson, StorableString, StorableText
from codeactions.db.text import (
    has_control_characters,
    is_storable,
    storable_json,
    storable_text,
)

# Columns written exactly as given: every value is checked (or built) before it reaches SQL.
IDENTIFIER_COLUMNS = {
    "codes.mongo_object_id",  # 24 hex digits, as looked up
    "codes.type",  # fixed vocabularies
    "codes.language",
    "codes.project_uuid",  # refused with control characters
    "codelibs.mongo_object_id",
    "codelibs.name",  # written by operators, only read by the API
    "codelibs.language",
    "coderuns.mongo_object_id",
    "coderuns.code_mongo_id",  # an ObjectID the code was found by
    "coderuns.status",
    "codelogs.code_id",  # the UUID or ObjectID the code was found by
    "codelogs.type",  # debug | info | error, set by the supervisor
    "user_permissions.mongo_object_id",
    "user_permissions.project_uuid",  # refused with control characters
    "user_permissions.email",
    "projects.mongo_object_id",
    "projects.uuid",
    "secrets.name",  # refused with control characters
    "secrets.project_uuid",
    "secrets.value",  # ciphertext; values with NUL or lone surrogates are refused
}


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("plain é ✓ \U0001f600", "plain é ✓ \U0001f600"),
        ("lone \ud800 high", "lone \ufffd high"),
        ("lone \udfff low", "lone \ufffd low"),
        ("reversed \udc00\ud800", "reversed \ufffd\ufffd"),
        ("pair \ud83d\ude00", "pair \U0001f600"),  # two code points forming one character
        ("nul \x00 here", "nul \ufffd here"),
        ("", ""),
    ],
)
def test_storable_text(text: str, stored: str) -> None:
    assert storable_text(text) == stored
    assert storable_text(stored) == stored
    assert is_storable(stored)
    assert is_storable(text) == (text == stored)
    stored.encode("utf-8")  # no longer raises


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        ("11111111-1111-1111-1111-111111111111", False),
        ("Ana.Lima+é@exemplo.org", False),
        ("replacement \ufffd", False),
        ("\U0001f600", False),
        ("nul \x00", True),
        ("tab \t", True),
        ("unit separator \x1f", True),
        ("del \x7f", True),
        ("next line \x85", True),
        ("lone \ud800", True),
        ("pair \ud83d\ude00", True),  # two code points: no encoder writes them as they are
    ],
)
def test_identifiers_may_not_hold_control_characters(text: str, refused: bool) -> None:
    assert has_control_characters(text) is refused


def test_every_text_column_is_storable_or_an_identifier() -> None:
    """A new text column must be free text (stored whatever it holds) or a checked identifier."""
    free, exact = set(), set()
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            name = f"{table.name}.{column.name}"
            if isinstance(column.type, StorableText | StorableString | StorableJson):
                free.add(name)
            elif isinstance(column.type, String | JSON):
                exact.add(name)
    assert exact == IDENTIFIER_COLUMNS
    assert {"codes.name", "codes.source", "projects.name", "coderuns.params"} <= free


def test_storable_json_cleans_strings_keys_and_non_finite_numbers() -> None:
    value = {
        "k\x00": ["\ud800", math.nan, math.inf, -math.inf, 1.5, 2, True, None],
        "nested": {"x": ("\udc00",)},
    }
    assert storable_json(value) == {
        "k\ufffd": ["\ufffd", None, None, None, 1.5, 2, True, None],
        "nested": {"x": ["\ufffd"]},
    }
