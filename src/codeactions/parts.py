"""Typed keys to the parts a started app holds, and the dependency that hands a route one of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Generic, TypeVar, cast

from fastapi import Depends, Request
from starlette.applications import Starlette

from codeactions.config import Settings

T = TypeVar("T")


class Part(Generic[T]):
    """The key of one part (`Part[Runner]("runner")`): `parts[key]` is typed by the key."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<Part {self.name}>"


class MissingPart(LookupError):
    """A part was asked for that the lifespan has not set (or no lifespan has run)."""


class Parts:
    """The parts of one started app, filled by its lifespan and kept in `app.state.parts`."""

    def __init__(self) -> None:
        self._values: dict[Part[Any], Any] = {}

    def __setitem__(self, key: Part[T], value: T) -> None:
        self._values[key] = value

    def __getitem__(self, key: Part[T]) -> T:
        try:
            return cast(T, self._values[key])
        except KeyError:
            raise MissingPart(f"no part {key.name!r}: the app's lifespan has not set it") from None


def parts_of(app: Starlette) -> Parts:
    """The parts the lifespan of `app` set."""
    parts: Parts | None = getattr(app.state, "parts", None)
    if parts is None:
        raise MissingPart("the app has no parts: its lifespan has not started")
    return parts


def part(key: Part[T]) -> Callable[[Request], T]:
    """A dependency handing the route the part under `key`."""

    def get_part(request: Request) -> T:
        return parts_of(request.app)[key]

    get_part.__name__ = f"get_{key.name}"
    return get_part


SETTINGS: Part[Settings] = Part("settings")
SettingsDep = Annotated[Settings, Depends(part(SETTINGS))]
