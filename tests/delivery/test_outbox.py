"""The outbox on its own: commit, cut into signed envelopes, chain, quota, transactions, crash.

A real Outbox on a real SQLite file in tmp_path; envelopes are checked with the verifier the
consumers use (KeyRegistry, joserfc), not with the signer that made them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import REPO, cli_env, wait_for_condition

from agent.delivery.outbox import Envelope, Outbox, stored_envelopes
from agent.delivery.signing import Signer, b64url
from agent.delivery.verification import KeyRegistry, Verified
from agent.state.schema import stored_head


def topic_for(stream: str, device: str) -> str:
    return f"t/{stream}/{device}" if device else f"t/{stream}"


def make_outbox(path: Path, signer: Signer, **kw) -> Outbox:
    options = {"quota_bytes": 64 * 1024 * 1024, "fsync": "normal", "commit_interval_ms": 0}
    options.update(kw)
    return Outbox(path, signer, site="site-1", agent="agent-1", topic_for=topic_for, **options)


@pytest.fixture
async def outbox(tmp_path, signer):
    box = make_outbox(tmp_path / "outbox.db", signer, batch_max_items=3, batch_max_age_ms=60_000)
    await box.start()
    try:
        yield box
    finally:
        await box.close()


def item(n: int, device: str = "d1") -> str:
    return json.dumps({"device": device, "n": n}, separators=(",", ":"))


def verify_all(registry: KeyRegistry, envelopes: list[Envelope]) -> list[Verified]:
    return [registry.verify(e.body) for e in envelopes]


def assert_chain(verified: list[Verified], first_seq: int = 1, first_prev: str = "") -> None:
    """seq runs first_seq, +1, ...; each prev is base64url(sha256) of the previous payload."""
    assert [v.document["seq"] for v in verified] == list(
        range(first_seq, first_seq + len(verified))
    )
    prev = first_prev
    for v in verified:
        assert v.document["prev"] == prev, f"chain broken at seq {v.document['seq']}"
        prev = b64url(hashlib.sha256(v.payload).digest())


async def all_envelopes(box: Outbox) -> list[Envelope]:
    return await box.fetch(0, 100_000)


async def test_items_are_cut_into_signed_envelopes_with_gapless_seq_and_hash_chain(
    outbox, registry
):
    for n in range(7):
        outbox.submit("readings", "d1", item(n, "d1"))
        outbox.submit("readings", "d2", item(n, "d2"))
    outbox.submit("alerts", "", item(99, ""))
    assert await outbox.flush()

    envelopes = await all_envelopes(outbox)
    verified = verify_all(registry, envelopes)
    assert_chain(verified)
    assert {v.kid for v in verified} == registry.kids
    assert outbox.last_seq == len(envelopes)
    by_device: dict[str, list[int]] = {}
    for envelope, v in zip(envelopes, verified, strict=True):
        document = v.document
        assert document["v"] == 1
        assert (document["site"], document["agent"]) == ("site-1", "agent-1")
        assert document["created"].endswith("Z")
        assert 1 <= len(document["items"]) <= 3 == outbox.batch_max_items
        assert envelope.n_items == len(document["items"])
        devices = {i["device"] for i in document["items"]}
        assert len(devices) == 1, "one envelope holds one (stream, device)"
        (device,) = devices
        assert envelope.topic == topic_for(document["stream"], device)
        by_device.setdefault(device, []).extend(i["n"] for i in document["items"])
    assert by_device == {"d1": list(range(7)), "d2": list(range(7)), "": [99]}


async def test_a_full_batch_is_cut_at_once_a_partial_one_waits(outbox):
    for n in range(7):
        outbox.submit("readings", "d1", item(n))
    # 7 >= batch_max_items: cut without a flush, in envelopes of at most 3.
    await wait_for_condition(lambda: outbox.last_seq == 3, timeout=10)
    assert [e.n_items for e in await all_envelopes(outbox)] == [3, 3, 1]

    outbox.submit("readings", "d1", item(7))
    outbox.submit("readings", "d1", item(8))

    async def committed_pending() -> bool:
        return (await outbox.stats()).pending_items == 2

    await wait_for_condition(committed_pending, timeout=10)
    assert outbox.last_seq == 3, "a batch short of batch_max_items waits for its age"
    assert await outbox.flush()
    assert [e.n_items for e in await all_envelopes(outbox)] == [3, 3, 1, 2]
    assert (await outbox.stats()).pending_items == 0


async def test_a_partial_batch_is_cut_once_its_oldest_item_is_batch_max_age_old(
    tmp_path, signer, registry
):
    box = make_outbox(tmp_path / "age.db", signer, batch_max_items=1000, batch_max_age_ms=300)
    await box.start()
    try:
        submitted = time.monotonic()
        box.submit("readings", "d1", item(1))
        box.submit("readings", "d1", item(2))
        await wait_for_condition(lambda: box.last_seq == 1, timeout=10, interval=0.005)
        waited = time.monotonic() - submitted
        assert waited >= 0.3 * 0.95, f"cut after {waited:.3f} s, before batch_max_age"
        (envelope,) = await all_envelopes(box)
        assert [i["n"] for i in registry.verify(envelope.body).document["items"]] == [1, 2]
    finally:
        await box.close()


async def test_reopened_outbox_keeps_envelopes_byte_identical_and_continues_seq_and_chain(
    tmp_path, signer, registry
):
    path = tmp_path / "reopen.db"
    first = make_outbox(path, signer, batch_max_items=2, batch_max_age_ms=60_000)
    await first.start()
    for n in range(5):
        first.submit("readings", "d1", item(n))
    assert await first.flush()
    before = await all_envelopes(first)
    # Committed but not yet cut: close() must cut it, not drop it.
    first.submit("readings", "d1", item(5))
    await first.close()

    second = make_outbox(path, signer, batch_max_items=2, batch_max_age_ms=60_000)
    await second.start()
    try:
        after_reopen = await all_envelopes(second)
        assert [e.body for e in after_reopen[: len(before)]] == [e.body for e in before]
        assert second.last_seq == len(after_reopen)
        for n in range(6, 9):
            second.submit("readings", "d1", item(n))
        assert await second.flush()
        everything = await all_envelopes(second)
    finally:
        await second.close()
    verified = verify_all(registry, everything)
    assert_chain(verified)  # one chain across the restart
    assert [i["n"] for v in verified for i in v.document["items"]] == list(range(9))


async def test_acknowledge_deletes_envelopes_and_stats_report_the_backlog(outbox):
    empty = await outbox.stats()
    assert (empty.envelopes, empty.items, empty.pending_items, empty.last_seq) == (0, 0, 0, 0)
    assert empty.oldest_unsent is None
    assert empty.disk_bytes > 0

    for n in range(8):
        outbox.submit("readings", "d1", item(n))
    assert await outbox.flush()
    stats = await outbox.stats()
    assert (stats.envelopes, stats.items, stats.pending_items, stats.last_seq) == (3, 8, 0, 3)
    assert stats.oldest_unsent is not None and stats.oldest_unsent.endswith("Z")
    assert stats.as_dict()["items"] == 8

    outbox.acknowledge([1, 2])
    remaining = await all_envelopes(outbox)
    assert [e.seq for e in remaining] == [3]
    stats = await outbox.stats()
    assert (stats.envelopes, stats.items, stats.last_seq) == (1, 2, 3)
    outbox.acknowledge([3])
    assert (await outbox.stats()).envelopes == 0
    assert await outbox.fetch(0, 10) == []


async def test_quota_goes_ok_high_full_and_back_to_ok_when_the_backlog_drains(
    tmp_path, signer
):
    quota = 200_000
    box = make_outbox(tmp_path / "quota.db", signer, quota_bytes=quota, batch_max_items=1,
                      batch_max_age_ms=0)
    changes: list[tuple[str, int]] = []
    box.on_quota_change = lambda state, used: changes.append((state, used))
    await box.start()
    try:
        assert box.quota_state == "ok"
        n = 0
        while box.quota_state != "full":
            assert n < 200, f"quota never full: {box.disk_bytes} of {quota} bytes"
            # Incompressible filler: envelopes are stored compressed.
            filler = base64.b64encode(os.urandom(1500)).decode("ascii")
            box.submit("readings", "d1", json.dumps({"n": n, "fill": filler}))
            assert await box.flush()
            n += 1
        await wait_for_condition(lambda: [s for s, _ in changes] == ["high", "full"], timeout=5)
        high_at, full_at = (used for _, used in changes)
        assert 0.9 * quota <= high_at < quota <= full_at

        box.acknowledge([e.seq for e in await all_envelopes(box)])
        await wait_for_condition(lambda: len(changes) == 3, timeout=5)
        assert changes[2][0] == "ok"
        assert changes[2][1] < 0.8 * quota
        assert box.quota_state == "ok"
    finally:
        await box.close()


# ------------------------------------------------------------------ transactions
async def make_table(box: Outbox) -> None:
    def _create(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS notes (name TEXT PRIMARY KEY)")
        db.commit()

    await box.state.run(_create)


def insert(name: str, *, fail: bool = False):
    def _apply(db: sqlite3.Connection) -> str:
        db.execute("INSERT INTO notes (name) VALUES (?)", (name,))
        if fail:
            raise ValueError(f"refused {name}")
        return name

    return _apply


def on_disk(path: Path) -> tuple[set[str], list[str]]:
    """(rows of `notes`, `note` fields of every stored item) as another process sees them."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = {r[0] for r in db.execute("SELECT name FROM notes")}
        items = [item for (row,) in db.execute("SELECT items FROM batches ORDER BY id")
                 for item in json.loads("[" + row + "]")]  # a row holds items joined by commas
        bodies = [json.loads(body) for _seq, _stream, body in stored_envelopes(db)]
    finally:
        db.close()
    for body in bodies:
        text = body["payload"]
        payload = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        items.extend(payload["items"])
    return names, [i["note"] for i in items if "note" in i]


def note(name: str) -> list[tuple[str, str, str]]:
    return [("audit", "", json.dumps({"note": name}))]


async def test_transact_commits_a_write_and_its_items_before_its_future_resolves(outbox):
    await make_table(outbox)
    assert await outbox.state.transact_async(insert("a"), note("a"), tag="t") == "a"
    names, notes = on_disk(outbox.path)  # a second connection sees the committed state
    assert names == {"a"}
    assert notes == ["a"]


async def test_a_failing_write_is_undone_alone_and_its_future_carries_the_exception(outbox):
    await make_table(outbox)
    entered, release = threading.Event(), threading.Event()

    def _hold(_db: sqlite3.Connection) -> None:
        entered.set()
        release.wait(10)

    # Hold the owner thread, so the three writes below are taken in one cycle.
    held = asyncio.ensure_future(outbox.state.run(_hold))
    await asyncio.to_thread(entered.wait, 10)
    futures = [
        outbox.state.transact(insert("first"), note("first")),
        outbox.state.transact(insert("bad", fail=True), note("bad")),
        outbox.state.transact(insert("third"), note("third")),
    ]
    release.set()
    await held
    first, bad, third = (asyncio.wrap_future(f) for f in futures)
    assert await first == "first"
    assert await third == "third"
    with pytest.raises(ValueError, match="refused bad"):
        await bad
    names, notes = on_disk(outbox.path)
    assert names == {"first", "third"}
    assert notes == ["first", "third"]


async def test_a_read_queued_after_a_write_sees_it(outbox):
    await make_table(outbox)
    write = outbox.state.transact(insert("seen"), note("seen"))  # not awaited
    names = await outbox.state.run(lambda db: {r[0] for r in db.execute("SELECT name FROM notes")})
    assert names == {"seen"}
    assert write.done()
    assert write.result() == "seen"


# ------------------------------------------------------------------------------- crashes
CHILD = """
import asyncio, json, sqlite3, sys
from pathlib import Path
from agent.delivery.outbox import Outbox
from agent.delivery.signing import Signer

async def main(path, key, mode):
    box = Outbox(Path(path), Signer.load(Path(key)), site="site-1", agent="agent-1",
                 topic_for=lambda s, d: "t/" + s, quota_bytes=1 << 30, fsync="full",
                 batch_max_items=7, batch_max_age_ms=60_000, commit_interval_ms=1)
    await box.start()
    def create(db):
        db.execute("CREATE TABLE IF NOT EXISTS notes (name TEXT PRIMARY KEY)")
        db.commit()
    await box.state.run(create)
    n = 0
    if mode == "stream":
        while True:
            for _ in range(20):
                box.submit("readings", "d1", json.dumps({"n": n}))
                n += 1
            assert await box.flush()
            print("committed", n - 1, flush=True)
    for _ in range(10):
        box.submit("readings", "d1", json.dumps({"n": n}))
        n += 1
    assert await box.flush()
    print("committed", n - 1, flush=True)
    def mark(db):
        db.execute("INSERT INTO notes (name) VALUES ('mark')")
    await box.state.transact_async(mark, [("audit", "", json.dumps({"note": "mark"}))], tag="mark")
    print("survived", flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


def start_child(tmp_path: Path, mode: str, env_extra: dict[str, str] | None = None):
    script = tmp_path / "outbox_child.py"
    script.write_text(CHILD)
    env = cli_env()
    env.pop("ISOEDGE_FAULT_KILL_AT", None)
    env.update(env_extra or {})
    return subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "crash.db"),
         str(tmp_path / "keys" / "signing.key"), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO, text=True,
    )


async def recovered_items(tmp_path: Path, signer: Signer, registry: KeyRegistry) -> list[dict]:
    """Open the crashed database with a fresh outbox and read back every item, verified."""
    box = make_outbox(tmp_path / "crash.db", signer, batch_max_items=7, batch_max_age_ms=60_000)
    await box.start()
    try:
        assert await box.flush()  # recovered pending items are cut into envelopes
        verified = verify_all(registry, await all_envelopes(box))
    finally:
        await box.close()
    assert_chain(verified)
    return [i for v in verified for i in v.document["items"]]


async def test_a_sigkilled_process_keeps_every_item_whose_commit_completed(
    tmp_path, signer, registry
):
    child = start_child(tmp_path, "stream")
    assert child.stdout is not None
    committed = -1
    try:
        while committed < 200:
            line = await asyncio.to_thread(child.stdout.readline)
            assert line, f"child ended early: {child.stderr.read() if child.stderr else ''}"
            if line.startswith("committed "):  # other lines are the outbox's log
                committed = int(line.split()[1])
        child.send_signal(signal.SIGKILL)  # in the middle of its next batches
        assert await asyncio.to_thread(child.wait, 10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        if child.stderr is not None:
            child.stderr.close()
    numbers = [i["n"] for i in await recovered_items(tmp_path, signer, registry)]
    assert numbers[: committed + 1] == list(range(committed + 1)), "a committed item was lost"
    assert numbers == list(range(len(numbers))), "duplicates or gaps after the crash"


@pytest.mark.parametrize(("point", "kept"), [("before-commit", False), ("after-commit", True)])
async def test_killed_at_a_write_commit_keeps_the_write_and_its_items_together(
    tmp_path, signer, registry, point, kept
):
    child = start_child(tmp_path, "mark", {"ISOEDGE_FAULT_KILL_AT": f"{point}:mark"})
    out, err = await asyncio.to_thread(child.communicate, timeout=60)
    assert child.returncode == -signal.SIGKILL, err
    assert "committed 9" in out
    assert "survived" not in out
    names, notes = on_disk(tmp_path / "crash.db")
    # All of the write (its row and its stream item) or none of it.
    assert (names, notes) == (({"mark"}, ["mark"]) if kept else (set(), []))
    items = await recovered_items(tmp_path, signer, registry)
    assert [i["n"] for i in items if "n" in i] == list(range(10))


async def test_the_chain_head_is_the_newest_envelope_not_a_row_rewritten_per_commit(
    tmp_path, signer, registry
):
    """Cutting envelopes does not rewrite the `chain` row (a page per commit on the card): a
    reader of the file, or a restart after a kill, takes the head from the newest envelope."""
    path = tmp_path / "head.db"
    box = make_outbox(path, signer, batch_max_items=2, batch_max_age_ms=60_000)
    await box.start()
    try:
        for n in range(6):
            box.submit("readings", "d1", item(n))
        assert await box.flush()
        assert box.last_seq == 3
        reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            assert reader.execute("SELECT last_seq FROM chain").fetchone() == (0,)
            assert stored_head(reader) == (3, box.cutter.last_hash)
            assert (await box.stats()).last_seq == 3
        finally:
            reader.close()
        # Deleting the newest envelope saves the head in its row first.
        box.acknowledge([1, 2, 3])
        assert await box.unsent_from() is None
        assert await box.state.run(stored_head) == (3, box.cutter.last_hash)
    finally:
        await box.close()
    second = make_outbox(path, signer, batch_max_items=2, batch_max_age_ms=60_000)
    await second.start()
    try:
        second.submit("readings", "d1", item(7))
        assert await second.flush()
        [envelope] = await all_envelopes(second)
        verified = registry.verify(envelope.body)
        assert verified.document["seq"] == 4
        assert verified.document["prev"] == box.cutter.last_hash
    finally:
        await second.close()
