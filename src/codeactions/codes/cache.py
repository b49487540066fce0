"""A short-lived cache of codes for the execution path, so a run does not wait on a lookup."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends

from codeactions.db.models import Code
from codeactions.parts import Part, part


class CodeCache:
    """Codes by the id they were invoked with (UUID or ObjectID), for `ttl` seconds.

    This process drops an entry as soon as it updates or deletes the code; another replica's
    change is seen after at most `ttl` seconds. A `ttl` of 0 turns the cache off.
    """

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Code]] = {}

    def get(self, key: str) -> Code | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, code = entry
        if time.monotonic() >= expires:
            del self._entries[key]
            return None
        return code

    def put(self, key: str, code: Code) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # rare; simpler than LRU bookkeeping on the hot path
        self._entries[key] = (time.monotonic() + self.ttl, code)

    def invalidate(self, code: Code) -> None:
        for key in (str(code.id), code.mongo_object_id):
            if key:
                self._entries.pop(key, None)
                self._entries.pop(key.lower(), None)


CODE_CACHE: Part[CodeCache] = Part("code_cache")
CodeCacheDep = Annotated[CodeCache, Depends(part(CODE_CACHE))]
