"""The ingest's parsers in-process, at hypothesis scale (thousands of examples a second): for
any bytes, any JSON, any JWS shell and any validly signed payload, `verify` returns a verified
envelope or raises `Rejected`, never anything else. The end-to-end fuzz tests
(test_ingest_fuzz.py) then show the same against a running process."""

from __future__ import annotations

import json
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ingest_rig import b64, signed
from synth import SynthAgent

from central.config import AgentKeys
from central.envelope import KeyRegistry, Verified, verify
from central.inbound import CODES, Rejected
from central.refusals import AlertLimiter, AlertNote

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20,
)
FIELDS = ["v", "site", "agent", "stream", "seq", "prev", "created", "items"]
ITEM_FIELDS = ["id", "device", "channel", "t", "value", "unit", "quality", "nuclide", "raw",
               "test", "result"]
TIMES = st.sampled_from(["2026-12-04T10:00:00.000000Z", "9999-12-31T23:59:59Z",
                         "0001-01-01T00:00:00+14:00", "2026-02-30T10:00:00Z", "1e400",
                         "2026-12-04T10:00:00", "2026-12-04 10:00:00.123456789+01:00"])


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    agent = SynthAgent("lab1", "edge1", tmp_path_factory.mktemp("keys"))
    registry = KeyRegistry.from_config([AgentKeys(site="lab1", agent="edge1",
                                                  public_keys=[agent.jwk_path])])
    return agent, registry


def _dumps(value) -> bytes:
    return json.dumps(value).encode()


def _outcome(body: bytes, registry: KeyRegistry, stream: str) -> str:
    topic = "isoedge/v1/lab1/edge1/" + ("readings/dc-1" if stream == "readings" else stream)
    try:
        result = verify(body, topic, site="lab1", agent="edge1", stream=stream,
                        registry=registry, received=time.time())
    except Rejected as exc:
        return f"rejected:{exc.code}"
    assert isinstance(result, Verified)
    return "accepted"


@pytest.mark.parametrize("stream", ["readings", "alerts", "audit", "qc"])
def test_any_message_is_accepted_or_rejected_never_an_exception(keyed, stream):
    agent, registry = keyed
    header = b64(orjson.dumps({"alg": "Ed25519", "kid": agent.signer.kid,
                               "typ": "isoedge+json"}))
    base = {"v": 1, "site": "lab1", "agent": "edge1", "stream": stream, "seq": 1, "prev": "",
            "created": "2026-12-04T10:00:00.000000Z"}
    item = {"id": "i1", "device": "dc-1", "channel": "activity",
            "t": "2026-12-04T10:00:00.000000Z", "value": 1.0, "unit": "MBq",
            "quality": "good", "raw": {"value": 1.0}}
    outcomes: set[str] = set()

    @settings(max_examples=400, deadline=None, database=None)
    @given(st.one_of(
        st.binary(max_size=200),
        JSON.map(_dumps),
        st.builds(lambda p, s: _dumps({"protected": header, "payload": p, "signature": s}),
                  JSON, JSON),
        st.builds(lambda h: _dumps({"protected": b64(_dumps(h)), "payload": "e30",
                                    "signature": "AAAA"}),
                  st.dictionaries(st.sampled_from(["alg", "kid", "typ"]), JSON | st.just(
                      agent.signer.kid))),
        st.builds(lambda c, items: signed(agent, _dumps({**base, **c, "items": [
            {**item, **i} for i in items]})),
                  st.dictionaries(st.sampled_from(FIELDS[:-1]), JSON | TIMES, max_size=3),
                  st.lists(st.dictionaries(st.sampled_from(ITEM_FIELDS), JSON | TIMES,
                                           max_size=3), max_size=3)),
    ))
    def check(body: bytes) -> None:
        outcomes.add(_outcome(body, registry, stream))

    check()
    assert "accepted" in outcomes  # the fuzz reached both verdicts
    codes = {o.split(":", 1)[1] for o in outcomes if o.startswith("rejected:")}
    assert codes <= set(CODES)
    assert {"malformed", "items_malformed", "payload_invalid"} <= codes


def test_the_alert_limiter_writes_once_per_interval_with_the_count_and_bounds_new_sources():
    limiter = AlertLimiter(interval_s=60, sources_per_hour=2)
    note = AlertNote("rejected_envelope", "lab1", "edge1", "bad signature", "m", {})
    assert limiter.note(note, now=0.0).count == 1
    assert all(limiter.note(note, now=t) is None for t in (1.0, 2.0, 59.0))
    assert limiter.note(note, now=61.0).count == 4  # this one and the three held back
    sources = [limiter.note(AlertNote("unknown_source", f"s{i}", "a", "", "m", {}),
                            new_source=True, now=100.0 + i) for i in range(5)]
    written = [(n.site, n.agent) for n in sources if n is not None]
    assert written == [("s0", "a"), ("s1", "a"), ("*", "*")]


def test_a_bug_met_by_one_message_costs_that_message_only(keyed, tmp_path):
    """The decoder's per-message catch-all: a failure of ours (here a key look-up that raises,
    standing for any bug) rejects that message with code internal_error, counts it and raises a
    critical alert; the other messages of the same batch are verified as usual."""
    import uuid

    from central.config import BrokerSection, DatabaseSection, IngestConfig
    from central.consumer import Consumer, _Incoming

    agent, registry = keyed
    other = SynthAgent("lab1", "edge1", tmp_path / "other-key")

    class FaultyRegistry(KeyRegistry):
        def get(self, kid):
            if kid == other.signer.kid:
                raise RuntimeError("a bug")
            return super().get(kid)

    faulty = FaultyRegistry([registry.get(agent.signer.kid)])
    config = IngestConfig(broker=BrokerSection(group=f"t-{uuid.uuid4().hex[:8]}"),
                          database=DatabaseSection(url="postgresql://x@127.0.0.1/x"))
    consumer = Consumer(config, faulty)
    try:
        messages = [_Incoming(0, i + 1, 1, topic, body, time.time()) for i, (topic, body) in
                    enumerate([agent.envelope(n_items=2), other.envelope(n_items=2),
                               agent.envelope(n_items=2)])]
        batch, ackable = consumer._classify(messages)
        assert [e.seq for e in batch.envelopes] == [agent.seq - 1, agent.seq]
        assert [(r.code, r.reason) for r in batch.rejections] == [
            ("internal_error", "internal error (RuntimeError)")]
        assert len(ackable) == 3  # the failed one is acknowledged with the rest
        assert consumer.stats.internal_errors == 1
        assert [(a.kind, a.severity) for a in batch.alerts] == [("rejected_envelope", "critical")]
    finally:
        consumer._slot_handle.close()
