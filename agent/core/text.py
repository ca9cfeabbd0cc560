"""Text a person typed, checked once for what the log, the audit trail and SQLite can store."""

from __future__ import annotations

from typing import Literal

TextFault = Literal["not utf-8", "nul"]


def text_fault(text: str) -> TextFault | None:
    """Why `text` cannot be stored (a lone surrogate is not UTF-8; NUL ends C strings), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "not utf-8"
    return "nul" if "\x00" in text else None
