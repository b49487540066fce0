"""Which Python libraries user code can import: the runtime interpreter's distributions and `codelibs`."""

from __future__ import annotations

import asyncio
import functools
import re
from importlib.metadata import distributions
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from codeactions.libs import repository
from codeactions.libs.schemas import CodeLibOut


def _site_dirs(python: str) -> list[str]:
    """The runtime's package directories, found from the interpreter's path (no subprocess)."""
    root = Path(python).parent.parent
    patterns = (
        "lib/python3*/site-packages",
        "lib/python3*/dist-packages",
        "lib/python3/dist-packages",
    )
    found: list[str] = []
    for pattern in patterns:
        found.extend(str(p) for p in sorted(root.glob(pattern)) if str(p) not in found)
    return found


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503 normalisation


@functools.lru_cache(maxsize=4)
def installed_distributions(python: str) -> dict[str, tuple[str, str]]:
    """{normalised name: (name, version)}; read once per interpreter (it does not change at run time)."""
    found: dict[str, tuple[str, str]] = {}
    for dist in distributions(path=_site_dirs(python)):
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            found.setdefault(_key(name), (name, dist.version or ""))
    return found


async def list_python_libraries(session: AsyncSession, *, python: str) -> list[CodeLibOut]:
    installed = dict(await asyncio.to_thread(installed_distributions, python))
    for row in await repository.list_codelibs(session, language="python"):
        installed.setdefault(_key(row.name), (row.name, ""))
    libs = [CodeLibOut(name=name, version=version) for name, version in installed.values()]
    return sorted(libs, key=lambda lib: (lib.name.lower(), lib.name))
