"""QC records (CONTRACT §5): content hash, append-only store.

A record is a JSON object. Its content hash is the SHA-256 (hex) of its canonical JSON
(sorted keys, no spaces, UTF-8) without the `signatures` key; every signature names that
hash, so a record whose content changed after signing no longer matches its signatures.
Records are never changed: a review or approval is a new record (`"record": "review"`) whose
`reviews` names the first one by id and hash. The store refuses UPDATE and DELETE in the
database itself (triggers), like the audit trail.

The records are a table of the agent's one state database (the outbox's SQLite), written by
its owner thread in the same transaction as their `qc` stream items.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.core.reading import dumps_item, rfc3339
from agent.qc.audit import AuditLog
from agent.state.schema import has_table

if TYPE_CHECKING:
    from datetime import datetime

    from agent.qc.audit import Emit
    from agent.state.writer import StateWriter

_SCHEMA = """
CREATE TABLE IF NOT EXISTS qc_records (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    id      TEXT NOT NULL UNIQUE,
    kind    TEXT NOT NULL,
    device  TEXT NOT NULL,
    test    TEXT NOT NULL,
    t       TEXT NOT NULL,
    reviews TEXT,
    sha256  TEXT NOT NULL,
    body    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS qc_records_device_t ON qc_records (device, t);
CREATE INDEX IF NOT EXISTS qc_records_reviews ON qc_records (reviews);
CREATE TRIGGER IF NOT EXISTS qc_records_no_update BEFORE UPDATE ON qc_records
BEGIN SELECT RAISE(ABORT, 'QC records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS qc_records_no_delete BEFORE DELETE ON qc_records
BEGIN SELECT RAISE(ABORT, 'QC records are append-only'); END;
"""


class RecordError(ValueError):
    """A record that cannot be stored (unsigned, hash mismatch, duplicate id)."""


def canonical_json(value: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no insignificant spaces, UTF-8, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def content_of(record: dict[str, Any]) -> dict[str, Any]:
    """The record without its signatures: what the signatures are bound to."""
    return {k: v for k, v in record.items() if k != "signatures"}


def content_hash(record: dict[str, Any]) -> str:
    """Hex SHA-256 of the record's canonical JSON without `signatures`."""
    return hashlib.sha256(canonical_json(content_of(record))).hexdigest()


def verify_record(record: dict[str, Any]) -> list[str]:
    """Problems with a record's signatures (empty when every signature matches its content)."""
    problems = []
    signatures = record.get("signatures") or []
    if not signatures:
        problems.append("no signature")
    digest = content_hash(record)
    for index, signature in enumerate(signatures):
        if signature.get("record_sha256") != digest:
            problems.append(f"signature {index} ({signature.get('name')}) does not match content")
    return problems


def time_key(value: datetime | str | None) -> str | None:
    """A time filter as stored (RFC 3339 text compares in time order)."""
    if value is None or isinstance(value, str):
        return value
    return rfc3339(value)


Filter = tuple[str, str, Any]
"""(column, operator, value) of a record query; a None value is no filter."""


def select_bodies(
    db: sqlite3.Connection, table: str, filters: Sequence[Filter], limit: int
) -> list[dict[str, Any]]:
    """The JSON bodies of `table`'s rows matching `filters`, in storage order.

    `table` and the columns are the caller's fixed names, never input.
    """
    clauses: list[str] = []
    params: list[Any] = []
    for column, op, value in filters:
        if value is not None:
            clauses.append(f"{column} {op} ?")
            params.append(value)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = f"SELECT body FROM {table} {where} ORDER BY seq LIMIT ?"  # noqa: S608 - fixed names
    rows = db.execute(sql, (*params, max(0, int(limit)))).fetchall()
    return [json.loads(r[0]) for r in rows]


def read_only(
    db_path: Path, select: Callable[..., list[dict[str, Any]]], **filters: Any
) -> list[dict[str, Any]]:
    """`select(db, **filters)` on a state database on disk, read-only (safe while it runs)."""
    if not db_path.exists():
        raise FileNotFoundError(f"{db_path}: no state database (has the agent run yet?)")
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return select(db, **filters)
    finally:
        db.close()


class QCRecordStore:
    """Append-only QC records: a table of the state database (the outbox's SQLite).

    `append()` never touches the disk on the caller's thread: the row and its `qc` stream
    item (and the audit record of the signature) are written by the state writer in one
    transaction, so a record is stored exactly when it is queued for publication.
    """

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

        RecordError at once when the record is not validly signed; the returned future fails
        with RecordError when its id exists already (then nothing of it is kept). The live view
        hears of the record only after its commit.
        """
        problems = verify_record(record)
        if problems:
            raise RecordError(f"record {record.get('id')}: {'; '.join(problems)}")
        items = [("qc", "", dumps_item(record))]
        if audit_item is not None:
            items.append(("audit", "", dumps_item(audit_item)))

        def _apply(db: sqlite3.Connection) -> None:
            insert_record(db, record)
            if audit_item is not None:
                AuditLog.insert(db, audit_item)

        done = self.store.transact(_apply, items, tag="qc.record")
        if self._notify is not None:
            self._tell_when_committed(done, record)
        return done

    def _tell_when_committed(self, done: Future[Any], record: dict[str, Any]) -> None:
        """Tell the live view of `record` once (and only if) its commit succeeded.

        Told on the caller's event loop (the live view's thread), before whoever awaits the
        commit resumes; the live view is a mirror, so its failure is suppressed.
        """
        notify = self._notify
        assert notify is not None  # noqa: S101 - checked by the caller
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None

        def _tell() -> None:
            with contextlib.suppress(Exception):
                notify("qc", record)

        def _committed(future: Future[Any]) -> None:
            if future.cancelled() or future.exception() is not None:
                return
            if loop is None:
                _tell()
            else:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(_tell)

        done.add_done_callback(_committed)

    async def get(self, record_id: str) -> dict[str, Any]:
        """The record with this id (KeyError if none)."""
        found = await self.store.run(lambda db: select_records(db, record_id=record_id))
        if not found:
            raise KeyError(record_id)
        return found[0]

    async def reviews_of(self, record_id: str) -> list[dict[str, Any]]:
        """Review and approval records that name `record_id`, oldest first."""
        return await self.store.run(lambda db: select_records(db, reviews=record_id))

    async def query(
        self,
        *,
        device: str | None = None,
        test: str | None = None,
        kind: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int = 10000,
    ) -> list[dict[str, Any]]:
        """Records in storage order (oldest first), filtered; `until` is exclusive."""
        return await self.store.run(
            lambda db: select_records(
                db, device=device, test=test, kind=kind, since=since, until=until, limit=limit
            )
        )


def insert_record(db: sqlite3.Connection, record: dict[str, Any]) -> None:
    """Insert one record (on the writer's thread); RecordError when its id exists."""
    reviews = record.get("reviews")
    try:
        db.execute(
            "INSERT INTO qc_records (id, kind, device, test, t, reviews, sha256, body)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record["id"],
                record.get("record", "test"),
                record["device"],
                record["test"],
                record["t"],
                reviews.get("id") if isinstance(reviews, dict) else None,
                content_hash(record),
                canonical_json(record).decode("utf-8"),
            ),
        )
    except sqlite3.IntegrityError as exc:
        raise RecordError(f"record {record['id']} exists already") from exc


def select_records(
    db: sqlite3.Connection,
    *,
    record_id: str | None = None,
    reviews: str | None = None,
    device: str | None = None,
    test: str | None = None,
    kind: str | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    limit: int = 10000,
) -> list[dict[str, Any]]:
    """Records matching the filters, oldest first (any connection: writer or a reader)."""
    if not has_table(db, "qc_records"):
        return []
    filters = (
        ("id", "=", record_id),
        ("reviews", "=", reviews),
        ("device", "=", device),
        ("test", "=", test),
        ("kind", "=", kind),
        ("t", ">=", time_key(since)),
        ("t", "<", time_key(until)),
    )
    return select_bodies(db, "qc_records", filters, limit)


def read_records(db_path: Path, **filters: Any) -> list[dict[str, Any]]:
    """Records from a state database on disk, read-only (safe while the agent runs: WAL)."""
    return read_only(db_path, select_records, **filters)


__all__ = [
    "QCRecordStore",
    "RecordError",
    "canonical_json",
    "content_hash",
    "content_of",
    "insert_record",
    "read_only",
    "read_records",
    "select_bodies",
    "select_records",
    "time_key",
    "verify_record",
]
