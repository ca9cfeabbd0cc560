"""AlertManager: dedup, update, clear, acknowledge, events, persistence across restart."""

from __future__ import annotations

import sqlite3

import pytest
from statestore import Heard, StateStore

from agent.qc.alerts import AlertError, UnknownAlertError


@pytest.fixture
async def store(tmp_path):
    state = await StateStore(tmp_path).open()
    yield state
    await state.close()


@pytest.fixture
def manager(store):
    return store.alerts


@pytest.fixture
def sink(store):
    return store.heard


def test_raised_once_then_updated_on_severity_change_then_cleared(manager, sink):
    first = manager.raise_alert("dose", "am1", "dose_rate", "warning", "high", 3.0)
    again = manager.raise_alert("dose", "am1", "dose_rate", "warning", "high", 3.1)
    assert again.id == first.id
    assert sink.events() == ["alert.raised"]
    worse = manager.raise_alert("dose", "am1", "dose_rate", "alarm", "very high", 9.0)
    assert worse.id == first.id
    assert sink.events() == ["alert.raised", "alert.updated"]
    _, updated = sink.items[-1]
    assert updated["old"]["severity"] == "warning"
    assert updated["new"]["severity"] == "alarm"
    assert updated["who"] == "isoedge"
    cleared = manager.clear_alert("dose", "am1", "dose_rate", "back to normal", 0.2)
    assert cleared is not None
    assert not cleared.active
    assert cleared.state == "cleared_unacknowledged"
    assert manager.clear_alert("dose", "am1", "dose_rate") is None
    assert sink.events() == ["alert.raised", "alert.updated", "alert.cleared"]
    _, item = sink.items[-1]
    assert item["old"]["state"] == "active"
    assert item["new"]["state"] == "cleared_unacknowledged"
    assert item["why"] == "back to normal"  # a plain text passes as it is
    assert {"id", "t", "event", "alert_id", "rule", "device", "channel"} <= item.keys()


def test_other_keys_are_separate_alerts(manager):
    a = manager.raise_alert("dose", "am1", "dose_rate", "warning", "x")
    b = manager.raise_alert("dose", "am2", "dose_rate", "warning", "x")
    c = manager.raise_alert("dose", "am1", "dose_rate", "warning", "x", subject="rx-1")
    assert len({a.id, b.id, c.id}) == 3


async def test_acknowledge_needs_name_and_reason_and_only_once(manager, sink):
    alert = manager.raise_alert("p", "hc1", "pressure", "alarm", "not negative", -3.0)
    with pytest.raises(AlertError, match="name"):
        await manager.acknowledge(alert.id, "  ", "seen")
    with pytest.raises(AlertError, match="reason"):
        await manager.acknowledge(alert.id, "Dr. Curie", "")
    with pytest.raises(UnknownAlertError, match="no alert with id 'nope'"):
        await manager.acknowledge("nope", "Dr. Curie", "seen")
    acked = await manager.acknowledge(alert.id, "Dr. Curie", "door seal replaced")
    assert acked.acknowledged_by == "Dr. Curie"
    assert acked.state == "active_acknowledged"
    with pytest.raises(AlertError, match=r"already acknowledged by Dr\. Curie"):
        await manager.acknowledge(alert.id, "Someone", "again")
    alert_item = next(
        i for s, i in sink.items if s == "alerts" and i["event"] == "alert.acknowledged"
    )
    assert alert_item["who"] == "Dr. Curie"
    assert alert_item["why"] == "door seal replaced"
    assert alert_item["old"]["acknowledged_by"] is None
    assert alert_item["new"]["acknowledged_by"] == "Dr. Curie"
    audit_item = next(i for s, i in sink.items if s == "audit")
    assert audit_item["event"] == "alert.acknowledged"
    assert audit_item["actor"] == "Dr. Curie"
    assert audit_item["reason"] == "door seal replaced"
    assert audit_item["subject"] == f"alert/{alert.id}"
    assert (await manager.audit.query(action="alert.acknowledged"))[0]["id"] == audit_item["id"]


async def test_open_alerts_until_cleared_and_acknowledged(manager):
    a = manager.raise_alert("r", "d", "c", "warning", "w")
    b = manager.raise_alert("r2", "d", "c", "critical", "crit")
    assert [x.id for x in manager.open_alerts()] == [b.id, a.id]  # worst first
    await manager.acknowledge(a.id, "QA", "known")
    assert a.id in {x.id for x in manager.open_alerts()}  # still active
    manager.clear_alert("r", "d", "c")
    assert a.id not in {x.id for x in manager.open_alerts()}  # closed
    manager.clear_alert("r2", "d", "c")
    assert b.id in {x.id for x in manager.open_alerts()}  # cleared, unacknowledged
    assert (await manager.fetch(a.id)).state == "closed"
    assert len(await manager.all_alerts(limit=10)) == 2


async def test_worse_severity_needs_a_fresh_acknowledgement(manager):
    alert = manager.raise_alert("r", "d", "c", "warning", "w")
    await manager.acknowledge(alert.id, "QA", "watching")
    worse = manager.raise_alert("r", "d", "c", "critical", "c")
    assert not worse.acknowledged
    await manager.acknowledge(alert.id, "QA", "acting")


async def test_state_survives_restart(store):
    first = store.alerts
    alert = first.raise_alert("dose", "am1", "dose_rate", "alarm", "high", 5.0)
    await first.acknowledge(alert.id, "QA", "investigating")
    await store.restart()
    second = store.alerts
    again = second.raise_alert("dose", "am1", "dose_rate", "alarm", "high", 5.0)
    assert again.id == alert.id  # deduplicated across the restart
    assert again.acknowledged_by == "QA"
    assert second.active_alert("dose", "am1", "dose_rate") is not None
    cleared = second.clear_alert("dose", "am1", "dose_rate")
    assert cleared is not None
    assert cleared.state == "closed"
    await store.restart()
    third = store.alerts
    assert third.open_alerts() == []
    assert (await third.fetch(alert.id)).ack_reason == "investigating"
    assert (await store.audit.query(action="alert.acknowledged"))[0]["actor"] == "QA"


async def test_one_active_alert_per_key_is_enforced_by_the_database(store):
    store.alerts.raise_alert("r", "d", "c", "warning", "w")
    await store.close()
    db = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.IntegrityError):
        db.execute(
            "INSERT INTO alerts SELECT 'other', rule, device, channel, subject, severity, message,"
            " value, active, raised_at, updated_at, cleared_at, ack_by, ack_at, ack_reason,"
            " details, params FROM alerts"
        )
    db.close()
    await store.open()


async def test_a_failing_live_view_does_not_lose_the_alert(tmp_path):
    def broken(stream, item):
        raise RuntimeError("console gone")

    store = await StateStore(tmp_path, heard=broken).open()
    try:
        alert = store.alerts.raise_alert("r", "d", "c", "warning", "w")
        await store.settle()
        assert store.alerts.get(alert.id).active
        assert [i["event"] for i in store.stream_items("alerts")] == ["alert.raised"]
    finally:
        await store.close()


async def test_every_change_goes_to_the_alerts_stream_in_the_state_database(store):
    alert = store.alerts.raise_alert("p", "hc1", "pressure", "alarm", "not negative", -3.0)
    await store.alerts.acknowledge(alert.id, "Dr. Curie", "door seal replaced")
    store.alerts.clear_alert("p", "hc1", "pressure", "negative again", -20.0)
    await store.settle()
    assert [i["event"] for i in store.stream_items("alerts")] == [
        "alert.raised", "alert.acknowledged", "alert.cleared"]
    audit = store.stream_items("audit")
    assert [i["event"] for i in audit] == ["alert.acknowledged"]
    assert audit[0]["actor"] == "Dr. Curie"
    db = sqlite3.connect(store.path)
    try:
        row = db.execute("SELECT active, ack_by FROM alerts WHERE id = ?", (alert.id,)).fetchone()
    finally:
        db.close()
    assert row == (0, "Dr. Curie")


async def test_acknowledgement_is_told_only_after_its_commit(tmp_path):
    """The live view and audit listeners hear of an acknowledgement once it is committed: each
    is told while the database (read from outside) already holds it; a refused commit is never
    told."""
    db_path = tmp_path / "outbox.db"
    seen: list[tuple[str, str, str | None]] = []

    class Checking(Heard):
        def __call__(self, stream, item):
            super().__call__(stream, item)
            if item.get("event") == "alert.acknowledged":
                db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
                try:
                    row = db.execute("SELECT ack_by FROM alerts WHERE id = ?",
                                     (item.get("alert_id") or item["subject"][6:],)).fetchone()
                finally:
                    db.close()
                seen.append((stream, item["event"], None if row is None else row[0]))

    state = await StateStore(tmp_path, Checking()).open()
    try:
        alert = state.alerts.raise_alert("p", "hc1", "pressure", "alarm", "not negative", -3.0)
        refused = state.alerts.raise_alert("p", "hc2", "pressure", "alarm", "not negative", -3.0)
        await state.settle()
        # The database refuses one acknowledgement (a real failed commit, nothing mocked).
        await state.database.transact_async(lambda db: db.execute(
            "CREATE TRIGGER no_ack BEFORE UPDATE ON alerts WHEN NEW.ack_by = 'Mallory' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"))
        with pytest.raises(sqlite3.IntegrityError, match="refused"):
            await state.alerts.acknowledge(refused.id, "Mallory", "seen")
        assert seen == []
        assert not state.alerts.get(refused.id).acknowledged  # memory follows the database
        await state.alerts.acknowledge(alert.id, "Dr. Curie", "door seal replaced")
        assert sorted(seen) == [("alerts", "alert.acknowledged", "Dr. Curie"),
                                ("audit", "alert.acknowledged", "Dr. Curie")]
    finally:
        await state.close()
