"""The state database's WAL on a small disk: reused, never grown by a drained backlog.

A real Outbox on a real SQLite file on a tmpfs the test mounts (a file system that really
fills up). Deleting a drained backlog in one transaction grew the WAL by the backlog's pages
until the disk was full (issue 22): it is deleted in chunks with a checkpoint between them.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest
from faults.tmpfs import MountImpossibleError, fill, free_bytes, tmpfs

from agent.delivery.outbox import Outbox
from agent.delivery.signing import Signer
from agent.state.schema import WAL_SIZE_LIMIT


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """tmp_path/state on its own 24 MiB tmpfs."""
    try:
        with tmpfs(tmp_path / "state", "24m") as mount:
            yield mount
    except MountImpossibleError as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")


class WalWatch:
    """The largest size the WAL file reaches while the block runs (sampled every 2 ms)."""

    def __init__(self, wal: Path) -> None:
        self.wal = wal
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            try:
                self.peak = max(self.peak, self.wal.stat().st_size)
            except OSError:
                continue

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def topic_for(stream: str, device: str) -> str:
    return f"t/{stream}/{device}"


async def test_deleting_a_drained_backlog_keeps_the_wal_small(small_disk, signer: Signer):
    path = small_disk / "state.db"
    box = Outbox(path, signer, site="site-1", agent="agent-1", topic_for=topic_for,
                 quota_bytes=64 * 1024 * 1024, fsync="normal", batch_max_items=10,
                 batch_max_age_ms=0, max_commit_delay_ms=0)
    await box.start()
    try:
        # A backlog of ~10 MB (incompressible filler: envelopes are stored compressed).
        for n in range(10_000):
            filler = base64.b64encode(os.urandom(750)).decode("ascii")
            box.submit("readings", "d1", json.dumps({"n": n, "fill": filler}))
            if box.saturated:
                await box.wait_capacity()
        assert await box.flush(timeout=120)
        seqs = [e.seq for e in await box.fetch(0, 100_000)]
        assert len(seqs) >= 1000
        # Filling the backlog took large transactions (up to 20 000 readings each); the
        # drain starts from an empty WAL, so every byte it reaches is the drain's own.
        await box.state.run(lambda db: db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
        # Two MiB left: one transaction deleting the whole backlog needs several times that.
        fill(small_disk, leave_bytes=2 * 1024 * 1024)
        assert free_bytes(small_disk) <= 2 * 1024 * 1024

        with WalWatch(path.with_name(path.name + "-wal")) as watch:
            box.acknowledge(seqs)  # the broker PUBACKs the whole backlog at once
            assert await box.unsent_from() is None  # recorded, chunk by chunk
        stats = await box.stats()
        assert stats.envelopes == 0
        assert box.disk_full_total == 0, "a chunk of the drain ran out of disk"
        assert watch.peak <= WAL_SIZE_LIMIT, f"the WAL grew to {watch.peak} bytes"

        # The outbox goes on: new readings are committed and cut on the same full disk.
        box.submit("readings", "d1", json.dumps({"n": 10_000}))
        assert await box.flush()
        assert [e.seq for e in await box.fetch(0, 10)] == [seqs[-1] + 1]
    finally:
        await box.close()
