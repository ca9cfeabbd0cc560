"""Append-only audit trail: who did what, when, why, with old and new values (Annex 11, Part 11).

Each record is a row of the state database, committed in the same transaction as its `audit`
stream item (and, for an acknowledgement, as the alert's new state), so the local trail is
complete even while the broker is away, and never ahead of or behind the stream. Records are
never updated or deleted: triggers in the database refuse it, and each record carries the
SHA-256 of its predecessor's hash and its own content, so `verify_chain()` notices a record
altered or removed outside this class.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from agent.core.reading import dumps_item, event_item, rfc3339
from agent.state.writer import StateWriter

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime
    from typing import TextIO

T = TypeVar("T")
Emit = Callable[[str, dict[str, Any]], None]
"""Who hears of stream items as they are made: `notify("alerts" | "audit", item)`."""
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


class AuditTextError(ValueError):
    """An audit record cannot be made of these texts (not valid UTF-8): nothing was changed."""


@dataclass(frozen=True, slots=True)
class StagedAudit:
    """An audit record built and serialised ahead of its change (`AuditLog.stage`)."""

    item: dict[str, Any]
    stream: str


class AuditLog:
    """The agent's audit trail: a table of the state database, mirrored to the audit stream.

    `record()` never touches the disk on the caller's thread: the row, its hash and the
    stream item are written together by the state writer, in one transaction.
    """

    def __init__(self, store: StateWriter, notify: Emit | None = None) -> None:
        self.store = store
        self._notify = notify

    async def open(self) -> None:
        """Create the table and its append-only triggers if missing."""
        await self.store.run(lambda db: db.executescript(_SCHEMA))

    def entry(
        self,
        action: str,
        actor: str,
        subject: str,
        *,
        old: Any = None,
        new: Any = None,
        reason: str | None = None,
        **details: Any,
    ) -> dict[str, Any]:
        """Build (not store) one record's item; `insert()` or `record()` stores it."""
        if not action or not actor:
            raise ValueError("an audit record needs an action and an actor")
        clash = _RESERVED.intersection(details)
        if clash:
            raise ValueError(f"audit detail keys clash with the record's own: {sorted(clash)}")
        return event_item(
            action, actor=actor, subject=subject, old=old, new=new, reason=reason, **details
        )

    @staticmethod
    def insert(db: sqlite3.Connection, item: dict[str, Any]) -> None:
        """Store one built record, chained to the last one (on the writer's thread)."""
        body = _dumps(item)
        row = db.execute("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        digest = hashlib.sha256(((row[0] if row else "") + body).encode()).hexdigest()
        db.execute(
            "INSERT INTO audit (id, t, action, actor, subject, item, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (item["id"], item["t"], item["event"], item["actor"], item["subject"], body, digest),
        )

    def stage(
        self,
        action: str,
        actor: str,
        subject: str,
        *,
        old: Any = None,
        new: Any = None,
        reason: str | None = None,
        **details: Any,
    ) -> StagedAudit:
        """Build and serialise a record BEFORE the change it records is made.

        Audit first: a record that cannot be made (a text that is not valid UTF-8, such as
        a lone surrogate) raises AuditTextError here, while nothing has changed yet. Commit
        it with `commit()`, together with the change's own write.
        """
        item = self.entry(action, actor, subject, old=old, new=new, reason=reason, **details)
        try:
            stream = dumps_item(item)
            body = _dumps(item)
            body.encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise AuditTextError(f"text that is not valid UTF-8: {exc}") from None
        return StagedAudit(item, stream)

    def commit(
        self,
        staged: StagedAudit,
        apply: Callable[[sqlite3.Connection], Any] | None = None,
        *,
        tag: str = "",
    ) -> Future[Any]:
        """One transaction: the audit record first, then the change's write `apply(db)`."""

        def _apply(db: sqlite3.Connection) -> None:
            self.insert(db, staged.item)
            if apply is not None:
                apply(db)

        done = self.store.transact(
            _apply, [("audit", "", staged.stream)], tag=tag or str(staged.item["event"])
        )
        self.notify(staged.item)
        return done

    def notify(self, item: dict[str, Any]) -> None:
        """Tell the live view about a stored (or being stored) record."""
        if self._notify is not None:
            try:
                self._notify("audit", item)
            except Exception:
                log.exception("audit record not shown live", action=item.get("event"))

    def submit(self, item: dict[str, Any]) -> Future[Any]:
        """Queue a built record with its stream item; the future resolves once committed."""
        return self.commit(StagedAudit(item, dumps_item(item)))

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
        """Queue one record (and its stream item) for the next commit; return the item."""
        staged = self.stage(action, actor, subject, old=old, new=new, reason=reason, **details)
        self.commit(staged)
        return staged.item

    async def record_durably(  # noqa: PLR0917 - as record()
        self,
        action: str,
        actor: str,
        subject: str,
        old: Any = None,
        new: Any = None,
        reason: str | None = None,
        **details: Any,
    ) -> dict[str, Any]:
        """`record()`, returning only once the record is committed."""
        item = self.entry(action, actor, subject, old=old, new=new, reason=reason, **details)
        await asyncio.wrap_future(self.submit(item))
        return item

    async def query(
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
        rows = await self.store.run(
            lambda db: db.execute(sql, (*params, max(0, int(limit)))).fetchall()
        )
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

    async def verify_chain(self) -> int | None:
        """Seq of the first record whose hash does not match, or None when the chain holds."""
        return await self.store.run(verify_chain)


def verify_chain(db: sqlite3.Connection) -> int | None:
    """Seq of the first audit record whose hash does not match, or None when the chain holds."""
    previous = ""
    for seq, body, digest in db.execute("SELECT seq, item, hash FROM audit ORDER BY seq"):
        if hashlib.sha256((previous + body).encode()).hexdigest() != digest:
            return int(seq)
        previous = digest
    return None


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
