"""The security tests' rig at the central ingest: a real `isoedge ingest run` process (with
its fleet page), a real mosquitto and PostgreSQL, and a plain paho client publishing what an
attacker on the broker would."""

from __future__ import annotations

import base64
import sys
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "central"))

from helpers import wait_until
from ingestproc import IngestProcess, query, write_ingest_config
from synth import Publisher, SynthAgent

from agent.core.messages import render
from agent.tools.mosquitto import free_port

CHAIN_BREAKS_SQL = """
SELECT count(*) FROM envelopes e
LEFT JOIN envelopes p ON p.site = e.site AND p.agent = e.agent AND p.seq = e.seq - 1
WHERE e.site = %s AND e.agent = %s AND e.seq <= %s AND ((e.seq = 1 AND e.prev <> '')
   OR (e.seq > 1 AND (p.seq IS NULL OR e.prev <> p.payload_sha256)))
"""


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(agent: SynthAgent, payload: bytes, header: dict[str, Any] | None = None) -> bytes:
    """A flattened JWS over any payload bytes and any protected header, with the agent's key."""
    assert agent.signer is not None
    protected = b64(orjson.dumps(header or {"alg": "Ed25519", "kid": agent.signer.kid,
                                            "typ": "isoedge+json"}))
    encoded = b64(payload)
    signature = agent.signer.private_key.sign(f"{protected}.{encoded}".encode())
    return orjson.dumps({"protected": protected, "payload": encoded, "signature": b64(signature)})


@dataclass
class Rig:
    agent: SynthAgent
    config: Path
    publisher: Publisher
    db: str
    web_port: int
    ingest: IngestProcess
    extra_procs: list[IngestProcess] = field(default_factory=list)

    def stored(self) -> int:
        try:
            return int(query(self.db, "SELECT count(*) FROM envelopes WHERE site = %s AND"
                             " agent = %s", (self.agent.site, self.agent.agent))[0][0])
        except Exception:
            return 0

    def count(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        try:
            return int(query(self.db, sql, params)[0][0])
        except Exception:
            return -1

    def wait_ready(self) -> None:
        """The ingest is subscribed once a status of the agent reached the database."""
        self.publisher.publish(f"isoedge/v1/{self.agent.site}/{self.agent.agent}/status",
                               orjson.dumps({"state": "online"}), retain=True)
        wait_until(lambda: self.count("SELECT count(*) FROM agent_status") >= 1, timeout=60)
        wait_until(self._page_answers, timeout=60)

    def _page_answers(self) -> bool:
        try:
            self.metrics()
        except OSError:
            return False
        return True

    def send_legit(self, n: int) -> None:
        for _ in range(n):
            self.publisher.publish(*self.agent.envelope(n_items=3))

    def assert_stream_complete(self, timeout: float = 60.0) -> None:
        """seq 1..last stored, the hash chain holds, the ingest still runs."""
        last = self.agent.seq
        where = (self.agent.site, self.agent.agent, last)
        wait_until(lambda: self.count("SELECT count(*) FROM envelopes WHERE site = %s AND"
                                      " agent = %s AND seq <= %s", where) >= last,
                   timeout=timeout)
        seqs = [s for (s,) in query(self.db, "SELECT seq FROM envelopes WHERE site = %s AND"
                                    " agent = %s AND seq <= %s ORDER BY seq", where)]
        assert seqs == list(range(1, last + 1))
        assert query(self.db, CHAIN_BREAKS_SQL, where)[0][0] == 0
        assert self.ingest.proc is not None and self.ingest.proc.poll() is None, \
            self.ingest.log()[-3000:]

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/metrics",
                                    timeout=10) as response:
            return str(response.read().decode())

    def alerts(self, kind: str) -> list[tuple[Any, ...]]:
        """Open alerts of `kind`; the message (a code and its detail) as an English reader sees it."""
        rows = query(self.db, "SELECT site, agent, key, severity, count, message, detail FROM"
                     " central_alerts WHERE kind = %s AND cleared IS NULL ORDER BY id", (kind,))
        return [(site, agent, key, severity, count,
                 render(message, "en", None, {**(detail or {}), "site": site, "agent": agent}))
                for site, agent, key, severity, count, message, detail in rows]


def make_rig(tmp_path: Path, mosquitto: Any, postgres: Any, inbound: str = "",
             web: str = "") -> Rig:
    agent = SynthAgent("lab1", "edge1", tmp_path / "keys-edge1")
    port = free_port()
    config = write_ingest_config(
        tmp_path / "ingest.toml", mosquitto.url, postgres.url,
        [("lab1", "edge1", [agent.jwk_path])],
        # A group of its own: its slot lock (and so the client id a restart resumes) is not
        # shared with ingest tests running at the same time.
        group=f"sec-{uuid.uuid4().hex[:12]}",
        extra=((f"[repair]\ncheck_interval_s = 1\ngrace_s = 600\n"
               f'[web]\nenabled = true\nlisten = "127.0.0.1:{port}"\n{web}\n')
               + (f"[inbound]\n{inbound}\n" if inbound else "")),
    )
    publisher = Publisher(mosquitto.port)
    ingest = IngestProcess(config).start()
    return Rig(agent, config, publisher, postgres.url, port, ingest)


def metric(text: str, name: str) -> float:
    """The value of one sample (`name` with its labels) of an exposition text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")

