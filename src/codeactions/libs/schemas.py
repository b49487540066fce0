"""The code library object."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CodeLibOut(BaseModel):
    name: str
    language: str = "python"
    version: str = Field(default="", description="Installed version; empty when not installed")
