"""Edits that prove detection: each must change the file's bytes, or the test proves nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


def edit_file(path: Path, edit: Callable[[str], str]) -> None:
    """Rewrite ``path`` with ``edit`` applied; fail the test's setup when the bytes stay the same
    (an edit keyed to a value the day's data does not hold would otherwise pass silently)."""
    before = path.read_bytes()
    path.write_text(edit(before.decode()))
    if path.read_bytes() == before:
        pytest.fail(f"test setup: the edit left {path} unchanged, so it proves nothing")


def replace_once(old: str, new: str) -> Callable[[str], str]:
    """An edit replacing the first ``old`` with ``new``; a text without ``old`` is a setup error."""

    def edit(text: str) -> str:
        if old not in text:
            pytest.fail(f"test setup: {old!r} is not in the file, so the edit would change nothing")
        return text.replace(old, new, 1)

    return edit
