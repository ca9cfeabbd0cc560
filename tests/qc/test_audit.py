"""AuditLog: append-only, stored and emitted, queried, exported as CSV."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from statestore import StateStore

from agent.qc.audit import AuditLog


@pytest.fixture
async def store(tmp_path):
    state = await StateStore(tmp_path).open()
    yield state
    await state.close()


@pytest.fixture
def emitted(store):
    return store.heard.items


@pytest.fixture
def audit(store):
    return store.audit


async def test_record_is_stored_and_emitted(audit, emitted):
    item = audit.record(
        "config.loaded", "isoedge", "/etc/isoedge/isoedge.toml", new={"devices": 3}, kid="abc"
    )
    assert emitted == [("audit", item)]
    assert item["event"] == "config.loaded"
    assert item["actor"] == "isoedge"
    assert item["new"] == {"devices": 3}
    assert item["kid"] == "abc"
    assert await audit.query() == [item]


async def test_query_filters(audit):
    audit.record("alert.acknowledged", "alice", "alert/1", reason="r1")
    audit.record("alert.acknowledged", "bob", "alert/2", reason="r2")
    audit.record("key.rotated", "isoedge", "signing", old="kid1", new="kid2")
    assert [r["subject"] for r in await audit.query(actor="alice")] == ["alert/1"]
    assert len(await audit.query(action="alert.acknowledged")) == 2
    assert (await audit.query(subject="signing"))[0]["new"] == "kid2"
    assert len(await audit.query(limit=2)) == 2
    future = datetime.now(UTC) + timedelta(hours=1)
    assert await audit.query(since=future) == []
    assert len(await audit.query(until=future)) == 3
    assert len(await audit.query(since="2000-01-01T00:00:00.000000Z")) == 3


async def test_records_cannot_be_changed_or_deleted(store, audit):
    audit.record("clock.jump", "isoedge", "clock", old="t1", new="t2")
    await store.settle()
    db = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit SET actor = 'mallory'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM audit")
    db.close()


async def test_hash_chain_detects_tampering(store, audit):
    for n in range(3):
        audit.record("x", "isoedge", f"s{n}")
    assert await audit.verify_chain() is None
    db = sqlite3.connect(store.path)
    db.execute("DROP TRIGGER audit_no_update")  # someone with file access, bypassing the class
    db.execute("UPDATE audit SET item = replace(item, 's1', 'sX') WHERE seq = 2")
    db.commit()
    db.close()
    assert await audit.verify_chain() == 2


async def test_persists_and_chain_continues_after_reopen(store):
    store.audit.record("a", "isoedge", "s")
    await store.restart()
    store.audit.record("b", "isoedge", "s")
    assert [r["event"] for r in await store.audit.query()] == ["a", "b"]
    assert await store.audit.verify_chain() is None


async def test_a_record_goes_to_the_audit_stream_in_the_same_database(store):
    item = await store.audit.record_durably("config.loaded", "isoedge", "cfg")
    assert [i["id"] for i in store.stream_items("audit")] == [item["id"]]


def test_reserved_detail_keys_and_missing_actor_are_refused(audit):
    with pytest.raises(ValueError, match="clash"):
        audit.record("a", "isoedge", "s", id="mine")
    with pytest.raises(ValueError, match="actor"):
        audit.record("a", "", "s")


async def test_csv_export(audit):
    audit.record("alert.acknowledged", "Dr. Curie", "alert/1", old={"state": "active"},
                 new={"state": "active_acknowledged"}, reason="=HYPERLINK(evil)",
                 rule="dose")  # fmt: skip
    audit.record("config.loaded", "isoedge", "cfg", new=-5)
    out = io.StringIO()
    assert AuditLog.export_csv(await audit.query(), out) == 2
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert rows[0]["actor"] == "Dr. Curie"
    assert json.loads(rows[0]["old"]) == {"state": "active"}
    assert rows[0]["reason"] == "'=HYPERLINK(evil)"  # formula neutralised
    assert json.loads(rows[0]["details"]) == {"rule": "dose"}
    assert rows[1]["new"] == "-5"  # a number stays a number
