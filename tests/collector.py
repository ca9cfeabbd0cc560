"""A paho-mqtt subscriber that records every message, for end-to-end assertions."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from joserfc import jws
from joserfc.jwk import OKPKey


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    qos: int = 0


@dataclass
class Collector:
    """Subscribes to `topic` on a broker and keeps every message (thread-safe)."""

    port: int
    topic: str = "isoedge/v1/#"
    messages: list[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._connected = threading.Event()
        # A persistent session, like a real consumer's: messages published while this
        # subscriber is reconnecting (after a broker restart) are queued for it, not lost.
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"collector-{uuid.uuid4().hex[:12]}",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.reconnect_delay_set(0.1, 0.5)

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(self.topic, qos=1)
        self._connected.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Message(message.topic, bytes(message.payload), message.retain, message.qos))

    def start(self) -> Collector:
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError("collector could not connect")
        return self

    def stop(self) -> None:
        # DISCONNECT while the network thread runs (it sends it and closes the socket), then
        # join the thread: paho's documented order, nothing left open for the next test.
        self.client.disconnect()
        self.client.loop_stop()

    def snapshot(self) -> list[Message]:
        with self._lock:
            return list(self.messages)

    def envelopes(self) -> list[Message]:
        return [m for m in self.snapshot() if not m.topic.endswith("/status")]


def jose_verify(body: bytes, jwk: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """Verify with joserfc (an independent JOSE library); return (protected header, payload)."""
    registry = jws.JWSRegistry(algorithms=["Ed25519"])
    registry.max_payload_length = 16 * 1024 * 1024  # full envelopes exceed joserfc's 128 000
    key = OKPKey.import_key({k: jwk[k] for k in ("kty", "crv", "x")})
    result = jws.deserialize_json(json.loads(body), key, registry=registry)
    return dict(result.headers()), result.payload


def payload_hash(payload: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(payload).digest()).rstrip(b"=").decode()


def decode_all(messages: list[Message], jwk: dict[str, Any]) -> list[tuple[str, dict[str, Any], bytes]]:
    """Verify and decode every envelope: (topic, payload JSON, payload bytes); dedupes on seq."""
    out: dict[int, tuple[str, dict[str, Any], bytes]] = {}
    for message in messages:
        _header, payload = jose_verify(message.payload, jwk)
        document = json.loads(payload)
        out.setdefault(document["seq"], (message.topic, document, payload))
    return [out[seq] for seq in sorted(out)]


def assert_gapless_chain(decoded: list[tuple[str, dict[str, Any], bytes]], first_seq: int = 1) -> None:
    """seq runs first_seq, first_seq+1, ... with each prev the hash of the previous payload."""
    seqs = [doc["seq"] for _t, doc, _p in decoded]
    assert seqs == list(range(first_seq, first_seq + len(seqs))), f"gaps in {seqs[:5]}..{seqs[-5:]}"
    for (_t0, _d0, p0), (_t1, d1, _p1) in itertools.pairwise(decoded):
        assert d1["prev"] == payload_hash(p0), f"chain broken at seq {d1['seq']}"
    if decoded and decoded[0][1]["seq"] == 1:
        assert decoded[0][1]["prev"] == ""
