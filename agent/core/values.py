"""What a value is, shared by the drivers and every stage: its JSON type, quality and kind.

Here, in the core, so the dependency points one way: drivers import the core, never the
reverse (drivers/base.py re-exports these for drivers).
"""

from __future__ import annotations

import enum

JSONScalar = str | int | float | bool | None


class Quality(enum.StrEnum):
    """Quality of one value, as published in a reading's `quality` field."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


class SampleKind(enum.StrEnum):
    """A measured value, or a discrete event (e.g. a synthesis step change)."""

    READING = "reading"
    EVENT = "event"
