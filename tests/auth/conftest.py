"""Fixtures: the OIDC provider process, an app that trusts it, and a verifier on a hand-moved clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from codeactions.auth.oidc import OidcVerifier
from tests.auth.provider import FakeProvider, oidc_client, oidc_settings, provider

__all__ = ["FakeClock", "clock", "oidc_client", "provider", "verifier"]


class FakeClock:
    """The verifier's cache clock, moved by hand (tokens' `exp` stay on the wall clock)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def verifier(provider: FakeProvider, clock: FakeClock) -> AsyncIterator[OidcVerifier]:
    v = OidcVerifier(oidc_settings(provider), clock=clock)
    yield v
    await v.close()
