"""The outbox's archive of sent envelopes (gap repair, issue 16): kept byte-identical after
PUBACK, bounded by size and age, and yielding to the backlog when the quota is tight."""

from __future__ import annotations

import base64
import json
import os
import sqlite3

from agent.delivery.outbox import Outbox
from agent.delivery.signing import generate_key_files


async def _outbox(tmp_path, **kwargs) -> Outbox:
    signer = generate_key_files(tmp_path / "keys", overwrite=True)
    outbox = Outbox(tmp_path / "outbox.db", signer, site="s", agent="a",
                    topic_for=lambda stream, device: f"isoedge/v1/s/a/{stream}/{device}",
                    commit_interval_ms=0, batch_max_items=10, batch_max_age_ms=0, **kwargs)
    await outbox.start()
    return outbox


async def _envelopes(outbox: Outbox, n: int) -> list:
    for i in range(n * 10):
        # Incompressible padding: envelopes are stored compressed, the test needs their size.
        pad = base64.b64encode(os.urandom(150)).decode("ascii")
        outbox.submit("readings", "d1", json.dumps({"id": f"r{i}", "pad": pad}))
    assert await outbox.flush()
    return await outbox.fetch(0, 10_000)


async def test_acknowledged_envelopes_stay_byte_identical_in_the_archive(tmp_path):
    outbox = await _outbox(tmp_path, quota_bytes=64 << 20, archive_days=7, archive_bytes=8 << 20)
    try:
        sent = await _envelopes(outbox, 20)  # about 20: a busy machine may cut one more
        assert len(sent) >= 20
        outbox.acknowledge([e.seq for e in sent])
        assert await outbox.fetch(0, 10_000) == []  # gone from the backlog ...
        assert await outbox.archive_range() == (1, sent[-1].seq)  # ... kept for replay
        replay = await outbox.archived(5, 9)
        assert [(e.seq, e.topic, e.body) for e in replay] == [
            (e.seq, e.topic, e.body) for e in sent[4:9]]
    finally:
        await outbox.close()


async def test_the_archive_keeps_only_the_newest_envelopes_within_its_size(tmp_path):
    outbox = await _outbox(tmp_path, quota_bytes=64 << 20, archive_days=7, archive_bytes=20_000)
    try:
        sent = await _envelopes(outbox, 40)
        size = len(sent[0].body)
        for envelope in sent:
            outbox.acknowledge([envelope.seq])
        assert await outbox.flush()
        assert outbox.archive_bytes <= 20_000
        first, last = await outbox.archive_range()
        assert last == sent[-1].seq
        assert (last - first + 1) * size <= 20_000 + size
        assert first > 1
        assert outbox.archive_bytes <= 20_000
    finally:
        await outbox.close()


async def test_archive_days_zero_keeps_nothing(tmp_path):
    outbox = await _outbox(tmp_path, quota_bytes=64 << 20, archive_days=0, archive_bytes=8 << 20)
    try:
        sent = await _envelopes(outbox, 5)
        outbox.acknowledge([e.seq for e in sent])
        assert await outbox.archive_range() is None
    finally:
        await outbox.close()


async def test_under_quota_pressure_the_archive_gives_way_to_the_backlog(tmp_path):
    quota = 400_000
    outbox = await _outbox(tmp_path, quota_bytes=quota, archive_days=7, archive_bytes=8 << 20)
    try:
        sent = await _envelopes(outbox, 170)  # ~ 350 KB of envelopes on disk (compressed)
        outbox.acknowledge([e.seq for e in sent])
        assert await outbox.flush()  # acknowledgements are recorded with the next commit
        assert outbox.disk_bytes < 0.8 * quota
        assert outbox.quota_state == "ok"
        first, last = await outbox.archive_range()
        assert last == sent[-1].seq and first > 1  # the oldest went first
    finally:
        await outbox.close()


async def test_an_archive_of_an_older_version_is_kept_on_upgrade(tmp_path):
    """Older outboxes copied sent envelopes into an `archive` table; they are kept in place."""
    outbox = await _outbox(tmp_path, quota_bytes=64 << 20, archive_days=7, archive_bytes=8 << 20)
    try:
        sent = await _envelopes(outbox, 6)
        outbox.acknowledge([e.seq for e in sent[:4]])
        assert await outbox.flush()
    finally:
        await outbox.close()
    db = sqlite3.connect(tmp_path / "outbox.db")  # rewritten into the older layout
    db.executescript("""
        CREATE TABLE archive (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL,
                              archived REAL NOT NULL, size INTEGER NOT NULL, body BLOB NOT NULL);
        INSERT INTO archive SELECT e.seq, e.topic, s.sent, s.size, x''
            FROM envelopes e JOIN sent s ON s.seq = e.seq;
        DELETE FROM envelopes WHERE seq IN (SELECT seq FROM sent);
        DROP TABLE sent;
    """)
    # The archive held the signed bytes themselves.
    db.executemany("UPDATE archive SET body = ? WHERE seq = ?", [(e.body, e.seq) for e in sent[:4]])
    db.commit()
    db.close()
    outbox = await _outbox(tmp_path, quota_bytes=64 << 20, archive_days=7, archive_bytes=8 << 20)
    try:
        assert await outbox.archive_range() == (1, 4)
        assert [e.body for e in await outbox.archived(1, 4)] == [e.body for e in sent[:4]]
        assert [e.seq for e in await outbox.fetch(0, 100)] == [e.seq for e in sent[4:]]
        assert (await outbox.stats()).envelopes == len(sent) - 4
    finally:
        await outbox.close()
