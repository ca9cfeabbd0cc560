"""Synthesis runs in progress, kept in the state database so that a restart does not lose them.

Each batch event the batch desk takes (RunStarted, StepChanged, EndOfSynthesis) is appended,
with the run's environment trackers as they stand after it, to the append-only table
`batch_journal` (written by the state database's owner thread, queued in the order the events
were taken). At start the desk replays the journal of every batch that has no batch record
yet: the events rebuild the run, the last snapshot restores its environment. What is not kept:
environment readings after the last event (a restart mid-step loses them; the EOS event's
snapshot is the run's complete environment) and an assay in progress (the operator starts the
assay again after a restart).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from agent.state.schema import has_table

if TYPE_CHECKING:
    from concurrent.futures import Future

    from agent.state.writer import StateWriter

log = structlog.get_logger("isoedge.records.batch")

RELOAD_DAYS = 7
"""Runs whose last event is older than this are not reloaded (an abandoned run is not kept)."""

_SCHEMA = (
    ("CREATE TABLE IF NOT EXISTS batch_journal (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
     " batch_id TEXT NOT NULL, taken TEXT NOT NULL, body TEXT NOT NULL)"),
    "CREATE INDEX IF NOT EXISTS batch_journal_batch ON batch_journal (batch_id)",
    ("CREATE TRIGGER IF NOT EXISTS batch_journal_no_update BEFORE UPDATE ON batch_journal"
     " BEGIN SELECT RAISE(ABORT, 'the batch journal is append-only'); END"),
    ("CREATE TRIGGER IF NOT EXISTS batch_journal_no_delete BEFORE DELETE ON batch_journal"
     " BEGIN SELECT RAISE(ABORT, 'the batch journal is append-only'); END"),
)  # fmt: skip


def _create(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA:
        db.execute(statement)


class RunJournal:
    """Append-only rows of the batch events taken, and their reload."""

    def __init__(self, state: StateWriter) -> None:
        self.state = state

    async def open(self) -> None:
        """Create the table if missing."""
        await self.state.run(lambda db: db.executescript(";\n".join(_SCHEMA) + ";"))

    def append(self, batch_id: str, item: dict[str, Any],
               environment: list[tuple[str, str, dict[str, Any]]]) -> None:  # fmt: skip
        """Queue one taken event and the run's environment after it (never blocks, never raises)."""
        body = json.dumps({"item": item, "environment": environment}, default=str)
        taken = datetime.now(UTC).isoformat()

        def _apply(db: sqlite3.Connection) -> None:
            _create(db)  # a desk used before open(): the table is made in the same transaction
            db.execute("INSERT INTO batch_journal (batch_id, taken, body) VALUES (?, ?, ?)",
                       (batch_id, taken, body))  # fmt: skip

        try:
            future = self.state.transact(_apply, tag="records.batch_journal")
        except Exception:
            log.exception("batch journal write not queued", batch=batch_id)
            return
        future.add_done_callback(lambda f: _report(f, batch_id))

    async def pending(self, now: datetime) -> list[dict[str, Any]]:
        """Journal entries of unsigned batches with a recent event, in the order taken."""
        since = (now - timedelta(days=RELOAD_DAYS)).isoformat()
        return await self.state.run(lambda db: _pending(db, since))


def _report(future: Future[Any], batch_id: str) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("batch journal write failed", batch=batch_id, error=str(future.exception()))


def _pending(db: sqlite3.Connection, since: str) -> list[dict[str, Any]]:
    if not has_table(db, "batch_journal"):
        return []
    has_records = has_table(db, "records")
    signed = (
        "AND batch_id NOT IN (SELECT subject FROM records WHERE kind = 'batch'"
        " AND subject IS NOT NULL)"
    ) if has_records else ""  # fmt: skip
    rows = db.execute(
        "SELECT body FROM batch_journal WHERE batch_id IN (SELECT batch_id FROM batch_journal"  # noqa: S608 - fixed text
        f" GROUP BY batch_id HAVING MAX(taken) >= ?) {signed} ORDER BY seq",
        (since,),
    ).fetchall()
    entries: list[dict[str, Any]] = []
    for (body,) in rows:
        try:
            entry = json.loads(body)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("item"), dict):
            entries.append(entry)
    return entries


__all__ = ["RELOAD_DAYS", "RunJournal"]
