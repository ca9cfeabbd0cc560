"""The state database's file: how it is opened, its tables, and the migrations of older layouts.

One SQLite file in WAL mode (`agent.state_dir`/state.db), written by one owner thread. The
outbox's tables are here; QC records, alerts, audit and prescriptions create theirs through
`StateWriter.run`. Every figure below was chosen by measurement (docs/benchmarks.md,
`bench/wear.py`): an SD card's life is what every commit rewrites.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    device TEXT NOT NULL,
    created REAL NOT NULL,
    n_items INTEGER NOT NULL,
    items TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS envelopes (
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    stream TEXT NOT NULL,
    device TEXT NOT NULL,
    n_items INTEGER NOT NULL,
    created REAL NOT NULL,
    body BLOB NOT NULL,
    payload BLOB,
    sig BLOB,
    signer INTEGER,
    size INTEGER
);
CREATE TABLE IF NOT EXISTS signers (id INTEGER PRIMARY KEY, protected TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS chain (
    k INTEGER PRIMARY KEY CHECK (k = 1),
    last_seq INTEGER NOT NULL,
    last_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sent (
    seq INTEGER PRIMARY KEY,
    sent REAL NOT NULL,
    size INTEGER NOT NULL
);
"""

PAGE_SIZE = 1024  # bytes per page of a new database (measured: docs/benchmarks.md, issue 22)
WAL_AUTOCHECKPOINT = 1000  # pages; the WAL is then written again from its start (reused)
WAL_SIZE_LIMIT = 2 * 1024 * 1024  # a WAL grown beyond this (journal_size_limit) is cut back


def connect(path: Path, *, fsync: str) -> sqlite3.Connection:
    """Open the database for its owner thread, with the page, WAL and sync settings."""
    db = sqlite3.connect(path, isolation_level="DEFERRED", check_same_thread=False)
    # A new database gets small pages (a commit rewrites every page it touches); an
    # existing one keeps its page size (changing it needs a VACUUM).
    db.execute(f"PRAGMA page_size={PAGE_SIZE}")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'FULL' if fsync == 'full' else 'NORMAL'}")
    # The WAL is checkpointed every WAL_AUTOCHECKPOINT pages and then written again from
    # its start (the file is reused, not truncated and regrown); only a WAL a long
    # transaction grew beyond WAL_SIZE_LIMIT is cut back, so the quota (which counts
    # database pages in use) stays the real disk bound.
    db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT}")
    db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    # Deleted content is zeroed only on pages written anyway: with secure_delete ON (some
    # distributions' default) every freed page of a deleted envelope was written again,
    # through the WAL, doubling what a reading costs the card and growing the WAL by a
    # whole drained backlog.
    db.execute("PRAGMA secure_delete=FAST")
    return db


def used_bytes(db: sqlite3.Connection) -> int:
    """Bytes of database pages in use (WAL frames included), less pages free for reuse.

    The one disk figure: what the quota counts, what `outbox status` and /metrics show.
    """
    page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
    pages = int(db.execute("PRAGMA page_count").fetchone()[0])
    free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
    return (pages - free) * page_size


def has_column(db: sqlite3.Connection, table: str, column: str) -> bool:
    """True when `table` has `column` (older layouts lack some)."""
    return any(r[1] == column for r in db.execute(f"PRAGMA table_info({table})"))


def has_table(db: sqlite3.Connection, name: str) -> bool:
    """True when the database has a table of that name (older layouts lack or keep some)."""
    return db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone() is not None


def signer_id(db: sqlite3.Connection, protected: str) -> int:
    """The id of a key's protected header in `signers` (added when new)."""
    db.execute("INSERT OR IGNORE INTO signers (protected) VALUES (?)", (protected,))
    db.commit()
    return int(db.execute("SELECT id FROM signers WHERE protected = ?",
                          (protected,)).fetchone()[0])


def signers(db: sqlite3.Connection) -> dict[int, str]:
    """Each signing key's protected header by its id (compact envelopes name the id)."""
    return {int(i): str(p) for i, p in db.execute("SELECT id, protected FROM signers")}


def migrate_compact(db: sqlite3.Connection) -> None:
    """An outbox whose envelopes hold only their signed bytes: columns for compact rows."""
    if has_column(db, "envelopes", "payload"):
        return
    for column in ("payload BLOB", "sig BLOB", "signer INTEGER", "size INTEGER"):
        db.execute(f"ALTER TABLE envelopes ADD COLUMN {column}")
    db.commit()


def migrate_archive(db: sqlite3.Connection) -> None:
    """An outbox with a separate `archive` table (copies of sent envelopes): kept in place."""
    if not has_table(db, "archive"):
        return
    db.execute(
        "INSERT OR IGNORE INTO envelopes (seq, topic, stream, device, n_items, created, body)"
        " SELECT seq, topic, '', '', 0, archived, body FROM archive"
    )
    db.execute(
        "INSERT OR IGNORE INTO sent (seq, sent, size) SELECT seq, archived, size FROM archive"
    )
    db.execute("DROP TABLE archive")
    db.commit()


def migrate_pending(db: sqlite3.Connection) -> None:
    """An outbox written by a version with one `pending` row per item: each becomes a batch."""
    if not has_table(db, "pending"):
        return
    db.execute(
        "INSERT INTO batches (id, stream, device, created, n_items, items)"
        " SELECT id, stream, device, created, 1, item FROM pending ORDER BY id"
    )
    db.execute("DROP TABLE pending")
    db.commit()
