"""Issue 20, MQTT control plane: the status topic at a running ingest (real mosquitto, PostgreSQL).

Findings: any JSON on any `…/status` was stored, for registered agents or not; a forged
`archive.first_seq` made gaps "permanent, lost for good" although the archive held them;
`{"calibrators": ["boom"]}` made /api/fleet answer 500. Now a status is typed, only a registered
agent's is kept, and what the ingest acts on comes only from the agent's signed evidence.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import orjson
import pytest
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


@pytest.fixture
def rig(tmp_path, mosquitto, postgres):
    r = Rig(tmp_path, mosquitto, postgres)
    yield r
    r.close()


def _stored_count(db: str) -> int:
    try:
        return int(query(db, "SELECT count(*) FROM envelopes")[0][0])
    except Exception:  # the schema is not there yet
        return 0


def test_unregistered_statuses_are_ignored_and_bad_schemas_never_break_the_fleet_page(rig):
    rig.publisher.publish("isoedge/v1/evil/nobody/status", b'{"state": "online"}', retain=True)
    rig.status({"state": "online", "calibrators": ["boom"]})  # the 500 of before
    rig.status({"state": "online", "devices": {"dc-1": {"state": "online", "detail": None}},
                "calibrators": {"dc-1": {"release": "released"}}})  # unsigned release claim
    wait_until(lambda: (rig.stored_status() or {}).get("devices") is not None, timeout=30)
    stored = rig.stored_status()
    assert stored["evidence"]["verified"] is False
    assert "calibrators" not in stored  # a forged release never reaches the fleet page
    assert query(rig.db, "SELECT count(*) FROM agent_status WHERE site = 'evil'")[0][0] == 0
    rig.status({"state": "online", "calibrators": ["boom"]})
    wait_until(lambda: rig.fleet()[0] != 0, timeout=30)
    code, fleet = rig.fleet()
    assert code == 200
    assert fleet["calibrators"] == []
    assert rig.alive()


def test_an_unsigned_archive_claim_never_makes_a_gap_permanent(rig):
    rig.envelopes_with_a_hole()
    # Forged, unsigned: "my archive starts at 10^9", which made 4..5 lost for good before.
    rig.status({"state": "online", "archive": {"first_seq": 1_000_000_000, "last_seq": 12}})
    wait_until(lambda: rig.gap_states() and rig.gap_states()[0][2] == "requested", timeout=30)
    wait_until(lambda: (rig.stored_status() or {}).get("evidence") is not None, timeout=30)
    assert rig.gap_states() == [(4, 5, "requested")]
    assert "archive" not in rig.stored_status()
    assert query(rig.db, "SELECT count(*) FROM central_alerts WHERE kind = 'gap_permanent'"
                 )[0][0] == 0


def test_a_permanent_gap_is_rechecked_when_a_later_signed_statement_shows_it_held(rig):
    rig.envelopes_with_a_hole()
    rig.status({"state": "online"}, signed_archive=8)  # signed: the archive starts after 5
    wait_until(lambda: rig.gap_states() == [(4, 5, "permanent")], timeout=30)
    # An unsigned status afterwards does not erase the signed evidence ...
    rig.status({"state": "offline"})
    wait_until(lambda: (rig.stored_status() or {}).get("state") == "offline", timeout=30)
    assert rig.stored_status()["archive"]["first_seq"] == 8
    # ... and a later signed one that shows the range held re-opens the gap: asked for again.
    rig.status({"state": "online"}, signed_archive=1)
    wait_until(lambda: rig.gap_states() == [(4, 5, "requested")], timeout=30)
    assert rig.alive()
