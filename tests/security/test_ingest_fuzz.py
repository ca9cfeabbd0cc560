"""Fuzzing each envelope topic of a running `isoedge ingest run` (hypothesis, real broker and
database): every message is rejected or accepted, never an exception; the process stays up;
afterwards a legitimate agent's stream interleaved with the fuzz is complete (seq 1..last
stored, chain intact).

Fuzzed bodies: raw bytes, any JSON, JWS objects with any members, and payloads validly signed
with the agent's registered key (so they reach the payload parser) with any field replaced by
any JSON value. Signed payloads get seq values far above the legitimate stream's (10^9 + n)
when they are plausible integers, so an accepted fuzz envelope never takes a legitimate seq.
"""

from __future__ import annotations

import itertools
import json

import pytest
from helpers import wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_rig import b64, metric, signed

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)
SPECIAL = st.sampled_from([
    b'{"protected": "e30", "payload": null, "signature": null}', b'"\\ud800"', b"1e400",
    b'{"seq": 1e400}', b"[" * 5000, b'{"a":' * 3000, b"\x00", b"",
])
ENVELOPE_FIELDS = ["v", "site", "agent", "stream", "seq", "prev", "created", "items"]
ITEM_FIELDS = ["id", "device", "channel", "t", "value", "unit", "quality", "nuclide", "raw",
               "test", "result"]
TIMES = st.sampled_from(["2026-12-04T10:00:00.000000Z", "9999-12-31T23:59:59Z", "0001-01-01T00:00+14:00",
                         "2026-02-30T10:00:00Z", "yesterday", "2026-12-04T10:00:00.1234567891Z"])


def _item(stream: str, n: int) -> dict:
    if stream == "readings":
        return {"id": f"fz-{n}", "device": "dc-1", "channel": "activity",
                "t": "2026-12-04T10:00:00.000000Z", "value": 1.0, "unit": "MBq",
                "quality": "good", "raw": {"value": 1.0}}
    return {"id": f"fz-{n}", "t": "2026-12-04T10:00:00.000000Z", "device": "dc-1",
            "test": "constancy", "result": "pass"}


@pytest.mark.slow
@pytest.mark.parametrize("stream", ["readings", "alerts", "audit", "qc"])
def test_fuzzed_messages_on_each_topic_never_stop_the_ingest_or_break_the_stream(central_rig, stream):
    agent = central_rig.agent
    topic = f"isoedge/v1/lab1/edge1/{'readings/dc-1' if stream == 'readings' else stream}"
    counter = itertools.count(1)
    published = [0]

    def legit() -> None:
        central_rig.publisher.publish(*agent.envelope(stream=stream, n_items=2))

    registered = b64(_dumps({"alg": "Ed25519", "kid": agent.signer.kid, "typ": "isoedge+json"}))
    bodies = st.one_of(
        # a registered (public) kid with any payload and signature members: `null` killed it
        st.builds(lambda payload, signature: _dumps({
            "protected": registered, "payload": payload, "signature": signature,
        }), JSON, JSON),
        st.binary(max_size=300),
        JSON.map(_dumps),
        SPECIAL,
        st.dictionaries(st.sampled_from(["protected", "payload", "signature", "header"]), JSON,
                        max_size=4).map(_dumps),
        st.builds(
            lambda header: _dumps({"protected": b64(_dumps(header)), "payload": "e30",
                                   "signature": "AAAA"}),
            st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit"]), JSON, max_size=4)),
        st.tuples(
            st.dictionaries(st.sampled_from(ENVELOPE_FIELDS), JSON | TIMES, max_size=3),
            st.lists(st.dictionaries(st.sampled_from(ITEM_FIELDS), JSON | TIMES, max_size=3),
                     max_size=3),
            st.booleans(),
        ).map(lambda parts: _signed_fuzz(agent, stream, next(counter), parts)),
    )

    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=bodies)
    def publish_one(body: bytes) -> None:
        central_rig.publisher.publish(topic, body)
        published[0] += 1
        if published[0] % 10 == 0:
            legit()

    legit()
    publish_one()
    legit()
    central_rig.publisher.wait_acked(120)
    central_rig.assert_stream_complete()
    # every fuzzed message was received and acknowledged (so rejected or accepted), none hit
    # an internal error, and the process still runs
    wait_until(lambda: metric(central_rig.metrics(), "isoedge_ingest_messages_received_total")
               >= published[0] + agent.seq, timeout=60)
    wait_until(lambda: _all_acked(central_rig.metrics()), timeout=60)
    assert metric(central_rig.metrics(), "isoedge_ingest_internal_errors_total") == 0
    assert central_rig.count("SELECT count(*) FROM rejected") >= published[0] // 2
    assert central_rig.ingest.proc.poll() is None


def _all_acked(text: str) -> bool:
    received = metric(text, "isoedge_ingest_messages_received_total")
    return metric(text, "isoedge_ingest_messages_acked_total") == received


def _dumps(value) -> bytes:
    return json.dumps(value).encode()  # integers beyond 64 bits too


def _signed_fuzz(agent, stream: str, n: int, parts: tuple[dict, list[dict], bool]) -> bytes:
    changes, item_changes, keep_items = parts
    doc = {"v": 1, "site": agent.site, "agent": agent.agent, "stream": stream,
           "seq": 10**9 + n, "prev": "", "created": "2026-12-04T10:00:00.000000Z",
           "items": [_item(stream, n)]}
    doc.update(changes)
    if not keep_items or "items" not in changes:
        doc["items"] = [{**_item(stream, n * 10 + i), **c} for i, c in enumerate(item_changes)]
    seq = doc.get("seq")
    if isinstance(seq, int) and not isinstance(seq, bool) and seq <= 10**9:
        doc["seq"] = 10**9 + n  # never a legitimate seq
    return signed(agent, _dumps(doc))
