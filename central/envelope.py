"""Envelope verification at the ingest (docs/contract.md §3), with the agent's one verifier.

The key registry, the JWS checks, the signature and the size limits are those of
agent/delivery/verification.py (what `isoedge verify` uses); the topic grammar is
agent/delivery/topics.py's (what the agent builds its topics with). Here only what the ingest
adds: the key must be registered for the agent the topic names, the payload is parsed by the
typed parser of its stream (central/inbound.py) and must name the same agent.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.delivery.topics import STREAMS, TopicRef, parse_topic
from agent.delivery.verification import (
    ALGORITHMS,
    RegisteredKey,
    RegistryError,
)
from agent.delivery.verification import (
    KeyRegistry as SharedRegistry,
)
from central.config import AgentKeys
from central.inbound import (
    DEFAULT_LIMITS,
    Limits,
    Rejected,
    created_flag,
    parse_payload,
)

__all__ = [
    "ALGORITHMS", "STREAMS", "KeyRegistry", "RegisteredKey", "RegistryError", "Rejected",
    "TopicRef", "Verified", "b64url_sha256", "parse_topic", "verify",
]


class KeyRegistry(SharedRegistry):
    """The shared registry, filled from the ingest configuration's `[[agents]]`."""

    @classmethod
    def from_config(cls, agents: list[AgentKeys], source: str = "config") -> KeyRegistry:
        """Load every JWK file; `RegistryError` names `agents[i].public_keys[j]` and the file."""
        return cls.for_agents([(a.site, a.agent, a.public_keys) for a in agents], source)


def b64url_sha256(data: bytes) -> str:
    """base64url (no padding) SHA-256, the form of `prev` (docs/contract.md §3)."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")


@dataclass(slots=True)
class Verified:
    """A verified envelope, ready to be stored."""

    site: str
    agent: str
    seq: int
    stream: str
    kid: str
    created: str
    payload_sha256: str
    prev: str
    topic: str
    items: list[dict[str, Any]]
    body: bytes = b""  # the JWS as received: the evidence kept beside the rows (or a conflict's)
    flag: str | None = None  # an implausible `created`: stored, and alerted
    payload: bytes = b""  # the signed payload (decoded once, to verify it)
    members: Mapping[str, Any] | None = None  # the JWS's members as parsed (evidence.pack_verified)


def verify(body: bytes, topic: str, *, site: str, agent: str, stream: str,
           registry: SharedRegistry, limits: Limits = DEFAULT_LIMITS,
           received: float | None = None) -> Verified:
    """Verify one envelope received on `topic`; raise `Rejected` (and nothing else) otherwise."""
    signed = registry.check(body, owner=(site, agent), max_bytes=limits.max_envelope_bytes)
    doc = parse_payload(stream, signed.payload, kid=signed.kid, limits=limits)
    if (doc.site, doc.agent) != (site, agent):
        raise Rejected(f"payload names {doc.site}/{doc.agent}, topic {site}/{agent}",
                       kid=signed.kid, code="route_mismatch")
    flag = None if received is None else created_flag(doc.created_at, received, limits)
    return Verified(site, agent, doc.seq, stream, signed.kid, doc.created,
                    b64url_sha256(signed.payload), doc.prev, topic, doc.items, body=body,
                    flag=flag, payload=signed.payload, members=signed.members)
