"""storable_text and storable_json: what neither database stores becomes U+FFFD (or null)."""

from __future__ import annotations

import math

import pytest

from codeactions.db.text import storable_json, storable_text


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
    stored.encode("utf-8")  # no longer raises


def test_storable_json_cleans_strings_keys_and_non_finite_numbers() -> None:
    value = {
        "k\x00": ["\ud800", math.nan, math.inf, -math.inf, 1.5, 2, True, None],
        "nested": {"x": ("\udc00",)},
    }
    assert storable_json(value) == {
        "k\ufffd": ["\ufffd", None, None, None, 1.5, 2, True, None],
        "nested": {"x": ["\ufffd"]},
    }
