"""Masking secret values in what the service keeps about a run (its result, error and logs).

Rule: every occurrence of a value with at least MIN_MASKED_CHARS non-blank characters becomes
MASK, also in the forms a JSON result or message carries it (escaped, `\\uXXXX`). Shorter values
are not masked: a secret `1` or `abc` would turn every `1` or `abc` of ordinary text into stars,
and a value that short protects nothing anyway. Where occurrences of several secrets overlap,
the union of their spans is masked, so no part of any of them shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

MASK = "********"
MIN_MASKED_CHARS = 4


def _forms(value: str) -> set[str]:
    """The value as it is, and as it appears inside a JSON string (escaped, ASCII-only)."""
    return {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}


class Masker:
    """Replaces the given secret values by MASK in text and in JSON-like values."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        needles = {
            form
            for value in values
            if len(value.strip()) >= MIN_MASKED_CHARS
            for form in _forms(value)
        }
        self._needles = tuple(needles)

    def __bool__(self) -> bool:
        return bool(self._needles)

    def __call__(self, text: str) -> str:
        if not self._needles or not text:
            return text
        spans: list[tuple[int, int]] = []
        for needle in self._needles:
            start = text.find(needle)
            while start != -1:
                spans.append((start, start + len(needle)))
                start = text.find(needle, start + 1)
        if not spans:
            return text
        spans.sort()
        parts: list[str] = []
        done = 0  # text before this index is emitted
        begin, end = spans[0]
        for span_begin, span_end in spans[1:]:
            if span_begin <= end:  # overlapping or touching: one masked stretch
                end = max(end, span_end)
                continue
            parts += (text[done:begin], MASK)
            done, (begin, end) = end, (span_begin, span_end)
        parts += (text[done:begin], MASK, text[end:])
        return "".join(parts)

    def json(self, value: Any) -> Any:
        """`value` with every string in it (keys too) masked."""
        if not self._needles:
            return value
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self(k) if isinstance(k, str) else k: self.json(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.json(v) for v in value]
        return value


NO_MASK = Masker()
