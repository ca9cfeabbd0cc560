"""Fuzz of `…/status` at a running ingest (`isoedge ingest run`, real mosquitto and PostgreSQL).

Whatever a broker client publishes as a status (registered agent or not, signed evidence with
odd contents or not), the ingest stays up, the fleet page answers 200, and the agent's envelopes
are still stored afterwards, seq 1..last with the chain intact.
"""

from __future__ import annotations

import json

from helpers import wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingestrig import Rig

from agent.delivery.evidence import sign_evidence

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
KEYS = ["state", "devices", "calibrators", "archive", "unsent_from", "last_seq", "evidence",
        "version", "kid", "t", "replay", "disk"]


def _dumps(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode()  # any int, NaN and Infinity as sent


def documents(rig: Rig) -> st.SearchStrategy[bytes]:
    shaped = st.dictionaries(st.sampled_from(KEYS), JSON, max_size=8).map(_dumps)
    calibrator = st.fixed_dictionaries({"release": st.sampled_from(["released", "on_hold"])
                                        | JSON}, optional={"reason": JSON, "due": JSON})
    evidence = st.builds(
        lambda state, first, cals: _dumps({"state": state, "evidence": sign_evidence(
            rig.agent.signer, site="lab1", agent="edge1", t="2026-12-04T12:00:00.000000Z",
            archive={"first_seq": first, "last_seq": first}, unsent_from=None, last_seq=first,
            calibrators=cals)}),
        st.sampled_from(["online", "offline", "gone"]), st.integers(min_value=-5, max_value=2**70),
        st.dictionaries(st.text(max_size=8), calibrator | JSON, max_size=3))
    return st.binary(max_size=3000) | JSON.map(_dumps) | shaped | evidence


def test_fuzzed_statuses_never_stop_the_ingest_or_the_fleet_page(ingest_rig):
    rig = ingest_rig
    wait_until(lambda: rig.fleet()[0] != 0, timeout=30)
    topics = st.sampled_from(["isoedge/v1/lab1/edge1/status", "isoedge/v1/lab9/x/status"])

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(topic=topics, body=documents(rig))
    def publish_one(topic: str, body: bytes) -> None:
        rig.publisher.publish(topic, body, retain=True)

    publish_one()
    rig.publisher.wait_acked()
    for _ in range(20):
        rig.publisher.publish(*rig.agent.envelope(n_items=2))
    rig.publisher.wait_acked()
    wait_until(lambda: rig.stored_range() == (1, 20, 20), timeout=60)
    code, fleet = rig.fleet()
    assert code == 200
    (entry,) = fleet["agents"]
    assert entry["chain"] == "ok" and entry["gaps"] == []
    assert rig.alive(), rig.ingest.log()
