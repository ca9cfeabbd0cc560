"""An event item larger than any envelope may carry is refused at submission, never cut.

A real Outbox on a real SQLite file: an alert, audit or QC item beyond
`MAX_ENVELOPE_ITEM_BYTES` fails its write (with the change it belongs to), is logged and
counted, and no envelope the ingest would refuse is ever cut; an item at the bound still goes
out whole and verifies.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
import structlog

from agent.delivery.outbox import Outbox, OversizedItemError
from agent.delivery.verification import MAX_ENVELOPE_ITEM_BYTES, MAX_MESSAGE_BYTES


def topic_for(stream: str, device: str) -> str:
    return f"t/{stream}/{device}" if device else f"t/{stream}"


@pytest.fixture
async def outbox(tmp_path, signer):
    box = Outbox(tmp_path / "outbox.db", signer, site="site-1", agent="agent-1",
                 topic_for=topic_for, quota_bytes=64 * 1024 * 1024, fsync="normal",
                 commit_interval_ms=0, batch_max_items=1, batch_max_age_ms=0)
    await box.start()
    try:
        yield box
    finally:
        await box.close()


def sized(stream: str, size: int) -> str:
    """An item's JSON of exactly `size` UTF-8 bytes (multi-byte text, as a record's note)."""
    head = json.dumps({"id": f"{stream}-1", "event": f"{stream}.note", "text": ""},
                      separators=(",", ":"))
    room = size - len(head.encode())
    text = "é" * (room // 2) + "x" * (room % 2)
    out = head[:-2] + text + '"}'
    assert len(out.encode()) == size
    return out


async def make_table(box: Outbox) -> None:
    def _create(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS changes (name TEXT PRIMARY KEY)")
        db.commit()

    await box.state.run(_create)


def change(name: str):
    def _apply(db: sqlite3.Connection) -> str:
        db.execute("INSERT INTO changes (name) VALUES (?)", (name,))
        return name

    return _apply


def changes(path: Path) -> set[str]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {r[0] for r in db.execute("SELECT name FROM changes")}
    finally:
        db.close()


@pytest.mark.parametrize("stream", ["qc", "audit", "alerts"])
async def test_an_oversized_record_is_refused_with_its_change_logged_and_counted(
    outbox, registry, stream
):
    await make_table(outbox)
    big = sized(stream, MAX_ENVELOPE_ITEM_BYTES + 1)
    with structlog.testing.capture_logs() as logs:
        refused = outbox.state.transact(change("refused"), [(stream, "", big)], tag="t")
    with pytest.raises(OversizedItemError, match=f"{MAX_ENVELOPE_ITEM_BYTES + 1} bytes"):
        await asyncio.wrap_future(refused)
    assert outbox.refused_oversized == {stream: 1}
    errors = [e for e in logs if e["log_level"] == "error"]
    assert errors and errors[0]["stream"] == stream
    assert errors[0]["bytes"] == MAX_ENVELOPE_ITEM_BYTES + 1

    # The bound itself still goes out whole, in one envelope every verifier accepts.
    fits = sized(stream, MAX_ENVELOPE_ITEM_BYTES)
    assert await outbox.state.transact_async(change("kept"), [(stream, "", fits)]) == "kept"
    assert await outbox.flush(30)
    envelopes = await outbox.fetch(0, 100)
    assert len(envelopes) == 1
    assert len(envelopes[0].body) <= MAX_MESSAGE_BYTES
    verified = registry.verify(envelopes[0].body)
    assert [json.dumps(i, separators=(",", ":"), ensure_ascii=False)
            for i in verified.document["items"]] == [fits]
    assert changes(outbox.path) == {"kept"}  # the refused write's change was never applied


async def test_an_oversized_batch_submitted_directly_raises_and_is_not_queued(outbox):
    big = sized("qc", MAX_ENVELOPE_ITEM_BYTES + 10)
    with pytest.raises(OversizedItemError):
        outbox.submit("qc", "", big)
    assert outbox.refused_oversized == {"qc": 1}
    assert await outbox.flush(30)
    assert await outbox.fetch(0, 100) == []
