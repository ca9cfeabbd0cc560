"""The replay archive: sent envelopes kept in place, byte-identical, for replay requests.

A PUBACKed envelope is marked sent (a small row in `sent`: seq, when, published size); the
envelope itself is neither copied nor rewritten. It stays until it is older than
`archive_days` or beyond `archive_bytes` (counted as published), and gives its pages back
first when the quota or the disk needs them (counted as stored: envelopes are stored
compressed). Runs on the state database's owner thread, inside the caller's transaction;
deletions go DELETE_CHUNK envelopes at a time (see `prune`).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable

ARCHIVE_PRUNE_INTERVAL_S = 30.0  # age-based pruning at most this often
# Envelopes deleted (or marked sent) per transaction when many go at once (a drained backlog,
# a pruned archive), with a PASSIVE checkpoint between chunks: each chunk's pages are copied
# into the database and the WAL is written again from its start. One transaction for all of
# them grew the WAL by the whole backlog's pages, on a disk that had no room for it.
DELETE_CHUNK = 256

STORED = (
    "length(e.body) + COALESCE(length(e.payload), 0) + COALESCE(length(e.sig), 0)"
    " + length(e.topic) + 48"
)
"""Bytes an envelope row `e` takes in the database, roughly (its columns and row overhead)."""
PUBLISHED = "COALESCE(size, length(body))"
"""Bytes of an envelope as published (what the archive bound counts)."""


class ReplayArchive:
    """Which sent envelopes are kept, and how many bytes they hold (owner thread only)."""

    def __init__(self, days: float, max_bytes: int) -> None:
        self.keep_s = days * 86400.0
        self.max_bytes = max_bytes
        self.bytes = 0  # published bytes of the envelopes kept
        self._pruned = 0.0  # time.time() of the last complete age-based pruning
        self.before_delete: Callable[[sqlite3.Connection], None] | None = None
        """Called in the transaction before envelopes are deleted (the outbox saves its head)."""

    @property
    def enabled(self) -> bool:
        """False when the configuration keeps no sent envelope (0 days or 0 bytes)."""
        return self.keep_s > 0 and self.max_bytes > 0

    def load(self, db: sqlite3.Connection) -> None:
        """The bytes held, as the database has them (at open, after a rollback)."""
        with contextlib.suppress(sqlite3.Error):
            self.bytes = int(db.execute("SELECT COALESCE(SUM(size), 0) FROM sent").fetchone()[0])

    def keep(self, db: sqlite3.Connection, seqs: list[int]) -> None:
        """PUBACKed envelopes marked sent: kept where they are."""
        now = time.time()
        db.executemany(
            "INSERT OR IGNORE INTO sent (seq, sent, size)"  # noqa: S608 - a fixed fragment
            f" SELECT seq, ?, {PUBLISHED} FROM envelopes WHERE seq = ?",
            [(now, s) for s in seqs],
        )
        self.bytes += int(
            db.execute("SELECT COALESCE(SUM(size), 0) FROM sent WHERE sent = ?", (now,)).fetchone()[
                0
            ]
        )

    def range(self, db: sqlite3.Connection) -> tuple[int, int] | None:
        """(first, last) seq held, None when the archive is empty."""
        row = db.execute("SELECT MIN(seq), MAX(seq) FROM sent").fetchone()
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))

    def prune(self, db: sqlite3.Connection, *, room: int = 0) -> bool:
        """Drop envelopes older than `keep_s` or beyond the size bound (oldest first).

        `room` asks for that many more stored bytes back (the quota comes before the archive).
        At most DELETE_CHUNK envelopes go in one call (the caller's transaction); returns True
        when nothing more is due, False when the caller should commit and call again.
        """
        now = time.time()
        if now - self._pruned > ARCHIVE_PRUNE_INTERVAL_S:
            old = db.execute(
                "SELECT seq, size FROM sent WHERE sent < ? ORDER BY seq LIMIT ?",
                (now - self.keep_s, DELETE_CHUNK),
            ).fetchall()
            if old:
                self._drop(db, int(old[-1][0]), sum(int(r[1]) for r in old))
            if len(old) == DELETE_CHUNK:
                return False
            self._pruned = now
        excess = self.bytes - self.max_bytes
        if excess <= 0 and room <= 0:
            return True
        # The newest sent envelope stays even when it alone is beyond the bound (an envelope
        # holds up to a commit delay of readings), unless the quota needs its room.
        newest = db.execute("SELECT MAX(seq) FROM sent").fetchone()[0] if room <= 0 else None
        rows = db.execute(
            f"SELECT s.seq, s.size, {STORED} FROM sent s JOIN envelopes e ON e.seq = s.seq"  # noqa: S608 - a fixed fragment
            " ORDER BY s.seq LIMIT ?",
            (DELETE_CHUNK,),
        ).fetchall()
        if not rows:
            db.execute("DELETE FROM sent")  # rows of envelopes already gone
            self.bytes = 0
            return True
        if newest is not None:
            rows = [row for row in rows if row[0] != newest]
            if not rows:
                return True
        last, freed, stored = rows[-1][0], 0, 0
        for seq, size, held in rows:
            freed += int(size)
            stored += int(held)
            if freed >= excess and stored >= room:
                last = seq
                break
        self._drop(db, int(last), freed)
        return freed >= excess and stored >= room

    def prune_chunked(
        self, db: sqlite3.Connection, room: Callable[[], int], checkpoint: Callable[[], None]
    ) -> None:
        """`prune` until done, a transaction a chunk and `checkpoint()` between them.

        `room()` is asked again before each chunk (what the quota still needs back).
        """
        while not self.prune(db, room=max(0, room())):
            db.commit()
            checkpoint()
        db.commit()

    def _drop(self, db: sqlite3.Connection, last: int, size: int) -> None:
        """Kept envelopes up to seq `last` (`size` published bytes) deleted."""
        if self.before_delete is not None:
            self.before_delete(db)
        db.execute(
            "DELETE FROM envelopes WHERE seq IN (SELECT seq FROM sent WHERE seq <= ?)", (last,)
        )
        db.execute("DELETE FROM sent WHERE seq <= ?", (last,))
        self.bytes -= size
