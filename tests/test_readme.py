"""The README's settings table is the one the settings models render."""

from __future__ import annotations

from pathlib import Path

from codeactions.settings_doc import settings_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_documents_every_setting() -> None:
    text = README.read_text()
    assert settings_table() in text, "run `codeactions settings` and paste it into README.md"


def test_readme_starts_with_the_two_commands() -> None:
    head = README.read_text()[:400]
    assert "make run" in head and "make test" in head
