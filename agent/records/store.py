"""Append-only records of every kind: a table of the agent's state database.

The table lives in the outbox's SQLite and is written only by its owner thread
(`StateWriter.transact`): a record, its `qc` stream item and the audit record of its signature
are one transaction, so a record is stored exactly when it is queued for publication. Triggers
refuse UPDATE and DELETE in the database itself; a correction is a new record whose `corrects`
names the first. `subject` indexes what a record is about (a batch id, an eluate id, a
shipment id), so the release of a batch and the doses drawn from it are found without a scan.

QC test records stay in their own table (`qc_records`, agent.qc.records): `read_records` and
`RecordStore.query(kind="test")` read them as kind `test` so every kind is listed in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from agent.core.reading import dumps_item
from agent.qc.audit import AuditLog
from agent.qc.records import canonical_json, read_only, select_bodies, time_key
from agent.qc.records import select_records as select_test_records
from agent.records.kinds import RecordError, kind_of, record_sha256, verify
from agent.state.schema import has_table

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path

    from agent.qc.audit import Emit
    from agent.state.writer import StateWriter

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    id       TEXT NOT NULL UNIQUE,
    kind     TEXT NOT NULL,
    t        TEXT NOT NULL,
    subject  TEXT,
    corrects TEXT,
    sha256   TEXT NOT NULL,
    body     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_kind_t ON records (kind, t);
CREATE INDEX IF NOT EXISTS records_subject ON records (subject);
CREATE INDEX IF NOT EXISTS records_corrects ON records (corrects);
CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
BEGIN SELECT RAISE(ABORT, 'records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records
BEGIN SELECT RAISE(ABORT, 'records are append-only'); END;
"""

SUBJECT_FIELDS = ("batch_id", "eluate_id", "shipment_id", "container_id", "subject")
"""The first of these a record has is its subject (what a release or a dose refers to)."""


def subject_of(item: dict[str, Any]) -> str | None:
    """What the record is about: its batch, eluate, shipment or waste container id."""
    for key in SUBJECT_FIELDS:
        value = item.get(key)
        if isinstance(value, str) and value:
            return value
    return None


class RecordStore:
    """Signed records of every kind but `test` (those stay in `qc_records`), append-only."""

    def __init__(self, store: StateWriter, notify: Emit | None = None) -> None:
        self.store = store
        self._notify = notify

    async def open(self) -> None:
        """Create the table and its append-only triggers if missing."""
        await self.store.run(lambda db: db.executescript(_SCHEMA))

    def append(
        self, record: dict[str, Any], audit_item: dict[str, Any] | None = None
    ) -> Future[Any]:
        """Queue a signed record (and the audit record of its signature) for the next commit.

        RecordError at once when the record is not validly signed or is a `test` (QC tests are
        stored by the QC desk); the future fails with RecordError when the id exists already.
        """
        problems = verify(record)
        if kind_of(record) == "test":
            problems.append("test records are stored by the QC desk")
        if "kind" not in record:
            problems.append("no kind")
        if problems:
            raise RecordError(f"record {record.get('id')}: {'; '.join(problems)}")
        items = [("qc", "", dumps_item(record))]
        if audit_item is not None:
            items.append(("audit", "", dumps_item(audit_item)))

        def _apply(db: sqlite3.Connection) -> None:
            insert_record(db, record)
            if audit_item is not None:
                AuditLog.insert(db, audit_item)

        return self.store.transact(_apply, items, tag=f"records.{record['kind']}")

    async def commit(self, record: dict[str, Any], audit_item: dict[str, Any] | None = None,
                     audit: AuditLog | None = None) -> None:  # fmt: skip
        """`append()`, awaited; then (on the caller's loop) the live view hears of both.

        Listeners are told only after the commit: what they show is stored.
        """
        await asyncio.wrap_future(self.append(record, audit_item))
        if self._notify is not None:
            # The live view is a mirror: the record is stored whatever it does.
            with contextlib.suppress(Exception):
                self._notify("qc", record)
        if audit is not None and audit_item is not None:
            audit.notify(audit_item)

    def told(self, record: dict[str, Any]) -> None:
        """Tell the live view of a committed record (a mirror: never fatal)."""
        if self._notify is not None:
            with contextlib.suppress(Exception):
                self._notify("qc", record)

    async def get(self, record_id: str) -> dict[str, Any]:
        """The record with this id, of any kind (KeyError if none)."""
        found = await self.store.run(lambda db: select(db, record_id=record_id))
        if not found:
            raise KeyError(record_id)
        return found[0]

    async def query(
        self,
        *,
        kind: str | None = None,
        subject: str | None = None,
        corrects: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int = 10000,
    ) -> list[dict[str, Any]]:
        """Records in storage order (oldest first), filtered; `until` is exclusive."""
        return await self.store.run(
            lambda db: select(
                db,
                kind=kind,
                subject=subject,
                corrects=corrects,
                since=since,
                until=until,
                limit=limit,
            )
        )

    async def current(self, kind: str, subject: str) -> list[dict[str, Any]]:
        """The records of `kind` about `subject` that no later record corrects, oldest first."""
        return effective(await self.query(kind=kind, subject=subject))


def effective(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`records` without those a later one of the list corrects (a correction replaces)."""
    corrected = {r["corrects"] for r in records if isinstance(r.get("corrects"), str)}
    return [r for r in records if r["id"] not in corrected]


def insert_record(db: sqlite3.Connection, record: dict[str, Any]) -> None:
    """Insert one record (on the writer's thread); RecordError when its id exists."""
    try:
        db.execute(
            "INSERT INTO records (id, kind, t, subject, corrects, sha256, body)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record["id"],
                record["kind"],
                record["t"],
                subject_of(record),
                record.get("corrects"),
                record_sha256(record),
                canonical_json(record).decode("utf-8"),
            ),
        )
    except sqlite3.IntegrityError as exc:
        raise RecordError(f"record {record['id']} exists already") from exc


def select(
    db: sqlite3.Connection,
    *,
    record_id: str | None = None,
    kind: str | None = None,
    subject: str | None = None,
    corrects: str | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    limit: int = 10000,
) -> list[dict[str, Any]]:
    """Records matching the filters, oldest first (any connection: the writer or a reader).

    `kind="test"` reads the QC test records (agent.qc.records) as kind `test`; with no kind,
    the QC tests come first, then the other kinds.
    """
    found: list[dict[str, Any]] = []
    if kind in {None, "test"} and subject is None and corrects is None:
        tests = select_test_records(db, record_id=record_id, kind="test", since=since,
                                    until=until, limit=limit)  # fmt: skip
        found.extend({"kind": "test", **r} if "kind" not in r else r for r in tests)
    if kind == "test" or not has_table(db, "records"):
        return found[:limit]
    filters = (
        ("id", "=", record_id),
        ("kind", "=", kind),
        ("subject", "=", subject),
        ("corrects", "=", corrects),
        ("t", ">=", time_key(since)),
        ("t", "<", time_key(until)),
    )
    found.extend(select_bodies(db, "records", filters, limit))
    return found[:limit]


def read_records(db_path: Path, **filters: Any) -> list[dict[str, Any]]:
    """Records from a state database on disk, read-only (safe while the agent runs: WAL)."""
    return read_only(db_path, select, **filters)


__all__ = [
    "SUBJECT_FIELDS",
    "RecordStore",
    "effective",
    "insert_record",
    "read_records",
    "select",
    "subject_of",
]
