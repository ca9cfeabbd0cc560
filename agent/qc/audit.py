"""Append-only audit trail: who did what, when, why, with old and new values (Annex 11, Part 11).

Each record is stored in SQLite before it is emitted to the `audit` stream, so the local trail
is complete even while the broker is away. Records are never updated or deleted: triggers in
the database refuse it, and each record carries the SHA-256 of its predecessor's hash and its
own content, so `verify_chain()` notices a record altered or removed outside this class.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from agent.core.reading import event_item, rfc3339

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime
    from typing import TextIO

Emit = Callable[[str, dict[str, Any]], None]
"""The sink of stream items: `emit("alerts" | "audit", item)`."""
log = structlog.get_logger("isoedge.audit")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    id      TEXT NOT NULL UNIQUE,
    t       TEXT NOT NULL,
    action  TEXT NOT NULL,
    actor   TEXT NOT NULL,
    subject TEXT NOT NULL,
    item    TEXT NOT NULL,
    hash    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_t ON audit (t);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"""

# Keys of an audit item that `record(**details)` may not overwrite.
_RESERVED = frozenset({"id", "t", "event", "actor", "subject", "old", "new", "reason"})
CSV_COLUMNS = ("t", "event", "actor", "subject", "old", "new", "reason", "details", "id")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _time_key(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return rfc3339(value)


class AuditLog:
    """The agent's audit trail in SQLite (`state_dir/audit.db`), mirrored to the audit stream."""

    def __init__(self, db_path: str | Path, emit: Emit | None = None) -> None:
        self.path = Path(db_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._emit = emit
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a trail entry must survive power loss
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        self._last_hash: str = row[0] if row else ""

    def record(  # noqa: PLR0917 - who/what/old/new/why, as audit records read
        self,
        action: str,
        actor: str,
        subject: str,
        old: Any = None,
        new: Any = None,
        reason: str | None = None,
        **details: Any,
    ) -> dict[str, Any]:
        """Store one record, emit it to the `audit` stream and return the item."""
        if not action or not actor:
            raise ValueError("an audit record needs an action and an actor")
        clash = _RESERVED.intersection(details)
        if clash:
            raise ValueError(f"audit detail keys clash with the record's own: {sorted(clash)}")
        item = event_item(
            action, actor=actor, subject=subject, old=old, new=new, reason=reason, **details
        )
        body = _dumps(item)
        with self._lock:
            digest = hashlib.sha256((self._last_hash + body).encode()).hexdigest()
            self._db.execute(
                "INSERT INTO audit (id, t, action, actor, subject, item, hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (item["id"], item["t"], action, actor, subject, body, digest),
            )
            self._last_hash = digest
        if self._emit is not None:
            try:
                self._emit("audit", item)
            except Exception:
                # The record is stored; the stream is a mirror. Never lose the local trail
                # because publishing failed.
                log.exception("audit record stored but not emitted", action=action)
        return item

    def query(
        self,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        actor: str | None = None,
        action: str | None = None,
        subject: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Records in time order (oldest first), filtered; `until` is exclusive."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, op, value in (
            ("t", ">=", _time_key(since)),
            ("t", "<", _time_key(until)),
            ("actor", "=", actor),
            ("action", "=", action),
            ("subject", "=", subject),
        ):
            if value is not None:
                clauses.append(f"{column} {op} ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT item FROM audit {where} ORDER BY seq LIMIT ?"  # noqa: S608 - fixed columns
        with self._lock:
            rows = self._db.execute(sql, (*params, max(0, int(limit)))).fetchall()
        return [json.loads(row[0]) for row in rows]

    @staticmethod
    def export_csv(rows: Iterable[dict[str, Any]], stream: TextIO) -> int:
        """Write records as CSV (one column per field, other fields as JSON in `details`)."""
        writer = csv.writer(stream)
        writer.writerow(CSV_COLUMNS)
        count = 0
        for row in rows:
            details = {k: v for k, v in row.items() if k not in _RESERVED}
            cells = [
                row.get("t"),
                row.get("event"),
                row.get("actor"),
                row.get("subject"),
                None if row.get("old") is None else _dumps(row.get("old")),
                None if row.get("new") is None else _dumps(row.get("new")),
                row.get("reason"),
                _dumps(details) if details else None,
                row.get("id"),
            ]
            writer.writerow(["" if c is None else _csv_safe(str(c)) for c in cells])
            count += 1
        return count

    def verify_chain(self) -> int | None:
        """Seq of the first record whose hash does not match, or None when the chain holds."""
        previous = ""
        with self._lock:
            rows = self._db.execute("SELECT seq, item, hash FROM audit ORDER BY seq").fetchall()
        for seq, body, digest in rows:
            if hashlib.sha256((previous + body).encode()).hexdigest() != digest:
                return int(seq)
            previous = digest
        return None

    def close(self) -> None:
        """Close the database (safe to call twice)."""
        with self._lock:
            self._db.close()


def _csv_safe(cell: str) -> str:
    """Neutralise spreadsheet formulas (CSV injection): a QA officer opens this in Excel."""
    if cell[:1] in {"=", "+", "@", "\t", "\r"} or (cell[:1] == "-" and not _is_number(cell)):
        return "'" + cell
    return cell


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
