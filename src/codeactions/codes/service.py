"""Code rules: which fields and sources are accepted, who may do what, and the CRUD steps."""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from codeactions.access.service import authorize, visible_code
from codeactions.auth.principals import Principal, Role
from codeactions.codes import repository
from codeactions.codes.cache import CodeCache
from codeactions.codes.schemas import CODE_TYPES, LANGUAGES, LastRun, code_json
from codeactions.config import CodeSettings
from codeactions.db.listing import AllRows, Page
from codeactions.db.models import Code, utcnow
from codeactions.db.session import after_commit
from codeactions.db.text import has_control_characters, storable_text
from codeactions.errors import BadRequest, NotFound
from codeactions.events.bus import EventBus
from codeactions.events.channels import project_channel, project_event
from codeactions.runner.base import CompileError, Runner

# Reads the request's source; raises BadRequest(SOURCE_TOO_BIG) once `max_source_bytes` is reached.
SourceReader = Callable[[], Awaitable[bytes]]
# Validates a source for a language at save time (the runner compiles Go); raises BadRequest.
SourceChecker = Callable[[str, str], Awaitable[None]]

SOURCE_TOO_BIG = "source code is too big"
TIMEOUT_MIN, TIMEOUT_MAX = 5, 300
TIMEOUT_MESSAGE = f"timeout must be between {TIMEOUT_MIN} and {TIMEOUT_MAX} seconds"
NAME_MAX_CHARS = 255  # codes.name VARCHAR(255)
PROJECT_UUID_MAX_CHARS = 255  # codes.project_uuid VARCHAR(255)


def valid_project_uuid(value: str | None) -> str:
    if not value or len(value) > PROJECT_UUID_MAX_CHARS:
        raise BadRequest("valid project_uuid is required")
    # As the projects service's uuids: with NUL stored as U+FFFD, two uuids would be one project.
    if has_control_characters(value):
        raise BadRequest("project_uuid must not contain control characters")
    return value


def valid_type(value: str) -> str:
    if value not in CODE_TYPES:
        raise BadRequest(f"code type of ({value}) is not valid")
    return value


def valid_language(value: str) -> str:
    if value not in LANGUAGES:
        raise BadRequest(f"language type ({value}) is not valid")
    return value


def valid_name(value: str) -> str:
    """The name as stored (free text: NUL becomes U+FFFD), so the answer shows what was kept."""
    # The original accepted any name, the empty one included; clients rely on that.
    if len(value) > NAME_MAX_CHARS:
        raise BadRequest(f"name is too long (max {NAME_MAX_CHARS} characters)")
    return storable_text(value)


# Plain ASCII digits without a leading zero (no sign, `_` or spaces), as the API document's
# patterns below say: the document and the checks agree on every value.
_DECIMAL = re.compile(r"[1-9][0-9]{0,8}")
MAX_PAGE = 1_000_000  # keeps OFFSET far inside a 64-bit integer
# `timeout`: empty or 0 (unset), or 5 to 300.
TIMEOUT_PATTERN = r"^(0|[5-9]|[1-9][0-9]|[12][0-9]{2}|300)?$"


def page_number_pattern(maximum: int) -> str:
    """What `parse_page_number` accepts, as a JSON Schema pattern: empty, or 1 to `maximum`."""
    digits = len(str(maximum))
    assert maximum == 10 ** (digits - 1), "the pattern is written for a power of ten"
    return rf"^([1-9][0-9]{{0,{digits - 2}}}|{maximum})?$"


def parse_page_number(value: str | None, *, name: str, default: int, maximum: int) -> int:
    """A 1-based `page`/`page_size` query value; anything else is 400 `invalid <name> parameter`."""
    if value is None or value == "":
        return default
    if not _DECIMAL.fullmatch(value) or not 1 <= int(value) <= maximum:
        raise BadRequest(f"invalid {name} parameter")
    return int(value)


SEARCH_MAX_CHARS = 255  # the names searched are VARCHAR(255)


def parse_search(value: str | None) -> str | None:
    """A `search` query value (a substring of names); None when absent or empty."""
    if not value:
        return None
    if len(value) > SEARCH_MAX_CHARS:
        raise BadRequest(f"search is too long (max {SEARCH_MAX_CHARS} characters)")
    return value


def parse_last_run(value: str | None, *, paged: bool) -> bool:
    """`last_run=true` asks for each listed code's newest run; only on a page (without one, the
    codes are streamed as they are read)."""
    if value is None or value in ("", "false"):
        return False
    if value != "true":
        raise BadRequest("invalid last_run parameter: true or false")
    if not paged:
        raise BadRequest("last_run=true needs page or page_size")
    return True


def parse_timeout(value: str | None) -> int | None:
    """Seconds from the `timeout` query value; None when absent, empty or 0 (the original's unset)."""
    if value is None or value in ("", "0"):
        return None
    if not _DECIMAL.fullmatch(value) or not TIMEOUT_MIN <= int(value) <= TIMEOUT_MAX:
        raise BadRequest(TIMEOUT_MESSAGE)
    return int(value)


@functools.lru_cache(maxsize=16)
def _blacklist_pattern(terms: tuple[str, ...]) -> re.Pattern[str] | None:
    """Whole-word matching: `exec` rejects `exec(x)` but not `execute()` (the original used substrings).

    A boundary is only required on a side where the term itself starts or ends with a word
    character, so terms such as `os.system` or `__import__(` still match as written.
    """
    parts = []
    for term in terms:
        if not term:
            continue
        head = r"(?<!\w)" if re.match(r"\w", term[0]) else ""
        tail = r"(?!\w)" if re.match(r"\w", term[-1]) else ""
        parts.append(head + re.escape(term) + tail)
    return re.compile("|".join(parts)) if parts else None


def checked_source(raw: bytes, settings: CodeSettings) -> str:
    """The source as text, after the size, encoding and blacklist rules (in the original's order)."""
    if len(raw) >= settings.max_source_bytes:
        raise BadRequest(SOURCE_TOO_BIG)
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("source code must be valid UTF-8 text") from None
    # Refused rather than stored with U+FFFD: a replaced character changes the program.
    if "\x00" in source:
        raise BadRequest("source code must not contain NUL characters")
    pattern = _blacklist_pattern(tuple(settings.blacklist))
    if pattern is not None and pattern.search(source):
        raise BadRequest("source code contains blacklisted term")
    return source


async def create_code(
    session: AsyncSession,
    principal: Principal,
    *,
    settings: CodeSettings,
    project_uuid: str | None,
    name: str | None,
    type: str | None,
    language: str | None,
    timeout_text: str | None,
    read_source: SourceReader,
    check_source: SourceChecker | None,
) -> Code:
    project = valid_project_uuid(project_uuid)
    # The caller names the project, so a non-member learns nothing new from a 403.
    await authorize(session, principal, project, Role.CONTRIBUTOR)
    code_type = valid_type(type or "")
    code_language = valid_language(language or "")
    code_name = valid_name(name or "")
    seconds = parse_timeout(timeout_text) or settings.default_timeout
    source = checked_source(await read_source(), settings)
    if check_source is not None:
        await check_source(code_language, source)
    return await repository.add_code(
        session,
        project_uuid=project,
        name=code_name,
        type=code_type,
        language=code_language,
        source=source,
        timeout_seconds=seconds,
    )


async def get_code(session: AsyncSession, principal: Principal, *, code_id: str) -> Code:
    return await visible_code(session, principal, code_id, Role.VIEWER)


async def update_code(
    session: AsyncSession,
    principal: Principal,
    *,
    settings: CodeSettings,
    code_id: str,
    name: str | None,
    type: str | None,
    language: str | None,
    timeout_text: str | None,
    read_source: SourceReader,
    check_source: SourceChecker | None,
) -> Code:
    """Apply every given field; absent or empty ones (and an empty body) keep the stored value."""
    code = await visible_code(session, principal, code_id, Role.CONTRIBUTOR)
    new_type = valid_type(type) if type else None
    new_language = valid_language(language) if language else None
    new_name = valid_name(name) if name else None
    new_timeout = parse_timeout(timeout_text)
    raw = await read_source()
    new_source = checked_source(raw, settings) if raw else None

    language_after = new_language or code.language
    changed_program = new_source is not None or language_after != code.language
    if check_source is not None and changed_program:
        await check_source(language_after, new_source if new_source is not None else code.source)

    if new_type is not None:
        code.type = new_type
    if new_language is not None:
        code.language = new_language
    if new_name is not None:
        code.name = new_name
    if new_timeout is not None:
        code.timeout = new_timeout
    if new_source is not None:
        code.source = new_source
    code.updated_at = utcnow()
    await session.flush()
    return code


async def list_codes(
    session: AsyncSession,
    principal: Principal,
    *,
    project_uuid: str | None,
    code_type: str | None,
    page: int,
    page_size: int,
    search: str | None = None,
) -> Page[Code]:
    """A page of a project's codes, newest first, and how many there are (as `all_codes`);
    `search`: only codes whose name contains it, in any case."""
    project, only_type = await _visible_codes(session, principal, project_uuid, code_type)
    codes, total = await repository.list_codes(
        session,
        project_uuid=project,
        code_type=only_type,
        search=parse_search(search),
        offset=(page - 1) * page_size,
        limit=page_size,
    )
    return Page(codes, total, page, page_size)


async def last_runs(session: AsyncSession, codes: list[Code]) -> dict[uuid.UUID, LastRun]:
    """The newest run of each of these codes that has one (codes already authorized)."""
    return await repository.last_runs(session, [code.id for code in codes])


async def all_codes(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    principal: Principal,
    *,
    project_uuid: str | None,
    code_type: str | None,
    search: str | None = None,
) -> AllRows[Code]:
    """Every code of a project, newest first, as the original listed them (no page): checked
    and authorized now, the codes after the first chunk read as the caller iterates."""
    project, only_type = await _visible_codes(session, principal, project_uuid, code_type)
    return await repository.all_codes(
        session,
        sessionmaker,
        project_uuid=project,
        code_type=only_type,
        search=parse_search(search),
    )


async def _visible_codes(
    session: AsyncSession, principal: Principal, project_uuid: str | None, code_type: str | None
) -> tuple[str, str | None]:
    """The project and type filter of a list, once the principal may read the project."""
    project = valid_project_uuid(project_uuid)
    await authorize(session, principal, project, Role.VIEWER)
    if code_type and code_type not in CODE_TYPES:
        # The original answered 404 here (its repository validated the filter).
        raise NotFound(f"code type of ({code_type}) is not valid")
    return project, code_type or None


async def delete_code(session: AsyncSession, principal: Principal, *, code_id: str) -> Code:
    """Delete the code; its runs and logs are kept, as in the original."""
    code = await visible_code(session, principal, code_id, Role.MODERATOR)
    await repository.delete_code(session, code)
    return code


def runner_source_checker(runner: Runner | None) -> SourceChecker | None:
    """Save-time check through the runner: Go sources must compile; the compiler's message is a 400."""
    if runner is None:
        return None

    async def check(language: str, source: str) -> None:
        if language != "go":
            return
        try:
            await runner.check("go", source)
        except CompileError as exc:
            raise BadRequest(str(exc) or "source code does not compile") from None

    return check


def announce(
    session: AsyncSession, *, cache: CodeCache, bus: EventBus, code: Code, event: str
) -> None:
    """Once the change is committed: this replica's cache forgets the code, and its project's
    followers hear of it (`code.saved` or `code.deleted`, with the code)."""
    record = code_json(code)
    channel = project_channel(code.project_uuid)

    def committed() -> None:
        cache.invalidate(code)
        bus.publish(channel, [project_event(event, code=record)])

    after_commit(session, committed)
