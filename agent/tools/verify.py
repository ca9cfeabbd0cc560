"""`isoedge verify`: subscribe and check signatures, sequence gaps, duplicates and the chain."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.delivery.signing import b64url
from agent.delivery.verification import KeyRegistry, VerificationError


@dataclass
class _AgentChain:
    payload_hash: dict[int, str] = field(default_factory=dict)
    prev_of: dict[int, str] = field(default_factory=dict)
    body_of: dict[int, bytes] = field(default_factory=dict)


@dataclass
class Verifier:
    """Accumulates envelopes and reports every integrity problem found."""

    keys: KeyRegistry
    envelopes: int = 0
    items: int = 0
    bad_signatures: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    redeliveries: int = 0
    broken_chain: list[dict[str, Any]] = field(default_factory=list)
    item_ids: set[str] = field(default_factory=set)
    duplicate_item_ids: int = 0
    chains: dict[str, _AgentChain] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    reconnects: int = 0  # connections lost and made again while verifying

    def add(self, topic: str, body: bytes) -> None:
        """Check one received envelope."""
        if topic.endswith("/status"):
            return
        try:
            verified = self.keys.verify(body)
        except VerificationError as exc:
            self.bad_signatures.append({"topic": topic, "error": str(exc)})
            return
        payload, document = verified.payload, verified.document
        self.envelopes += 1
        agent = f"{document.get('site')}/{document.get('agent')}"
        chain = self.chains.setdefault(agent, _AgentChain())
        seq = document.get("seq")
        if not isinstance(seq, int):
            self.bad_signatures.append({"topic": topic, "error": "payload has no integer seq"})
            return
        if seq in chain.body_of:
            if chain.body_of[seq] == body:
                # Byte-identical: a QoS 1 redelivery or a replay; counted, consumers dedupe.
                self.redeliveries += 1
                self.duplicates.append({"agent": agent, "seq": seq, "identical": True})
            else:
                self.duplicates.append({"agent": agent, "seq": seq, "identical": False})
            return
        chain.body_of[seq] = body
        chain.payload_hash[seq] = b64url(hashlib.sha256(payload).digest())
        chain.prev_of[seq] = str(document.get("prev", ""))
        for item in document.get("items", []):
            self.items += 1
            item_id = item.get("id") if isinstance(item, dict) else None
            if item_id in self.item_ids:
                self.duplicate_item_ids += 1
            elif isinstance(item_id, str):
                self.item_ids.add(item_id)

    def report(self, *, allow_redelivery: bool = False) -> dict[str, Any]:
        """JSON summary; `ok` is false on any gap, duplicate, broken link or bad signature.

        With `allow_redelivery`, byte-identical repeats (QoS 1 redelivery) are not counted as
        duplicates: at-least-once delivery may repeat an envelope; that is not tampering.
        """
        duplicates = [
            d for d in self.duplicates if not (allow_redelivery and d["identical"])
        ]
        gaps: list[dict[str, Any]] = []
        broken = list(self.broken_chain)
        ranges: dict[str, Any] = {}
        for agent, chain in self.chains.items():
            seqs = sorted(chain.body_of)
            ranges[agent] = {"first_seq": seqs[0], "last_seq": seqs[-1], "envelopes": len(seqs)}
            for before, after in itertools.pairwise(seqs):
                if after != before + 1:
                    gaps.append(
                        {"agent": agent, "after_seq": before, "missing": after - before - 1}
                    )
            for seq in seqs:
                expected = chain.payload_hash.get(seq - 1)
                if seq == 1 and chain.prev_of[seq] != "":
                    broken.append({"agent": agent, "seq": 1, "error": "seq 1 must have prev ''"})
                elif expected is not None and chain.prev_of[seq] != expected:
                    broken.append(
                        {"agent": agent, "seq": seq, "error": "prev does not match seq-1 payload"}
                    )
        ok = not (gaps or broken or self.bad_signatures or duplicates) and self.envelopes > 0
        return {
            "ok": ok,
            "envelopes": self.envelopes,
            "items": self.items,
            "unique_item_ids": len(self.item_ids),
            "agents": ranges,
            "gaps": gaps,
            "duplicates": duplicates[:100],
            "duplicate_count": len(duplicates),
            "broken_chain": broken[:100],
            "bad_signatures": self.bad_signatures[:100],
            "bad_signature_count": len(self.bad_signatures),
            "reconnects": self.reconnects,
        }


SESSION_EXPIRY_S = 300  # the broker keeps verify's session (and queues for it) this long


async def subscribe_and_verify(  # noqa: C901 - one loop: connect, collect, reconnect
    host: str,
    port: int,
    topic: str,
    verifier: Verifier,
    *,
    duration: float | None,
    count: int | None,
    idle: float | None,
    tls: bool = False,
    username: str | None = None,
    password: str | None = None,
    on_subscribed: Callable[[], None] | None = None,
    on_reconnect: Callable[[str], None] | None = None,
) -> None:
    """Collect envelopes until `duration` passes, `count` arrive or `idle` seconds are quiet.

    One MQTT 5 session (a new client id, so nothing to resume at first; kept by the broker for
    `SESSION_EXPIRY_S`): when the connection drops (a broker restart), it reconnects with
    capped backoff and resumes the session, so what the broker queued meanwhile still arrives
    and nothing verified so far is lost. Only the first connection failing raises.
    """
    start = last = time.monotonic()
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = SESSION_EXPIRY_S
    client = aiomqtt.Client(
        host, port, username=username, password=password,
        tls_params=aiomqtt.TLSParameters() if tls else None, timeout=10,
        identifier=f"isoedge-verify-{uuid.uuid4().hex[:12]}",
        # Never a clean start: the identifier is new, so the first connect has no session to
        # resume anyway, and a reconnect must resume it. (paho's "first only" counts every
        # connect() call as a first one, and aiomqtt calls connect() on each re-entry: the
        # session, with what the broker queued while we were away, was wiped on reconnect.)
        protocol=aiomqtt.ProtocolVersion.V5, clean_start=False,
        properties=properties,
    )

    def remaining() -> float:
        now = time.monotonic()
        limits = [float("inf")]
        if duration is not None:
            limits.append(start + duration - now)
        if idle is not None:
            limits.append(last + idle - now)
        return min(limits)

    connected_once = False
    delay = 0.2
    while True:
        try:
            async with client:
                await client.subscribe(topic, qos=1)
                if not connected_once and on_subscribed is not None:
                    on_subscribed()
                connected_once, delay = True, 0.2
                async for message in _until(client, remaining):
                    last = time.monotonic()
                    payload = message.payload
                    body = payload if isinstance(payload, bytes) else str(payload).encode()
                    verifier.add(str(message.topic), body)
                    if count is not None and verifier.envelopes >= count:
                        return
                return
        except aiomqtt.MqttError as exc:
            if not connected_once:
                raise
            verifier.reconnects += 1
            if on_reconnect is not None:
                on_reconnect(str(exc))
        wait = remaining()
        if wait <= 0:
            return
        await asyncio.sleep(min(delay, wait))
        delay = min(delay * 2, 2.0)


async def _until(client: aiomqtt.Client,
                 remaining: Callable[[], float]) -> AsyncIterator[aiomqtt.Message]:
    """The client's messages until `remaining()` runs out (raises when the link drops)."""
    messages = client.messages.__aiter__()
    while (wait := remaining()) > 0:
        try:
            async with asyncio.timeout(None if wait == float("inf") else wait):
                message = await messages.__anext__()
        except TimeoutError:
            return
        yield message
