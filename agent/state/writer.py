"""The one writer of the state database, as its users see it.

QC records, alerts, audit and prescriptions depend on this protocol, not on the outbox (the
state database, `StateDatabase`, implements it; the outbox is only its host): a write
(`transact`) runs on the owner thread inside the next commit, together with the stream items
that belong with it (a change and its audit record are one transaction).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

Apply = Callable[[sqlite3.Connection], Any]
"""A write of the state database, run on the owner thread inside the cycle's transaction."""


class StateWriter(Protocol):
    """The one writer of the state database (`StateDatabase` implements it)."""

    def transact(
        self,
        apply: Apply | None,
        items: list[tuple[str, str, str]] | None = None,
        *,
        tag: str = "",
    ) -> Future[Any]:
        """Queue a write and the stream items committed with it; resolves after the commit."""
        ...

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(db)` on the writer's thread (reads, schema set-up)."""
        ...
