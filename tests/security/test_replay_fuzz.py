"""Fuzz of `…/replay/request` at a running agent (`isoedge run`, real mosquitto, hypothesis).

Whatever arrives, each message is either accepted or refused and counted exactly once in the
agent's status; nothing reaches the agent's loop as an exception, the process stays up and goes
on publishing its stream.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

from agentrig import AGENT, SITE, signed, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
SEQ = (st.integers() | st.floats() | st.text(max_size=8) | st.none() | st.booleans()
       | st.integers(min_value=10**18, max_value=10**30))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _dumps(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def jws_shaped(draw: st.DrawFn) -> bytes:
    header = draw(st.fixed_dictionaries({}, optional={
        "alg": st.sampled_from(["Ed25519", "EdDSA", "none", "HS256"]) | st.text(max_size=8),
        "kid": st.text(max_size=50) | JSON,
        "typ": st.sampled_from(["isoedge-replay+json", "isoedge+json"]) | JSON,
    }))
    payload = draw(st.fixed_dictionaries({}, optional={
        "v": JSON, "site": st.just(SITE) | JSON, "agent": st.just(AGENT) | JSON,
        "id": st.text(max_size=70), "from_seq": SEQ, "to_seq": SEQ, "created": JSON,
    }))
    return _dumps({
        "protected": draw(st.just(_b64(_dumps(header))) | JSON),
        "payload": draw(st.just(_b64(_dumps(payload))) | JSON),
        "signature": draw(st.text(alphabet="ABCDEFabcdef0123456789-_", max_size=90) | JSON),
    })


def requests(rig) -> st.SearchStrategy[bytes]:
    plain = st.fixed_dictionaries({"from_seq": SEQ, "to_seq": SEQ}).map(_dumps)
    trusted = st.builds(
        lambda lo, n, age, who: signed(rig.ingest if who else rig.stranger, lo, lo + n,
                                       created=datetime.now(UTC) - timedelta(seconds=age)),
        st.integers(min_value=1, max_value=10**12), st.integers(min_value=0, max_value=10**6),
        st.integers(min_value=-600, max_value=600), st.booleans())
    return (st.binary(max_size=6000) | JSON.map(_dumps) | plain | jws_shaped() | trusted)


def test_fuzzed_replay_requests_are_accepted_or_refused_never_raised(rig):
    r = rig().start()
    sent: list[bytes] = []

    @settings(max_examples=250, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=requests(r))
    def publish_one(body: bytes) -> None:
        r.send(body)
        sent.append(body)

    publish_one()
    wait_until(lambda: sum(r.counts().values()) == len(sent), timeout=60)
    assert r.alive(), r.agent.log()
    assert "Traceback" not in r.agent.log()
    before = r.max_seq()
    wait_until(lambda: r.max_seq() > before + 10, timeout=30)  # still publishing its stream
