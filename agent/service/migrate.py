"""One-time import of the separate alert and audit databases of earlier versions.

Before the single state database, alerts lived in `state_dir/alerts.db` and the audit trail in
`state_dir/audit.db`. At start their rows are copied into the state database (same tables,
same hashes, so the audit chain continues) and the old files renamed `*.imported`, never
deleted: an inspector can still open them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import structlog

log = structlog.get_logger("isoedge.migrate")

LEGACY = (("alerts.db", "alerts"), ("audit.db", "audit"))


def import_legacy_stores(db: sqlite3.Connection, state_dir: Path) -> list[str]:
    """Copy rows of legacy databases into `db` (the state database); returns what was imported.

    Runs on the state writer's thread before the alert and audit tables are first used. A
    legacy table is only imported into an empty table, so a restart never imports twice.
    """
    imported: list[str] = []
    for name, table in LEGACY:
        path = state_dir / name
        if not path.exists():
            continue
        exists = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        if exists and db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]:  # noqa: S608
            log.warning("legacy database left as is: the state database already has rows",
                        path=str(path), table=table)
            continue
        db.execute("ATTACH DATABASE ? AS legacy", (f"file:{path}?mode=ro",))
        try:
            found = db.execute(
                "SELECT sql FROM legacy.sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
            if found is None:
                continue
            if not exists:
                db.execute(found[0])
            db.execute(f"INSERT INTO main.{table} SELECT * FROM legacy.{table}")  # noqa: S608
            db.commit()
        finally:
            db.execute("DETACH DATABASE legacy")
        path.rename(path.with_name(name + ".imported"))
        for suffix in ("-wal", "-shm"):
            side = path.with_name(name + suffix)
            if side.exists():
                side.rename(path.with_name(name + ".imported" + suffix))
        log.info("legacy database imported into the state database", path=str(path))
        imported.append(name)
    return imported
