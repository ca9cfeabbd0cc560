"""Issue 20, MQTT control plane: the status topic at a running ingest (real mosquitto, PostgreSQL).

Findings: any JSON on any `…/status` was stored, for registered agents or not; a forged
`archive.first_seq` made gaps "permanent, lost for good" although the archive held them;
`{"calibrators": ["boom"]}` made /api/fleet answer 500. Now a status is typed, only a registered
agent's is kept, and what the ingest acts on comes only from the agent's signed evidence.
"""

from __future__ import annotations

from helpers import wait_until
from ingestproc import query


def test_unregistered_statuses_are_ignored_and_bad_schemas_never_break_the_fleet_page(ingest_rig):
    ingest_rig.publisher.publish("isoedge/v1/evil/nobody/status", b'{"state": "online"}', retain=True)
    ingest_rig.status({"state": "online", "calibrators": ["boom"]})  # the 500 of before
    ingest_rig.status({"state": "online", "devices": {"dc-1": {"state": "online", "detail": None}},
                "calibrators": {"dc-1": {"release": "released"}}})  # unsigned release claim
    wait_until(lambda: (ingest_rig.stored_status() or {}).get("devices") is not None, timeout=30)
    stored = ingest_rig.stored_status()
    assert stored["evidence"]["verified"] is False
    assert "calibrators" not in stored  # a forged release never reaches the fleet page
    assert query(ingest_rig.db, "SELECT count(*) FROM agent_status WHERE site = 'evil'")[0][0] == 0
    ingest_rig.status({"state": "online", "calibrators": ["boom"]})
    wait_until(lambda: ingest_rig.fleet()[0] != 0, timeout=30)
    code, fleet = ingest_rig.fleet()
    assert code == 200
    assert fleet["calibrators"] == []
    assert ingest_rig.alive()


def test_an_unsigned_archive_claim_never_makes_a_gap_permanent(ingest_rig):
    ingest_rig.envelopes_with_a_hole()
    # Forged, unsigned: "my archive starts at 10^9", which made 4..5 lost for good before.
    ingest_rig.status({"state": "online", "archive": {"first_seq": 1_000_000_000, "last_seq": 12}})
    wait_until(lambda: ingest_rig.gap_states() and ingest_rig.gap_states()[0][2] == "requested", timeout=30)
    wait_until(lambda: (ingest_rig.stored_status() or {}).get("evidence") is not None, timeout=30)
    assert ingest_rig.gap_states() == [(4, 5, "requested")]
    assert "archive" not in ingest_rig.stored_status()
    assert query(ingest_rig.db, "SELECT count(*) FROM central_alerts WHERE kind = 'gap_permanent'"
                 )[0][0] == 0


def test_a_permanent_gap_is_rechecked_when_a_later_signed_statement_shows_it_held(ingest_rig):
    ingest_rig.envelopes_with_a_hole()
    ingest_rig.status({"state": "online"}, signed_archive=8)  # signed: the archive starts after 5
    wait_until(lambda: ingest_rig.gap_states() == [(4, 5, "permanent")], timeout=30)
    # An unsigned status afterwards does not erase the signed evidence ...
    ingest_rig.status({"state": "offline"})
    wait_until(lambda: (ingest_rig.stored_status() or {}).get("state") == "offline", timeout=30)
    assert ingest_rig.stored_status()["archive"]["first_seq"] == 8
    # ... and a later signed one that shows the range held re-opens the gap: asked for again.
    ingest_rig.status({"state": "online"}, signed_archive=1)
    wait_until(lambda: ingest_rig.gap_states() == [(4, 5, "requested")], timeout=30)
    assert ingest_rig.alive()
