"""Hostile messages on the broker against a running `isoedge ingest run` (issue 20).

Each test publishes with a plain paho client what any broker client could, and checks what a
user of the central record would notice: the ingest keeps running, the legitimate agent's
stream is complete (seq 1..last, chain intact), and what was refused is on record, bounded.
"""

from __future__ import annotations

import hashlib

import orjson
from helpers import wait_until
from ingest_rig import b64, make_rig, metric, signed
from ingestproc import IngestProcess, query

PREFIX = "isoedge/v1/lab1/edge1"


def _payload(agent, number: int, **changes) -> bytes:
    doc = {"v": 1, "site": agent.site, "agent": agent.agent, "stream": "readings", "seq": number,
           "prev": agent.prev, "created": "2026-12-04T10:00:00.000000Z",
           "items": [{"id": f"x-{number}", "device": "dc-1", "channel": "activity",
                      "t": "2026-12-04T10:00:00.000000Z", "value": 1.0, "unit": "MBq",
                      "quality": "good", "raw": {"value": 1.0, "unit": "MBq"}}]}
    doc.update(changes)
    return orjson.dumps(doc)


def test_poison_messages_are_rejected_acknowledged_and_the_ingest_and_stream_go_on(central_rig):
    agent = central_rig.agent
    header = b64(orjson.dumps({"alg": "Ed25519", "kid": agent.signer.kid,
                               "typ": "isoedge+json"}))
    poison = [
        # the known killer: a registered kid (public) and "payload": null
        orjson.dumps({"protected": header, "payload": None, "signature": "AAAA"}),
        orjson.dumps({"protected": header, "payload": {"seq": 1}, "signature": ["x"]}),
        b"[1, 2, 3]", b"42", b"null", b'"text"', b"\xff\xfe not utf-8",
        orjson.dumps({"protected": b64(b"[]"), "payload": "e30", "signature": "AAAA"}),
        orjson.dumps({"protected": 7, "payload": "e30", "signature": "AAAA"}),
        b"{" * 100_000,  # nesting bomb
        b"x" * (17 * 1024 * 1024),  # beyond inbound.max_envelope_bytes (16 MiB)
        # signed with the registered key, wrong types inside
        signed(agent, _payload(agent, 99, seq="99")),
        signed(agent, _payload(agent, 99, items={"not": "a list"})),
        signed(agent, _payload(agent, 99, items=[{"id": 5}])),
        signed(agent, b"[]"),
        signed(agent, b"not json at all"),
    ]
    central_rig.send_legit(2)
    for body in poison:
        central_rig.publisher.publish(f"{PREFIX}/readings/dc-1", body)
        central_rig.send_legit(1)
    central_rig.publisher.wait_acked(120)
    central_rig.assert_stream_complete()
    wait_until(lambda: central_rig.count("SELECT count(*) FROM rejected") == len(poison), timeout=60)
    text = central_rig.metrics()
    assert metric(text, "isoedge_ingest_internal_errors_total") == 0
    assert metric(text, 'isoedge_ingest_rejected_total{code="malformed"}') >= 10
    assert metric(text, 'isoedge_ingest_rejected_total{code="too_large"}') == 1
    # every poison message was acknowledged: a restarted ingest is not handed them again
    assert central_rig.ingest.terminate() == 0, central_rig.ingest.log()[-3000:]
    central_rig.ingest = IngestProcess(central_rig.config, name="ingest-2").start()
    central_rig.send_legit(2)
    central_rig.publisher.wait_acked()
    central_rig.assert_stream_complete()
    assert central_rig.count("SELECT count(*) FROM rejected") == len(poison)


def test_a_conflicting_envelope_is_kept_as_evidence_with_a_critical_alert(central_rig):
    agent = central_rig.agent
    central_rig.send_legit(2)
    central_rig.publisher.wait_acked()
    wait_until(lambda: central_rig.stored() == 2, timeout=60)
    agent.prev = agent_prev_of_seq(central_rig, 1)
    other = signed(agent, _payload(agent, 2, items=[]))  # seq 2 again, other bytes, signed
    for _ in range(3):  # re-deliveries of the conflict are one piece of evidence
        central_rig.publisher.publish(f"{PREFIX}/readings/dc-1", other)
    central_rig.publisher.publish(*agent.sent[2])  # a plain re-delivery is no conflict
    central_rig.publisher.wait_acked()
    wait_until(lambda: central_rig.count("SELECT count(*) FROM conflicting_envelopes") == 1, timeout=60)
    row = query(central_rig.db, "SELECT seq, body, stored_sha256 <> payload_sha256"
                        " FROM conflicting_envelopes")[0]
    assert (row[0], bytes(row[1]), row[2]) == (2, other, True)
    wait_until(lambda: len(central_rig.alerts("conflicting_envelope")) == 1, timeout=30)
    site, agent_name, key, severity, count, message = central_rig.alerts("conflicting_envelope")[0]
    assert (site, agent_name, key, severity, count) == ("lab1", "edge1", "2", "critical", 1)
    assert "seq 2" in message
    assert central_rig.stored() == 2  # the first stays the data
    assert central_rig.ingest.proc.poll() is None


def agent_prev_of_seq(central_rig, seq: int) -> str:
    return str(query(central_rig.db, "SELECT payload_sha256 FROM envelopes WHERE seq = %s", (seq,))[0][0])


def test_rejected_bodies_are_stored_truncated_with_the_hash_of_the_whole(central_rig):
    junk = [bytes([65 + i]) * (3 * 1024 * 1024) for i in range(5)]
    for body in junk:
        central_rig.publisher.publish(f"{PREFIX}/alerts", body)
    central_rig.send_legit(1)
    central_rig.publisher.wait_acked(120)
    wait_until(lambda: central_rig.count("SELECT count(*) FROM rejected") == 5, timeout=60)
    rows = query(central_rig.db, "SELECT length(body), body_size, body_sha256 FROM rejected ORDER BY id")
    assert [r[0] for r in rows] == [4096] * 5
    assert [r[1] for r in rows] == [3 * 1024 * 1024] * 5
    assert sorted(r[2] for r in rows) == sorted(hashlib.sha256(b).hexdigest() for b in junk)
    assert central_rig.count("SELECT max(pg_column_size(body)) FROM rejected") < 10_000
    central_rig.assert_stream_complete()


def test_invented_sources_open_one_alert_each_up_to_a_bound(tmp_path, mosquitto, postgres):
    central_rig = make_rig(tmp_path, mosquitto, postgres, inbound="unknown_sources_per_hour = 3")
    try:
        central_rig.wait_ready()
        for i in range(30):
            central_rig.publisher.publish(f"isoedge/v1/site{i}/agent{i}/audit", b"{}")
            central_rig.publisher.publish(f"isoedge/v1/site{i}/agent{i}/audit", b"{}")
        central_rig.send_legit(1)
        central_rig.publisher.wait_acked()
        wait_until(lambda: central_rig.count("SELECT count(*) FROM rejected") == 60, timeout=60)
        alerts = central_rig.alerts("unknown_source")
        assert [(a[0], a[1]) for a in alerts] == [
            ("site0", "agent0"), ("site1", "agent1"), ("site2", "agent2"), ("*", "*")]
        assert central_rig.count("SELECT count(*) FROM central_alerts WHERE cleared IS NULL") == 4
        central_rig.assert_stream_complete()
    finally:
        central_rig.publisher.close()
        central_rig.ingest.stop_quietly()


def test_the_protected_header_typ_is_checked(central_rig):
    agent = central_rig.agent
    central_rig.send_legit(1)
    for typ in ("JWT", None):
        header = {"alg": "Ed25519", "kid": agent.signer.kid}
        if typ:
            header["typ"] = typ
        central_rig.publisher.publish(f"{PREFIX}/readings/dc-1",
                              signed(agent, _payload(agent, 2), header))
    central_rig.publisher.wait_acked()
    wait_until(lambda: central_rig.count("SELECT count(*) FROM rejected") == 2, timeout=60)
    reasons = [r for (r,) in query(central_rig.db, "SELECT reason FROM rejected ORDER BY id")]
    assert all(r.startswith("bad protected header") for r in reasons), reasons
    assert central_rig.stored() == 1
    central_rig.send_legit(1)  # the real seq 2
    central_rig.publisher.wait_acked()
    central_rig.assert_stream_complete()


def test_implausible_created_and_seq_are_flagged_or_refused(central_rig):
    agent = central_rig.agent
    central_rig.send_legit(2)
    central_rig.publisher.wait_acked()
    wait_until(lambda: central_rig.stored() == 2, timeout=60)
    # year 9999: stored (it is the agent's signed record), with an alert
    agent.seq += 1
    payload = _payload(agent, agent.seq, created="9999-12-31T23:59:59.000000Z")
    central_rig.publisher.publish(f"{PREFIX}/readings/dc-1", signed(agent, payload))
    agent.prev = b64(hashlib.sha256(payload).digest())  # the chain goes on from it
    central_rig.send_legit(1)
    central_rig.publisher.wait_acked()
    central_rig.assert_stream_complete()
    wait_until(lambda: len(central_rig.alerts("implausible_envelope")) == 1, timeout=30)
    assert central_rig.alerts("implausible_envelope")[0][2] == "created"
    # beyond 2^53 - 1: refused; 10^12 after 4: stored, with a critical alert
    central_rig.publisher.publish(f"{PREFIX}/readings/dc-1", signed(agent, _payload(agent, 2**53)))
    central_rig.publisher.publish(f"{PREFIX}/readings/dc-1", signed(agent, _payload(agent, 10**12)))
    central_rig.publisher.wait_acked()
    wait_until(lambda: len(central_rig.alerts("implausible_envelope")) == 2, timeout=30)
    jump = next(a for a in central_rig.alerts("implausible_envelope") if a[2] == "seq_jump")
    assert jump[3] == "critical" and "10000000000" in jump[5].replace("00 ", "00")
    assert central_rig.count("SELECT count(*) FROM envelopes WHERE seq = %s", (2**53,)) == 0
    assert query(central_rig.db, "SELECT reason FROM rejected")[0][0].startswith("payload seq/fields")
    assert central_rig.ingest.proc.poll() is None
