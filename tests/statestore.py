"""A real state database (the outbox's SQLite, its owner thread) for alert and audit tests."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from agent.delivery.outbox import Outbox, stored_envelopes
from agent.delivery.signing import generate_key_files
from agent.qc.alerts import AlertManager
from agent.qc.audit import AuditLog


class Heard:
    """Collects what the live view is told: (stream, item)."""

    def __init__(self):
        self.items: list[tuple[str, dict]] = []

    def __call__(self, stream, item):
        self.items.append((stream, item))

    def events(self, stream="alerts"):
        return [item["event"] for s, item in self.items if s == stream]


class StateStore:
    """Outbox + audit trail + alert manager on one database in `directory`."""

    def __init__(self, directory: Path, heard: Heard | None = None):
        self.directory = directory
        self.heard = heard if heard is not None else Heard()
        self.path = directory / "outbox.db"
        keys = directory / "keys"
        self.signer = generate_key_files(keys) if not (keys / "signing.key").exists() else None

    async def open(self):
        from agent.delivery.signing import Signer

        signer = Signer.load(self.directory / "keys" / "signing.key")
        self.outbox = Outbox(self.path, signer, site="s", agent="a",
                             topic_for=lambda stream, device: f"t/{stream}/{device}",
                             quota_bytes=64 * 1024 * 1024, commit_interval_ms=0)
        await self.outbox.start()
        self.database = self.outbox.state  # the state database the outbox is the host of
        self.audit = AuditLog(self.database, notify=self.heard)
        await self.audit.open()
        self.alerts = AlertManager(self.database, self.audit, notify=self.heard)
        await self.alerts.open()
        return self

    async def settle(self):
        """Wait until every queued write is committed."""
        await self.database.transact_async(None)

    async def close(self):
        await self.outbox.close()

    async def restart(self):
        await self.close()
        return await self.open()

    def stream_items(self, stream: str) -> list[dict]:
        """Items of `stream` stored in the outbox (batch rows or signed envelopes)."""
        db = sqlite3.connect(self.path)
        try:
            items = [item for (row,) in db.execute(
                "SELECT items FROM batches WHERE stream = ? ORDER BY id", (stream,))
                for item in json.loads("[" + row + "]")]
            for _seq, _stream, body in stored_envelopes(db, stream):
                items.extend(_payload(body)["items"])
        finally:
            db.close()
        return items


def durable_item_ids(db_path: Path) -> tuple[set[str], set[int]]:
    """Every item id committed to the outbox (batch rows not yet cut, envelopes sent or not)
    and the seqs of the envelopes not yet PUBACKed."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        if "batches" in tables:  # rows of items' JSON joined by commas
            ids = {item["id"] for (text,) in db.execute("SELECT items FROM batches")
                   for item in json.loads(f"[{text}]")}
        else:  # an outbox of a version with one `pending` row per item
            ids = {json.loads(row[0])["id"] for row in db.execute("SELECT item FROM pending")}
        sent: set[int] = set()
        if "sent" in tables:  # PUBACKed envelopes stay in place as the replay archive
            sent = {int(seq) for (seq,) in db.execute("SELECT seq FROM sent")}
        seqs = set()
        for seq, _stream, body in stored_envelopes(db):
            ids.update(item["id"] for item in _payload(body)["items"])
            if seq not in sent:
                seqs.add(int(seq))
        return ids, seqs
    finally:
        db.close()


def _payload(body: bytes) -> dict:
    import base64

    jws = json.loads(body)
    text = jws["payload"]
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
