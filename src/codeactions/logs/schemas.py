"""The CodeLog object and the paged list, with the original's field names."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from codeactions.codes.schemas import go_time
from codeactions.logs.store import LogEntry

PAGE_SIZE = 20  # fixed, as the original (codelog.go:50-52)


class CodeLogOut(BaseModel):
    id: str
    run_id: str
    code_id: str = Field(description="The id the code was invoked with (UUID or ObjectID)")
    type: str = Field(description="debug | info | error")
    content: str
    created_at: str = Field(description="RFC 3339, UTC")
    updated_at: str = Field(description="RFC 3339, UTC")


class CodeLogPage(BaseModel):
    data: list[CodeLogOut]
    total: int
    page: int
    last_page: int


def log_json(entry: LogEntry) -> dict[str, Any]:
    stamp = go_time(entry.created_at)
    return CodeLogOut(
        id=entry.id,
        run_id=entry.run_id,
        code_id=entry.code_id,
        type=entry.type,
        content=entry.content,
        created_at=stamp,
        updated_at=stamp,
    ).model_dump()


def page_json(entries: list[LogEntry], *, total: int, page: int) -> dict[str, Any]:
    return {
        "data": [log_json(e) for e in entries],
        "total": total,
        "page": page,
        "last_page": -(-total // PAGE_SIZE),
    }
