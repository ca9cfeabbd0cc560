"""The replay-request gate on its own: merging, one in flight, the queue bound, ranges against
what exists and the archive, and the JWS `typ` (the broker-level cases: tests/security)."""

from __future__ import annotations

import json
import time

from agent.delivery.replay import Accepted, Refused, ReplayGate, ReplaySection, build_request
from agent.delivery.signing import b64url
from agent.delivery.verification import KeyRegistry


def gate(signer, **settings) -> ReplayGate:
    return ReplayGate(ReplaySection(**settings), site="s", agent="a",
                      registry=KeyRegistry([signer.jwk]))


def ask(g: ReplayGate, signer, lo: int, hi: int, **kw) -> Accepted | Refused:
    body = build_request(signer, site="s", agent="a", from_seq=lo, to_seq=hi)
    return g.admit(body, retained=False, archive=kw.get("archive", (1, 1000)),
                   last_seq=kw.get("last_seq", 1000), now=time.time())


def test_overlapping_requests_merge_and_one_range_is_in_flight(signer):
    g = gate(signer)
    assert isinstance(ask(g, signer, 10, 20), Accepted)
    merged = ask(g, signer, 15, 30)
    assert isinstance(merged, Accepted) and merged.merged
    assert g.pending == [[10, 30]]
    assert g.take() == (10, 30) and g.in_flight == (10, 30)
    inside = ask(g, signer, 12, 14)  # already being answered: nothing more to send
    assert isinstance(inside, Accepted) and inside.merged and g.pending == []
    g.done()
    assert g.take() is None and g.in_flight is None


def test_the_queue_is_bounded_and_ranges_are_cut_to_what_exists(signer):
    g = gate(signer, max_pending=2, max_envelopes=5)
    assert ask(g, signer, 1, 1) and ask(g, signer, 10, 10)
    full = ask(g, signer, 20, 20)
    assert isinstance(full, Refused) and full.reason == "queue_full"
    g2 = gate(signer, max_envelopes=5)
    capped = ask(g2, signer, 100, 10**12, archive=(50, 900), last_seq=900)
    assert isinstance(capped, Accepted) and (capped.from_seq, capped.to_seq) == (100, 104)
    later = ask(g2, signer, 901, 950, last_seq=900)  # never produced
    assert isinstance(later, Refused) and later.reason == "out_of_range"
    old = ask(g2, signer, 1, 10, archive=(50, 900), last_seq=900)  # before the archive
    assert isinstance(old, Accepted) and old.unavailable == [[1, 5]]  # cut to 5, none held
    assert g2.pending == [[100, 104]]
    assert g2.counts == {"accepted": 2, "refused_out_of_range": 1}


def test_an_envelope_signature_of_a_trusted_key_is_not_a_replay_request(signer):
    g = gate(signer)
    payload = json.dumps({"v": 1, "site": "s", "agent": "a", "id": "x", "from_seq": 1,
                          "to_seq": 2, "created": "2026-12-04T12:00:00Z"}).encode()
    body = signer.sign_bytes(payload)  # typ isoedge+json: an envelope's signature
    refused = g.admit(body, retained=False, archive=(1, 10), last_seq=10)
    assert isinstance(refused, Refused) and refused.reason == "wrong_type"
    header = b64url(json.dumps({"alg": "Ed25519", "kid": signer.kid}).encode())
    forged = json.loads(build_request(signer, site="s", agent="a", from_seq=1, to_seq=2))
    forged["protected"] = header  # the signature no longer matches
    refused = g.admit(json.dumps(forged).encode(), retained=False, archive=(1, 10), last_seq=10)
    assert isinstance(refused, Refused) and refused.reason == "bad_signature"
