"""The outbox keeps a batch as one row of serialised items and cuts envelopes by joining rows:
every item signed exactly as submitted, envelopes within the item and size bounds (so a JOSE
library with default limits verifies them), rows recovered after a restart, an outbox of the
one-row-per-item layout taken over."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from collector import jose_verify

from agent.delivery.outbox import Outbox
from agent.delivery.signing import generate_key_files


def item(i: int, text: str = "hr 0: 4120 0000") -> str:
    return json.dumps({"id": f"id-{i:08d}", "device": "plc-1", "channel": f"v{i % 50:02d}",
                       "t": "2026-12-01T00:00:00.000000Z", "value": float(i), "unit": "Pa",
                       "quality": "good", "raw": {"value": float(i), "unit": "Pa", "text": text}},
                      separators=(",", ":"))  # fmt: skip


def open_outbox(tmp_path: Path) -> tuple[Outbox, dict]:
    signer = generate_key_files(tmp_path / "keys", overwrite=True)
    jwk = json.loads((tmp_path / "keys" / "signing.pub.jwk").read_text())
    outbox = Outbox(tmp_path / "outbox.db", signer, site="s", agent="a",
                    topic_for=lambda stream, device: f"t/{stream}/{device}", quota_bytes=2**30)  # fmt: skip
    return outbox, jwk


async def signed_items(outbox: Outbox, jwk: dict) -> list[list[dict]]:
    envelopes = await outbox.fetch(0, 10_000)
    out = []
    for envelope in envelopes:
        _header, payload = jose_verify(envelope.body, jwk)  # joserfc, default size limits
        document = json.loads(payload)
        assert len(document["items"]) == envelope.n_items
        out.append(document["items"])
    return out


async def test_batches_are_signed_whole_and_envelopes_stay_within_bounds(tmp_path):
    outbox, jwk = open_outbox(tmp_path)
    await outbox.start()
    try:
        texts = [item(i, text="x" * 300) for i in range(3000)]  # long raw texts: size-bound
        for start in range(0, 3000, 50):
            outbox.submit_batch("readings", "plc-1", 50, ",".join(texts[start : start + 50]))
        assert await outbox.flush(timeout=30)
        envelopes = await signed_items(outbox, jwk)
    finally:
        await outbox.close()
    assert [i for items in envelopes for i in items] == [json.loads(t) for t in texts]
    for items in envelopes:
        assert len(items) % 50 == 0, "a batch is never split across envelopes"
        assert len(items) <= outbox.batch_max_items
    # 480-byte items: the size bound, not the item count, cut these envelopes.
    assert max(len(items) for items in envelopes) < outbox.batch_max_items


async def test_batch_rows_survive_a_restart_and_an_old_outbox_is_taken_over(tmp_path):
    outbox, jwk = open_outbox(tmp_path)
    await outbox.start()
    await outbox.close()
    # Rows a crashed agent left behind: one batch row, and rows of the earlier layout
    # (one `pending` row per item).
    db = sqlite3.connect(tmp_path / "outbox.db")
    db.execute("INSERT INTO batches (id, stream, device, created, n_items, items)"
               " VALUES (1, 'readings', 'plc-1', 0, 2, ?)", (item(1) + "," + item(2),))  # fmt: skip
    db.execute("CREATE TABLE pending (id INTEGER PRIMARY KEY, stream TEXT NOT NULL,"
               " device TEXT NOT NULL, created REAL NOT NULL, item TEXT NOT NULL)")  # fmt: skip
    db.executemany("INSERT INTO pending VALUES (?, 'readings', 'plc-1', 0, ?)",
                   [(2, item(3)), (3, item(4))])  # fmt: skip
    db.commit()
    db.close()
    outbox, jwk = open_outbox(tmp_path)
    await outbox.start()
    try:
        assert await outbox.flush(timeout=30)
        envelopes = await signed_items(outbox, jwk)
        stats = await outbox.stats()
    finally:
        await outbox.close()
    assert [i["id"] for items in envelopes for i in items] == [f"id-{n:08d}" for n in (1, 2, 3, 4)]
    assert stats.pending_items == 0
