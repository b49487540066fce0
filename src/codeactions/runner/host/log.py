"""Diagnostics of the host process for operators, on stderr (the API logs them)."""

from __future__ import annotations

import sys


def log(message: str) -> None:
    """Never user data: only what operators need to know about the runner."""
    sys.stderr.write(f"codeactions-supervisor: {message}\n")
    sys.stderr.flush()
