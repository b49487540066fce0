"""Fixtures: a fake OIDC provider and an app that trusts it."""

from tests.auth.provider import oidc_client, provider

__all__ = ["oidc_client", "provider"]
