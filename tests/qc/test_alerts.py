"""AlertManager: dedup, update, clear, acknowledge, events, persistence across restart."""

from __future__ import annotations

import sqlite3

import pytest

from agent.qc.alerts import AlertError, AlertManager, UnknownAlertError
from agent.qc.audit import AuditLog


class Sink:
    def __init__(self):
        self.items: list[tuple[str, dict]] = []

    def __call__(self, stream, item):
        self.items.append((stream, item))

    def events(self, stream="alerts"):
        return [item["event"] for s, item in self.items if s == stream]


@pytest.fixture
def sink():
    return Sink()


@pytest.fixture
def manager(tmp_path, sink):
    audit = AuditLog(tmp_path / "audit.db", sink)
    alerts = AlertManager(tmp_path / "alerts.db", sink, audit=audit)
    yield alerts
    alerts.close()
    audit.close()


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
    assert item["why"] == "back to normal"
    assert {"id", "t", "event", "alert_id", "rule", "device", "channel"} <= item.keys()


def test_other_keys_are_separate_alerts(manager):
    a = manager.raise_alert("dose", "am1", "dose_rate", "warning", "x")
    b = manager.raise_alert("dose", "am2", "dose_rate", "warning", "x")
    c = manager.raise_alert("dose", "am1", "dose_rate", "warning", "x", subject="rx-1")
    assert len({a.id, b.id, c.id}) == 3


def test_acknowledge_needs_name_and_reason_and_only_once(manager, sink):
    alert = manager.raise_alert("p", "hc1", "pressure", "alarm", "not negative", -3.0)
    with pytest.raises(AlertError, match="name"):
        manager.acknowledge(alert.id, "  ", "seen")
    with pytest.raises(AlertError, match="reason"):
        manager.acknowledge(alert.id, "Dr. Curie", "")
    with pytest.raises(UnknownAlertError, match="no alert with id 'nope'"):
        manager.acknowledge("nope", "Dr. Curie", "seen")
    acked = manager.acknowledge(alert.id, "Dr. Curie", "door seal replaced")
    assert acked.acknowledged_by == "Dr. Curie"
    assert acked.state == "active_acknowledged"
    with pytest.raises(AlertError, match=r"already acknowledged by Dr\. Curie"):
        manager.acknowledge(alert.id, "Someone", "again")
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
    assert manager.audit.query(action="alert.acknowledged")[0]["id"] == audit_item["id"]


def test_open_alerts_until_cleared_and_acknowledged(manager):
    a = manager.raise_alert("r", "d", "c", "warning", "w")
    b = manager.raise_alert("r2", "d", "c", "critical", "crit")
    assert [x.id for x in manager.open_alerts()] == [b.id, a.id]  # worst first
    manager.acknowledge(a.id, "QA", "known")
    assert a.id in {x.id for x in manager.open_alerts()}  # still active
    manager.clear_alert("r", "d", "c")
    assert a.id not in {x.id for x in manager.open_alerts()}  # closed
    manager.clear_alert("r2", "d", "c")
    assert b.id in {x.id for x in manager.open_alerts()}  # cleared, unacknowledged
    assert manager.get(a.id).state == "closed"
    assert len(manager.all_alerts(limit=10)) == 2


def test_worse_severity_needs_a_fresh_acknowledgement(manager):
    alert = manager.raise_alert("r", "d", "c", "warning", "w")
    manager.acknowledge(alert.id, "QA", "watching")
    worse = manager.raise_alert("r", "d", "c", "critical", "c")
    assert not worse.acknowledged
    manager.acknowledge(alert.id, "QA", "acting")


def test_state_survives_restart(tmp_path, sink):
    path = tmp_path / "alerts.db"
    first = AlertManager(path, sink)
    alert = first.raise_alert("dose", "am1", "dose_rate", "alarm", "high", 5.0)
    first.acknowledge(alert.id, "QA", "investigating")
    first.close()
    second = AlertManager(path, sink)
    again = second.raise_alert("dose", "am1", "dose_rate", "alarm", "high", 5.0)
    assert again.id == alert.id  # deduplicated across the restart
    assert again.acknowledged_by == "QA"
    assert second.active_alert("dose", "am1", "dose_rate") is not None
    cleared = second.clear_alert("dose", "am1", "dose_rate")
    assert cleared is not None
    assert cleared.state == "closed"
    second.close()
    third = AlertManager(path, sink)
    assert third.open_alerts() == []
    assert third.get(alert.id).ack_reason == "investigating"
    # without an AuditLog passed in, acknowledgements went to the alert database's own trail
    assert third.audit.query(action="alert.acknowledged")[0]["actor"] == "QA"
    third.close()


def test_one_active_alert_per_key_is_enforced_by_the_database(tmp_path, sink):
    path = tmp_path / "alerts.db"
    manager = AlertManager(path, sink)
    manager.raise_alert("r", "d", "c", "warning", "w")
    manager.close()
    db = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError):
        db.execute(
            "INSERT INTO alerts SELECT 'other', rule, device, channel, subject, severity, message,"
            " value, active, raised_at, updated_at, cleared_at, ack_by, ack_at, ack_reason,"
            " details FROM alerts"
        )
    db.close()


def test_emit_failure_does_not_lose_the_alert(tmp_path):
    def broken(stream, item):
        raise RuntimeError("outbox down")

    manager = AlertManager(tmp_path / "alerts.db", broken)
    alert = manager.raise_alert("r", "d", "c", "warning", "w")
    assert manager.get(alert.id).active
    manager.close()
