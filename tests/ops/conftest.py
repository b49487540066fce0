"""Fixtures: a fake OIDC provider (for `/info` with login on)."""

from tests.auth.provider import provider

__all__ = ["provider"]
