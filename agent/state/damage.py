"""A damaged state database at start: found, named, and either refused or moved aside.

`check_database()` runs SQLite's `PRAGMA quick_check` (b-tree structure, page and record
formats; not the index contents, which `integrity_check` would add at several times the cost)
before the agent writes to the file. A damaged database is never deleted and never written
to: with `outbox.on_damaged = "refuse"` (the default) the agent stops with exit code 2 and a
message that names the file and says how to recover; with `"move_aside"` the file and its WAL
are renamed to `NAME.damaged-YYYYmmddTHHMMSSZ` next to it and the agent starts with a fresh
database, continuing the seq and hash chain from the damaged one where its chain row can still
be read (else from 0: the audit record says which).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from agent.state.schema import stored_head

log = structlog.get_logger("isoedge.damage")


class DamagedDatabaseError(RuntimeError):
    """The state database is damaged and the configuration says not to replace it."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"{path}: the state database is damaged ({reason}). Nothing was changed. To recover:"
            f" keep the file for investigation and move it away (e.g. `mv {path}"
            f' {path}.damaged`), or set `outbox.on_damaged = "move_aside"` to let the agent'
            " do that and start with a fresh database; envelopes not yet delivered stay in the"
            ' damaged file (see docs/operations.md, "A damaged file").'
        )


@dataclass(frozen=True, slots=True)
class DamageReport:
    """What was found and done, for the alert and the audit record."""

    path: Path
    moved_to: Path
    reason: str
    continued_seq: int | None  # the seq the fresh database continues from, when salvaged
    continued_hash: str


SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26


def _is_damage(exc: sqlite3.Error) -> bool:
    """Corruption, not a database: damage. A full disk or an I/O error is not (retried)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and int(code) & 0xFF in {SQLITE_CORRUPT, SQLITE_NOTADB}


def check_database(path: Path) -> str | None:
    """None when `path` is absent or passes `PRAGMA quick_check`; else what is wrong.

    Errors that are not about the file's content (a full disk, no permission) are not
    damage: they are left for the normal open, which reports or waits them out.
    """
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        return str(exc) if _is_damage(exc) else None
    try:
        rows = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.Error as exc:
        return str(exc) if _is_damage(exc) else None
    finally:
        db.close()
    problems = [str(r[0]) for r in rows if str(r[0]) != "ok"]
    if not problems:
        return None
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"quick_check: {problems[0]}{more}"


def _salvage_chain(path: Path) -> tuple[int, str] | None:
    """The last seq and hash of a damaged outbox, if its chain row can still be read."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        try:
            return stored_head(db)  # the chain row, or the newest envelope when newer
        except (sqlite3.DatabaseError, zlib.error, ValueError, IndexError):
            row = db.execute("SELECT last_seq, last_hash FROM chain WHERE k = 1").fetchone()
    except sqlite3.DatabaseError:
        return None
    finally:
        db.close()
    if row is None:
        return None
    try:
        return int(row[0]), str(row[1])
    except (TypeError, ValueError):
        return None


def move_aside(path: Path, reason: str) -> DamageReport:
    """Rename the damaged database (and its -wal, -shm) out of the way; never delete."""
    salvaged = _salvage_chain(path)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    counter = 1
    while target.exists():
        counter += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{counter}")
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    path.rename(target)
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    log.error("damaged state database moved aside", path=str(path), moved_to=str(target),
              reason=reason, continued_seq=salvaged[0] if salvaged else None)
    return DamageReport(path, target, reason, salvaged[0] if salvaged else None,
                        salvaged[1] if salvaged else "")
