"""QC records (CONTRACT §5): content hash, append-only store.

A record is a JSON object. Its content hash is the SHA-256 (hex) of its canonical JSON
(sorted keys, no spaces, UTF-8) without the `signatures` key; every signature names that
hash, so a record whose content changed after signing no longer matches its signatures.
Records are never changed: a review or approval is a new record (`"record": "review"`) whose
`reviews` names the first one by id and hash. The store refuses UPDATE and DELETE in the
database itself (triggers), like the audit trail.

The store is a small class over SQLite (`state_dir/qc.db`) so it can move into the agent's
single state database without touching its callers.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime

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


def _time_key(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    from agent.core.reading import rfc3339  # noqa: PLC0415 - tiny helper, avoids a cycle

    return rfc3339(value)


class QCRecordStore:
    """Append-only QC records in SQLite; thread-safe (the console calls in from threads)."""

    def __init__(self, db_path: str | Path) -> None:
        self.path = Path(db_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a signed record must survive power loss
        self._db.executescript(_SCHEMA)

    def append(self, record: dict[str, Any]) -> str:
        """Store a signed record; returns its content hash. RecordError if it is not valid."""
        problems = verify_record(record)
        if problems:
            raise RecordError(f"record {record.get('id')}: {'; '.join(problems)}")
        digest = content_hash(record)
        reviews = record.get("reviews")
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO qc_records (id, kind, device, test, t, reviews, sha256, body)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record["id"],
                        record.get("record", "test"),
                        record["device"],
                        record["test"],
                        record["t"],
                        reviews.get("id") if isinstance(reviews, dict) else None,
                        digest,
                        canonical_json(record).decode("utf-8"),
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise RecordError(f"record {record['id']} exists already") from exc
        return digest

    def get(self, record_id: str) -> dict[str, Any]:
        """The record with this id (KeyError if none)."""
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM qc_records WHERE id = ?", (record_id,)
            ).fetchone()
        if row is None:
            raise KeyError(record_id)
        return dict(json.loads(row[0]))

    def reviews_of(self, record_id: str) -> list[dict[str, Any]]:
        """Review and approval records that name `record_id`, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM qc_records WHERE reviews = ? ORDER BY seq", (record_id,)
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def query(
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
        clauses: list[str] = []
        params: list[Any] = []
        for column, op, value in (
            ("device", "=", device),
            ("test", "=", test),
            ("kind", "=", kind),
            ("t", ">=", _time_key(since)),
            ("t", "<", _time_key(until)),
        ):
            if value is not None:
                clauses.append(f"{column} {op} ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT body FROM qc_records {where} ORDER BY seq LIMIT ?"  # noqa: S608 - fixed columns
        with self._lock:
            rows = self._db.execute(sql, (*params, max(0, int(limit)))).fetchall()
        return [json.loads(r[0]) for r in rows]

    def close(self) -> None:
        """Close the database (safe to call twice)."""
        with self._lock:
            self._db.close()


def open_read_only(db_path: Path) -> QCRecordStore:
    """A store on an existing database (reports while the agent runs: WAL readers)."""
    if not db_path.exists():
        raise FileNotFoundError(f"{db_path}: no QC records (has the agent run yet?)")
    return QCRecordStore(db_path)


__all__ = [
    "QCRecordStore",
    "RecordError",
    "canonical_json",
    "content_hash",
    "content_of",
    "open_read_only",
    "verify_record",
]
