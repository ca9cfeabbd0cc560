"""Synthetic agents for ingest tests and the ingest bench: real signatures, seq and hash chain,
published with paho-mqtt at QoS 1 on the agent topics of docs/contract.md §2."""

from __future__ import annotations

import base64
import hashlib
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt

from agent.delivery.signing import Signer, generate_key_files

PREFIX = "isoedge/v1"


def b64sha(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class SynthAgent:
    """Builds the signed envelopes one agent would publish (no broker needed to build)."""

    site: str
    agent: str
    keydir: Path
    signer: Signer | None = None
    seq: int = 0
    prev: str = ""
    counter: int = 0
    sent: dict[int, tuple[str, bytes]] = field(default_factory=dict)
    # Reading ids in the agent's form (agent/core/reading.py): a random prefix and a counter.
    id_prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    def __post_init__(self) -> None:
        if self.signer is None:
            self.signer = generate_key_files(self.keydir, overwrite=True)

    @property
    def jwk_path(self) -> Path:
        return self.keydir / "signing.pub.jwk"

    def envelope(self, stream: str = "readings", n_items: int = 10,
                 device: str = "dc-1", items: list[dict] | None = None) -> tuple[str, bytes]:
        """The next envelope: seq + 1, chained to the previous one, signed."""
        assert self.signer is not None
        self.seq += 1
        created = now()
        given = items is not None
        items = list(items or [])
        for _ in range(0 if given else n_items):
            self.counter += 1
            if stream == "readings":
                items.append({
                    "id": f"{self.id_prefix}{self.counter:012x}", "device": device,
                    "channel": "activity", "t": now(), "value": 100.0 + self.counter % 50,
                    "unit": "MBq", "quality": "good", "nuclide": "F-18",
                    "raw": {"value": 2.7 + self.counter % 50 / 37, "unit": "mCi"},
                })
            else:
                items.append({"id": f"{self.agent}-{uuid.uuid4().hex}", "t": now(),
                              "event": f"{stream}.synthetic", "n": self.counter})
        payload = orjson.dumps({
            "v": 1, "site": self.site, "agent": self.agent, "stream": stream, "seq": self.seq,
            "prev": self.prev, "created": created, "items": items,
        })
        self.prev = b64sha(payload)
        topic = f"{PREFIX}/{self.site}/{self.agent}/" + (
            f"readings/{device}" if stream == "readings" else stream)
        body = self.signer.sign_bytes(payload)
        self.sent[self.seq] = (topic, body)
        return topic, body


class Publisher:
    """A paho client publishing QoS 1 and waiting for PUBACKs."""

    def __init__(self, port: int, client_id: str | None = None) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"synth-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self._connected = threading.Event()
        self.client.on_connect = lambda *_a: self._connected.set()
        self.client.reconnect_delay_set(0.1, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError("synthetic publisher could not connect")
        self.infos: list[mqtt.MQTTMessageInfo] = []

    def publish(self, topic: str, body: bytes, *, retain: bool = False) -> None:
        self.infos.append(self.client.publish(topic, body, qos=1, retain=retain))

    def wait_acked(self, timeout: float = 30.0) -> None:
        for info in self.infos:
            info.wait_for_publish(timeout)
        self.infos.clear()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
