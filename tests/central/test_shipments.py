"""Shipments reconciled across sites (issue 24): signed shipment records of a sending site and
signed receipts of the receiving sites, on the `qc` stream through mosquitto and the real
ingest into PostgreSQL, matched centrally with the expected activity decay-corrected by the
ingest itself; out of tolerance, misrouted and unmatched shipments are central alerts and
every shipment is a line of the fleet API."""

from __future__ import annotations

import base64
import hashlib
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from helpers import wait_until
from ingestproc import IngestProcess, query, write_ingest_config
from synth import Publisher, SynthAgent
from test_ingest_store import wait_ready

from agent.physics.nuclides import NUCLIDES
from central.config import load_config
from central.envelope import KeyRegistry
from central.fleet import FleetData

F18 = NUCLIDES["F-18"].half_life_s


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def signed(record: dict[str, Any], meaning: str, t: datetime) -> dict[str, Any]:
    """A record with its signature line (SHAPES: record_sha256 of the canonical JSON)."""
    canonical = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    digest = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    return {**record, "signatures": [{"name": "Q. Person", "meaning": meaning, "t": rfc3339(t),
                                      "record_sha256": digest}]}


def shipment(sender: SynthAgent, shipment_id: str, destination: str, *, activity: float,
             reference: datetime, t: datetime) -> dict[str, Any]:
    return signed({
        "kind": "shipment", "id": uuid.uuid4().hex, "t": rfc3339(t), "site": sender.site,
        "shipment_id": shipment_id, "batch_id": "B-1", "product": "[18F]FDG",
        "nuclide": "F-18", "activity_mbq": activity, "reference_time": rfc3339(reference),
        "volume_ml": 10.0, "destination_site": destination,
    }, "approved", t)


def receipt(receiver: SynthAgent, shipment_id: str, origin: str, *, measured: float,
            measured_at: datetime, claimed_expected: float) -> dict[str, Any]:
    return signed({
        "kind": "receipt", "id": uuid.uuid4().hex, "t": rfc3339(measured_at),
        "site": receiver.site, "shipment_id": shipment_id, "origin_site": origin,
        "batch_id": "B-1", "nuclide": "F-18", "device": "dc-1", "measured_mbq": measured,
        "measured_at": rfc3339(measured_at), "readings": [],
        # The receiving agent's own figures: the ingest must not trust them.
        "expected_mbq": claimed_expected, "difference_pct": 0.0, "tolerance_pct": 50.0,
        "within_tolerance": True,
    }, "performed", measured_at)


def expected(activity: float, reference: datetime, at: datetime) -> float:
    return activity * math.exp(-math.log(2) * (at - reference).total_seconds() / F18)


@pytest.fixture
def sites(tmp_path, mosquitto, postgres):
    sender = SynthAgent("cyclotron", "edge1", tmp_path / "keys-c")
    hospital = SynthAgent("hospital", "edge2", tmp_path / "keys-h")
    clinic = SynthAgent("clinic", "edge3", tmp_path / "keys-k")
    agents = [sender, hospital, clinic]
    config = write_ingest_config(
        tmp_path / "ingest.toml", mosquitto.url, postgres.url,
        [(a.site, a.agent, [a.jwk_path]) for a in agents],
        extra="[repair]\ncheck_interval_s = 0.5\ngrace_s = 600\n"
              "[shipments]\ntolerance_pct = 5\ngrace_s = 3\n",
    )
    publisher = Publisher(mosquitto.port)
    ingest = IngestProcess(config).start()
    yield sender, hospital, clinic, config, publisher, postgres
    publisher.close()
    ingest.stop_quietly()


def states(db_url: str) -> dict[str, tuple[Any, ...]]:
    return {r[0]: r[1:] for r in query(
        db_url, "SELECT shipment_id, state, expected_mbq, difference_pct FROM shipments")}


def test_shipments_are_matched_to_receipts_decay_corrected_and_alerted(sites):
    sender, hospital, clinic, config, publisher, postgres = sites
    wait_ready(publisher, sender, postgres.url)
    now = datetime.now(UTC)
    reference = now - timedelta(hours=3)
    shipped = now - timedelta(hours=2)
    measured_at = now - timedelta(minutes=30)  # 150 min after the reference: ~39 % left
    good = expected(5000.0, reference, measured_at)
    # A receipt published before its shipment: matched all the same.
    publisher.publish(*hospital.envelope(stream="qc", items=[
        receipt(hospital, "SHP-1", "cyclotron", measured=good * 1.02, measured_at=measured_at,
                claimed_expected=5000.0)]))
    publisher.publish(*sender.envelope(stream="qc", items=[
        shipment(sender, "SHP-1", "hospital", activity=5000.0, reference=reference, t=shipped),
        shipment(sender, "SHP-2", "hospital", activity=5000.0, reference=reference, t=shipped),
        shipment(sender, "SHP-3", "clinic", activity=5000.0, reference=reference, t=shipped),
        shipment(sender, "SHP-4", "clinic", activity=800.0, reference=reference, t=now),  # no receipt yet
    ]))
    publisher.publish(*hospital.envelope(stream="qc", items=[
        # Out of tolerance although the receipt claims an expected value that matches.
        receipt(hospital, "SHP-2", "cyclotron", measured=good * 0.80, measured_at=measured_at,
                claimed_expected=good * 0.80),
        # A shipment for the clinic received at the hospital.
        receipt(hospital, "SHP-3", "cyclotron", measured=good, measured_at=measured_at,
                claimed_expected=good),
    ]))
    publisher.wait_acked()
    wait_until(lambda: states(postgres.url).get("SHP-4", ("awaiting",))[0] == "unmatched"
               and len(states(postgres.url)) == 4, timeout=60, interval=0.5)
    found = states(postgres.url)
    assert found["SHP-1"][0] == "within"
    assert found["SHP-1"][1] == pytest.approx(good, rel=1e-6)
    assert found["SHP-1"][2] == pytest.approx(2.0, abs=1e-3)
    assert found["SHP-2"][0] == "out_of_tolerance"
    assert found["SHP-2"][2] == pytest.approx(-20.0, abs=1e-3)
    assert found["SHP-3"][0] == "misrouted"
    assert found["SHP-4"][0] == "unmatched"
    alerts = {r[0]: r[1:] for r in query(
        postgres.url, "SELECT key, site, agent, severity, detail->>'state' FROM central_alerts"
                      " WHERE kind = 'shipment' AND cleared IS NULL")}
    assert alerts == {
        "SHP-2": ("cyclotron", "edge1", "critical", "out_of_tolerance"),
        "SHP-3": ("cyclotron", "edge1", "critical", "misrouted"),
        "SHP-4": ("cyclotron", "edge1", "warning", "unmatched"),
    }
    # The late receipt of SHP-4 settles it and clears its alert.
    late = datetime.now(UTC)
    publisher.publish(*clinic.envelope(stream="qc", items=[
        receipt(clinic, "SHP-4", "cyclotron", measured=expected(800.0, reference, late),
                measured_at=late, claimed_expected=1.0)]))
    publisher.wait_acked()
    wait_until(lambda: states(postgres.url)["SHP-4"][0] == "within", timeout=60, interval=0.5)
    assert query(postgres.url, "SELECT count(*) FROM central_alerts WHERE kind = 'shipment'"
                               " AND key = 'SHP-4' AND cleared IS NULL") == [(0,)]
    # The fleet API lists every shipment, the ones needing attention first.
    loaded = load_config(config)
    page = FleetData(loaded, KeyRegistry.from_config(loaded.agents)).snapshot()
    listed = [(s["shipment_id"], s["state"]) for s in page["shipments"]]
    assert sorted(listed[:2]) == [("SHP-2", "out_of_tolerance"), ("SHP-3", "misrouted")]
    assert sorted(listed[2:]) == [("SHP-1", "within"), ("SHP-4", "within")]


def test_a_receipt_without_a_shipment_is_alerted_after_the_grace(sites):
    sender, hospital, _clinic, _config, publisher, postgres = sites
    wait_ready(publisher, sender, postgres.url)
    now = datetime.now(UTC)
    publisher.publish(*hospital.envelope(stream="qc", items=[
        receipt(hospital, "SHP-9", "cyclotron", measured=100.0, measured_at=now,
                claimed_expected=100.0)]))
    publisher.wait_acked()
    wait_until(lambda: states(postgres.url).get("SHP-9", ("",))[0] == "no_shipment",
               timeout=60, interval=0.5)
    assert query(postgres.url, "SELECT site, agent, detail->>'state' FROM central_alerts"
                               " WHERE kind = 'shipment' AND key = 'SHP-9'") == [
        ("cyclotron", "edge2", "no_shipment")]
