"""A running ingest (`isoedge ingest run`) with one registered synthetic agent and the fleet page."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import orjson
from helpers import free_port, wait_until
from ingestproc import IngestProcess, query, write_ingest_config
from synth import Publisher, SynthAgent, now

from agent.console.auth import hash_password
from agent.delivery.evidence import sign_evidence

PASSWORD = "status-test-password"  # noqa: S105 - a test user's password
STATUS = "isoedge/v1/lab1/edge1/status"


class Rig:
    def __init__(self, tmp_path, mosquitto, postgres) -> None:
        self.agent = SynthAgent("lab1", "edge1", tmp_path / "k1")
        self.db = postgres.url
        self.port = free_port()
        config = write_ingest_config(
            tmp_path / "ingest.toml", mosquitto.url, postgres.url,
            [("lab1", "edge1", [self.agent.jwk_path])],
            extra=(f"[repair]\ncheck_interval_s = 0.3\ngrace_s = 0.5\nretry_s = 60\n"
                   f"max_attempts = 5\n"
                   f'[web]\nenabled = true\nlisten = "127.0.0.1:{self.port}"\n'
                   f'[[web.users]]\nname = "viewer"\nrole = "viewer"\n'
                   f'password_hash = "{hash_password(PASSWORD)}"\n'),
        )
        self.ingest = IngestProcess(config).start()
        self.publisher = Publisher(mosquitto.port)
        wait_until(lambda: "ingest connected" in self.ingest.log_path.read_text(), timeout=60)

    def status(self, doc: dict | bytes, *, signed_archive: int | None = None) -> None:
        if signed_archive is not None and isinstance(doc, dict):
            doc = {**doc, "evidence": sign_evidence(
                self.agent.signer, site="lab1", agent="edge1", t=now(),
                archive={"first_seq": signed_archive, "last_seq": self.agent.seq},
                unsent_from=None, last_seq=self.agent.seq, calibrators={})}
        body = doc if isinstance(doc, bytes) else orjson.dumps(doc)
        self.publisher.publish(STATUS, body, retain=True)
        self.publisher.wait_acked()

    def stored_status(self) -> dict | None:
        rows = query(self.db, "SELECT body FROM agent_status WHERE site = 'lab1'"
                     " AND agent = 'edge1'")
        return rows[0][0] if rows else None

    def stored_range(self) -> tuple[int, int, int]:
        row = query(self.db, "SELECT min(seq), max(seq), count(*) FROM envelopes")[0]
        return row[0], row[1], row[2]

    def gap_states(self) -> list[tuple[int, int, str]]:
        return [tuple(r) for r in query(self.db, "SELECT from_seq, to_seq, state FROM gaps"
                                                 " ORDER BY from_seq")]

    def envelopes_with_a_hole(self, n: int = 12, hole: tuple[int, ...] = (4, 5)) -> None:
        for _ in range(n):
            topic, body = self.agent.envelope(n_items=2)
            if self.agent.seq not in hole:
                self.publisher.publish(topic, body)
        self.publisher.wait_acked()

    def fleet(self) -> tuple[int, dict]:
        token = base64.b64encode(f"viewer:{PASSWORD}".encode()).decode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/fleet",
                                         headers={"Authorization": f"Basic {token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, {}
        except urllib.error.URLError:
            return 0, {}  # not listening yet

    def alive(self) -> bool:
        return self.ingest.proc is not None and self.ingest.proc.poll() is None

    def close(self) -> None:
        self.publisher.close()
        self.ingest.stop_quietly()
