"""A records desk on a real state database (the outbox's SQLite and its owner thread)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Self
from zoneinfo import ZoneInfo

from qc_harness import users
from statestore import StateStore

from agent.records.config import RecordsSection
from agent.records.desk import RecordsDesk

ZONE = ZoneInfo("Asia/Almaty")


class RecordsBench:
    """StateStore + RecordsDesk; `heard` is what the live view was told."""

    def __init__(self, directory: Path, config: RecordsSection | None = None) -> None:
        self.state = StateStore(directory)
        self.config = config or RecordsSection()
        self.desk: RecordsDesk

    async def __aenter__(self) -> Self:
        await self.state.open()
        self.desk = RecordsDesk(
            self.config, site="site-a", zone=ZONE, state=self.state.database,
            audit=self.state.audit, users=users(), notify=self.state.heard,
        )
        await self.desk.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.state.close()

    async def stream(self, name: str) -> list[dict[str, Any]]:
        await self.state.settle()
        return self.state.stream_items(name)

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.state.path)
