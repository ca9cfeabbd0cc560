"""A running agent (`isoedge run`) trusting one ingest key, for the replay-request tests."""

from __future__ import annotations

import base64
import json

import paho.mqtt.client as mqtt
from agentproc import AgentProcess, make_keys, write_config
from collector import Collector
from helpers import wait_until

from agent.delivery.replay import build_request
from agent.delivery.signing import Signer, generate_key_files

SITE, AGENT = "lab1", "edge1"
BASE = f"isoedge/v1/{SITE}/{AGENT}"
REQUEST = f"{BASE}/replay/request"
DEVICE = """
[[devices]]
id = "area-1"
type = "synthetic"
mode = "counter"
channels = ["a"]
unit = "uSv/h"
poll_interval_s = 0.05
"""


class Rig:
    """A running agent trusting one ingest key, a collector and a plain publishing client."""

    def __init__(self, tmp_path, broker, replay: str = "") -> None:
        self.ingest = generate_key_files(tmp_path / "ingest-keys")
        self.stranger = generate_key_files(tmp_path / "stranger-keys")
        make_keys(tmp_path / "keys")
        trusted = json.dumps(str(tmp_path / "ingest-keys" / "signing.pub.jwk"))
        config = write_config(tmp_path / "agent.toml", broker.url, DEVICE,
                              # Envelopes every 0.1 s rather than every second: the tests
                              # wait for twenty of them, twice.
                              "[outbox]\nmax_commit_delay_ms = 100\n"
                              f"[replay]\ntrusted_keys = [{trusted}]\n{replay}",
                              site=SITE, agent=AGENT)
        self.collector = Collector(broker.port).start()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hostile",
                                  protocol=mqtt.MQTTv311)
        self.client.connect("127.0.0.1", broker.port, keepalive=10)
        self.client.loop_start()
        self.agent = AgentProcess(config)

    def start(self) -> Rig:
        self.agent.start()
        wait_until(lambda: self.max_seq() >= 20, timeout=60)
        return self

    def send(self, body: bytes, *, retain: bool = False) -> None:
        self.client.publish(REQUEST, body, qos=1, retain=retain).wait_for_publish(10)

    def status(self) -> dict:
        found = [m for m in self.collector.snapshot() if m.topic == f"{BASE}/status"]
        return json.loads(found[-1].payload) if found else {}

    def counts(self) -> dict[str, int]:
        return (self.status().get("replay_requests") or {}).get("counts", {})

    def seqs(self) -> list[int]:
        out = []
        for m in self.collector.envelopes():
            if m.topic.startswith(f"{BASE}/") and not m.topic.endswith("/replay/request"):
                doc = json.loads(base64.urlsafe_b64decode(json.loads(m.payload)["payload"] + "=="))
                out.append(doc["seq"])
        return out

    def max_seq(self) -> int:
        return max(self.seqs(), default=0)

    def alive(self) -> bool:
        return self.agent.proc is not None and self.agent.proc.poll() is None

    def close(self) -> None:
        self.agent.stop_quietly()
        self.client.disconnect()
        self.client.loop_stop()
        self.collector.stop()


def signed(signer: Signer, lo: int, hi: int, **kw) -> bytes:
    return build_request(signer, site=kw.pop("site", SITE), agent=kw.pop("agent", AGENT),
                         from_seq=lo, to_seq=hi, **kw)
