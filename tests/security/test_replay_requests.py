"""Issue 20, MQTT control plane: replay requests at a running agent (`isoedge run`, real mosquitto).

Findings: a number the old parser turned into an OverflowError (1e400) or an SQLite overflow
(10^23) stopped the agent for good, retained it crash-looped; anyone on the broker could make
an agent replay its whole archive. Now a request is a signed JWS of the ingest's key, parsed by
a typed model, bounded, budgeted, and every refusal is counted in the agent's status.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agentrig import signed, wait_until

HOSTILE = [
    b'{"from_seq": 1e400, "to_seq": 5}',                 # OverflowError in int() before
    b'{"from_seq": 1, "to_seq": 100000000000000000000000}',  # SQLite overflow before
    b"null", b'"from_seq"', b"[1, 2]", b"\xff\xfe", b"",
    b'{"protected": "eyJraWQiOiJ4In0", "payload": null, "signature": ""}',
    b"{" * 10_000,  # over the 4096 bytes of a request
]
# Larger than the agent accepts at all (MQTT 5 Maximum Packet Size, 16 KiB): the broker drops
# them for the agent; before, they reached its parser whole.
OVERSIZED = [b"{" * 100_000, b"x" * (1 << 20)]


def test_hostile_replay_requests_are_refused_and_the_agent_keeps_publishing(rig):
    r = rig()
    # Retained before the agent is up: the old agent crash-looped on it at every start.
    r.send(b'{"from_seq": 1e400, "to_seq": 5}', retain=True)
    r.start()
    for body in [*OVERSIZED, *HOSTILE]:
        r.send(body)
    wait_until(lambda: sum(r.counts().values()) >= len(HOSTILE) + 1, timeout=30)
    counts = r.counts()
    assert counts.get("refused_retained") == 1
    assert sum(v for k, v in counts.items() if k.startswith("refused_")) == len(HOSTILE) + 1
    assert "accepted" not in counts
    assert r.alive(), r.agent.log()
    before = r.max_seq()
    wait_until(lambda: r.max_seq() > before + 20, timeout=30)  # still publishing
    seqs = sorted(set(r.seqs()))
    assert seqs == list(range(1, seqs[-1] + 1))  # the stream complete from seq 1
    assert r.status()["replay_requests"]["last_refused"]["reason"] in {"too_large", "malformed"}


def test_only_fresh_requests_signed_by_a_trusted_ingest_key_are_answered(rig):
    r = rig().start()
    now = datetime.now(UTC)
    refused = {
        "malformed": b'{"from_seq": 1, "to_seq": 5}',  # the old, unsigned form: answered before
        "untrusted": signed(r.stranger, 1, 5),
        "foreign": signed(r.ingest, 1, 5, agent="edge9"),
        "stale": signed(r.ingest, 1, 5, created=now - timedelta(hours=1)),
    }
    for body in refused.values():
        r.send(body)
    wait_until(lambda: all(r.counts().get(f"refused_{k}") == 1 for k in refused), timeout=30)
    assert r.seqs().count(1) == 1  # nothing re-published

    good = signed(r.ingest, 1, 5, request_id="req-1")
    r.send(good)
    wait_until(lambda: r.seqs().count(5) == 2, timeout=30)
    assert [r.seqs().count(s) for s in range(1, 6)] == [2] * 5
    r.send(good)  # the same signed request again: a replay of the request, refused
    wait_until(lambda: r.counts().get("refused_duplicate") == 1, timeout=30)
    assert r.counts().get("accepted") == 1
    assert r.alive()


def test_ranges_are_capped_and_budgeted(rig):
    r = rig("max_envelopes = 4\nrequests_per_min = 2\n").start()
    r.send(signed(r.ingest, 1, 100_000_000))  # the whole archive, before
    wait_until(lambda: r.seqs().count(4) == 2, timeout=30)
    r.send(signed(r.ingest, 10, 11))
    r.send(signed(r.ingest, 15, 16))  # third request within the minute: over budget
    wait_until(lambda: r.counts().get("refused_budget") == 1, timeout=30)
    wait_until(lambda: r.seqs().count(11) == 2, timeout=30)
    seqs = r.seqs()
    assert seqs.count(5) == 1  # capped at 4 envelopes
    assert seqs.count(15) == 1  # refused: not re-published
    assert r.status()["replay"]["sent"] in {2, 4}
    assert r.alive()
