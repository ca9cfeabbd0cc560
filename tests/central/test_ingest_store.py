"""Synthetic signed envelopes → mosquitto → `isoedge ingest run` → PostgreSQL."""

from __future__ import annotations

import base64
import subprocess

import orjson
import psycopg
import pytest
from helpers import cli_env, isoedge_cmd, wait_until
from ingestproc import (
    IngestProcess,
    count_envelopes,
    query,
    rebuild_check,
    report,
    write_ingest_config,
)
from synth import Publisher, SynthAgent

CHAIN_OK_SQL = """
SELECT count(*) FROM envelopes e
LEFT JOIN envelopes p ON p.site = e.site AND p.agent = e.agent AND p.seq = e.seq - 1
WHERE (e.seq = 1 AND e.prev <> '') OR (e.seq > 1 AND (p.seq IS NULL OR e.prev <> p.payload_sha256))
"""


@pytest.fixture
def rig(tmp_path, mosquitto, postgres):
    agent = SynthAgent("lab1", "edge1", tmp_path / "keys-edge1")
    config = write_ingest_config(tmp_path / "ingest.toml", mosquitto.url, postgres.url,
                                 [("lab1", "edge1", [agent.jwk_path])],
                                 extra="[repair]\ncheck_interval_s = 0.5\ngrace_s = 1\n")
    publisher = Publisher(mosquitto.port)
    ingests: list[IngestProcess] = []
    yield agent, config, publisher, ingests, postgres
    publisher.close()
    for ingest in ingests:
        ingest.stop_quietly()


def test_envelopes_are_stored_once_with_their_readings_and_the_report_shows_them(rig):
    agent, config, publisher, ingests, postgres = rig
    ingest = IngestProcess(config).start()
    ingests.append(ingest)
    wait_ready(publisher, agent, postgres.url)
    for _ in range(40):
        publisher.publish(*agent.envelope(n_items=25))
    publisher.publish(*agent.envelope(stream="audit", n_items=2))
    for seq in (3, 7, 41):  # re-deliveries change nothing
        publisher.publish(*agent.sent[seq])
    publisher.wait_acked()
    wait_until(lambda: count_envelopes(postgres.url) >= 41, timeout=30)
    assert query(postgres.url, "SELECT count(*) FROM readings")[0][0] == 1000
    assert query(postgres.url, "SELECT count(*) FROM events WHERE stream = 'audit'")[0][0] == 2
    assert query(postgres.url, CHAIN_OK_SQL)[0][0] == 0
    row = query(postgres.url, "SELECT unit, quality, nuclide FROM readings LIMIT 1")
    assert row[0] == ("MBq", "good", "F-18")
    result = report(config)
    assert result == {"agents": [{
        "site": "lab1", "agent": "edge1", "first_seq": 1, "last_seq": 41, "envelopes": 41,
        "gaps": [], "chain": "ok", "readings": 1000,
        "last_seen": result["agents"][0]["last_seen"], "permanent_gaps": [],
    }]}
    assert ingest.terminate() == 0, ingest.log()
    # The completeness kept as envelopes arrived is what the record itself says ...
    check = rebuild_check(config)
    assert check.returncode == 0 and "agrees" in check.stdout, check.stdout + check.stderr
    # ... and a rebuild finds and mends a maintained state that no longer matches it.
    query_write(postgres.url, "UPDATE seq_ranges SET hi = 30")
    query_write(postgres.url, "UPDATE agent_record SET readings = readings - 25")
    check = rebuild_check(config)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "lab1/edge1: counts (41, 975," in check.stdout
    assert "lab1/edge1: ranges [(1, 30)] kept, [(1, 41)] in the record" in check.stdout
    assert report(config)["agents"][0]["readings"] == 975  # what the page would show
    rebuild = subprocess.run(isoedge_cmd("ingest", "rebuild-completeness", "-c", str(config)),
                             capture_output=True, text=True, env=cli_env(), timeout=120)
    assert rebuild.returncode == 0 and "rebuilt" in rebuild.stdout, rebuild.stdout
    assert rebuild_check(config).returncode == 0
    assert report(config) == result


def test_forged_and_tampered_envelopes_are_rejected_and_alerted_never_stored(rig, tmp_path):
    agent, config, publisher, ingests, postgres = rig
    ingests.append(IngestProcess(config).start())
    wait_ready(publisher, agent, postgres.url)
    forger = SynthAgent("lab1", "edge1", tmp_path / "keys-forger")  # valid JWS, unregistered key
    for _ in range(3):
        publisher.publish(*agent.envelope(n_items=5))
    forged_topic, forged = forger.envelope(n_items=5)
    publisher.publish(forged_topic, forged)
    topic, body = agent.envelope(n_items=5)
    jws = orjson.loads(body)
    payload = orjson.loads(base64.urlsafe_b64decode(jws["payload"] + "=="))
    payload["items"][0]["value"] = 1e6  # a changed reading, signature kept
    jws["payload"] = base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=").decode()
    publisher.publish(topic, orjson.dumps(jws))
    publisher.publish(*agent.envelope(n_items=5))  # seq 5 (4 was tampered)
    publisher.wait_acked()
    wait_until(lambda: _db_up(postgres.url) and _count(postgres.url, "rejected") >= 2, timeout=30)
    reasons = sorted(r[0] for r in query(postgres.url, "SELECT reason FROM rejected"))
    assert reasons[0].startswith("bad signature")
    assert reasons[1] == "unknown key"
    assert query(postgres.url, "SELECT count(*) FROM readings WHERE value = 1e6")[0][0] == 0
    forged_ids = [i["id"] for i in orjson.loads(base64.urlsafe_b64decode(
        orjson.loads(forged)["payload"] + "=="))["items"]]
    assert query(postgres.url, "SELECT count(*) FROM readings WHERE id = ANY(%s)",
                 (forged_ids,))[0][0] == 0
    alerts = query(postgres.url, "SELECT kind, site, agent, key FROM central_alerts"
                   " WHERE cleared IS NULL AND kind = 'rejected_envelope' ORDER BY key")
    assert alerts == [("rejected_envelope", "lab1", "edge1", "bad signature"),
                      ("rejected_envelope", "lab1", "edge1", "unknown key")]
    # seq 4 never arrived intact: a gap, asked for (the synthetic agent does not answer)
    wait_until(lambda: report(config)["agents"][0]["gaps"] == [[4, 4]], timeout=20)


def query_write(db_url: str, sql: str, *params: object) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(sql, params or None)


def wait_ready(publisher, agent, db_url, timeout: float = 30.0) -> None:
    """The ingest is subscribed once the agent's retained status reached the database."""
    publisher.publish(f"isoedge/v1/{agent.site}/{agent.agent}/status",
                      orjson.dumps({"state": "online", "site": agent.site, "agent": agent.agent}),
                      retain=True)
    wait_until(lambda: _db_up(db_url) and _count(db_url, "agent_status") >= 1, timeout=timeout)


def _db_up(url: str) -> bool:
    try:
        query(url, "SELECT 1")
    except Exception:
        return False
    return True


def _count(url: str, table: str) -> int:
    try:
        return int(query(url, f"SELECT count(*) FROM {table}")[0][0])  # noqa: S608
    except Exception:
        return 0


def test_invalid_ingest_configuration_exits_2_naming_file_and_key(tmp_path):
    import subprocess

    from helpers import cli_env, isoedge_cmd

    bad = tmp_path / "ingest.toml"
    bad.write_text('[broker]\nurl = "http://x"\ngroup = "a b"\n[database]\nurl = "mysql://x"\n'
                   '[[agents]]\nsite = "s"\nagent = "a"\npublic_keys = []\n')
    result = subprocess.run(isoedge_cmd("ingest", "run", "-c", str(bad)), capture_output=True,
                            text=True, env=cli_env(), timeout=60)
    assert result.returncode == 2
    for key in ("broker.url", "broker.group", "database.url", "agents[0].public_keys"):
        assert f"{bad}: {key}:" in result.stderr, result.stderr
    missing = tmp_path / "missing.toml"
    missing.write_text('[database]\nurl = "postgresql://x@127.0.0.1/x"\n'
                       '[[agents]]\nsite = "s"\nagent = "a"\npublic_keys = ["nope.jwk"]\n')
    result = subprocess.run(isoedge_cmd("ingest", "report", "-c", str(missing)),
                            capture_output=True, text=True, env=cli_env(), timeout=60)
    assert result.returncode == 2
    assert f"{missing}: agents[0].public_keys[0] ({tmp_path / 'nope.jwk'}): cannot read" in result.stderr


def test_rotated_keys_are_accepted_a_broken_chain_is_alerted_and_a_foreign_key_rejected(
        tmp_path, mosquitto, postgres):
    from agent.delivery.signing import generate_key_files

    agent = SynthAgent("lab1", "edge1", tmp_path / "old")
    other = SynthAgent("lab2", "edge2", tmp_path / "other")
    new_key = generate_key_files(tmp_path / "new")
    config = write_ingest_config(
        tmp_path / "ingest.toml", mosquitto.url, postgres.url,
        [("lab1", "edge1", [agent.jwk_path, tmp_path / "new/signing.pub.jwk"]),
         ("lab2", "edge2", [other.jwk_path])],
        extra="[repair]\ncheck_interval_s = 0.5\ngrace_s = 60\n")
    publisher = Publisher(mosquitto.port)
    ingest = IngestProcess(config).start()
    try:
        wait_ready(publisher, agent, postgres.url)
        for _ in range(3):
            publisher.publish(*agent.envelope(n_items=2))
        agent.signer = new_key  # key rotation: seq and chain go on under the new key
        for _ in range(3):
            publisher.publish(*agent.envelope(n_items=2))
        agent.prev = "not-the-hash-of-seq-6"
        publisher.publish(*agent.envelope(n_items=2))  # seq 7: signed, but the chain is broken
        # edge2's (registered) key used for edge1's topic and payload: not edge1's key
        other.site, other.agent = "lab1", "edge1"
        publisher.publish(*other.envelope(n_items=2))
        publisher.wait_acked()
        wait_until(lambda: _count(postgres.url, "envelopes") == 7
                   and _count(postgres.url, "rejected") == 1, timeout=30)
        kids = query(postgres.url, "SELECT DISTINCT kid FROM envelopes")
        assert {k for (k,) in kids} == {_kid(agent.jwk_path), new_key.kid}
        assert query(postgres.url, "SELECT reason FROM rejected")[0][0] == \
            "key registered for lab2/edge2"
        wait_until(lambda: query(postgres.url, "SELECT count(*) FROM central_alerts"
                                 " WHERE kind = 'chain_broken' AND cleared IS NULL")[0][0] == 1,
                   timeout=20)
        edge1 = next(a for a in report(config)["agents"] if a["agent"] == "edge1")
        assert edge1["chain"] == "broken" and edge1["gaps"] == [] and edge1["last_seq"] == 7
    finally:
        publisher.close()
        ingest.stop_quietly()


def _kid(path):
    import json

    from joserfc.jwk import OKPKey

    jwk = json.loads(path.read_text())
    return OKPKey.import_key({k: jwk[k] for k in ("kty", "crv", "x")}).thumbprint()


def test_signed_but_malformed_or_unstorable_envelopes_are_rejected_and_the_ingest_goes_on(rig):
    agent, config, publisher, ingests, postgres = rig
    ingests.append(IngestProcess(config).start())
    wait_ready(publisher, agent, postgres.url)
    publisher.publish(*agent.envelope(n_items=3))  # seq 1
    publisher.publish(*agent.envelope(items=[{"device": "dc-1", "value": 1}]))  # 2: no id, t ...
    good = {"id": "x1", "device": "dc-1", "channel": "activity", "t": "2026-12-01T10:00:00.000000Z",
            "value": 1.0, "unit": "MBq", "quality": "good", "raw": {"value": 1.0, "unit": "MBq"}}
    publisher.publish(*agent.envelope(items=[{**good, "id": "nul\u0000id"}]))  # 3: NUL in text
    publisher.publish(*agent.envelope(items=[{**good, "t": "yesterday-ish"}]))  # 4: not a time
    publisher.publish(*agent.envelope(n_items=3))  # seq 5
    publisher.wait_acked()
    wait_until(lambda: _count(postgres.url, "envelopes") == 2 and _count(postgres.url, "rejected") == 3,
               timeout=30)
    reasons = sorted(r[0] for r in query(postgres.url, "SELECT reason FROM rejected"))
    # the typed parser (central/inbound.py) refuses a NUL and a non-time before the database
    assert reasons == ["items malformed (CONTRACT §3)"] * 3
    assert [s for (s,) in query(postgres.url, "SELECT seq FROM envelopes ORDER BY seq")] == [1, 5]
    assert ingests[0].proc.poll() is None  # still running


def _verify_stored(config, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(isoedge_cmd("ingest", "verify-stored", "-c", str(config), *extra),
                          capture_output=True, text=True, env=cli_env(), timeout=120, check=False)


def test_verify_stored_rechecks_the_signed_evidence_and_finds_a_row_altered_in_sql(rig):
    agent, config, publisher, ingests, postgres = rig
    ingests.append(IngestProcess(config).start())
    wait_ready(publisher, agent, postgres.url)
    for _ in range(5):
        publisher.publish(*agent.envelope(n_items=4))
    publisher.publish(*agent.envelope(stream="audit", n_items=2))
    door = {"id": "door-1", "device": "hotcell-1", "channel": "door_open",
            "t": "2026-12-04T10:00:00.000000Z", "value": True, "unit": None, "quality": "good",
            "raw": {"value": True, "text": "co 0: 01"}}
    state = {**door, "id": "state-1", "channel": "state", "value": "IDLE", "raw": {"text": "IDLE"}}
    publisher.publish(*agent.envelope(items=[door, state], device="hotcell-1"))
    publisher.wait_acked()
    wait_until(lambda: count_envelopes(postgres.url) >= 7, timeout=30)
    ok = _verify_stored(config)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "7 envelopes, 22 readings, 2 events checked against their signatures: no problem" \
        in ok.stdout
    assert query(postgres.url, "SELECT value_bool, value_text FROM readings"
                               " WHERE id IN ('door-1', 'state-1') ORDER BY id") == [
        (True, None), (None, "IDLE")]
    # Someone changes a stored reading in the database: the evidence says otherwise.
    victim = query(postgres.url, "SELECT id, seq FROM readings WHERE seq = 3 AND pos = 1")[0]
    query_write(postgres.url, "UPDATE reading_rows SET value = value + 1 WHERE seq = 3 AND pos = 1")
    query_write(postgres.url, "UPDATE reading_rows SET value_bool = false WHERE seq = 7 AND pos = 0")
    bad = _verify_stored(config)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"lab1/edge1 seq 3: reading {victim[0]} differs from the signed item (value)" \
        in bad.stdout
    assert "lab1/edge1 seq 7: reading door-1 differs from the signed item (value_bool)" \
        in bad.stdout
    # A range: only seq 1..2 is checked, and it is intact.
    part = _verify_stored(config, "--site", "lab1", "--agent", "edge1", "--from", "1", "--to", "2")
    assert part.returncode == 0 and "2 envelopes, 8 readings" in part.stdout, part.stdout
    # An envelope row altered (its chain link) and evidence deleted are found too.
    query_write(postgres.url, "UPDATE envelopes SET prev = 'x' WHERE seq = 2")
    query_write(postgres.url, "DELETE FROM evidence WHERE seq = 5")
    bad = _verify_stored(config, "--from", "1", "--to", "6")
    assert "lab1/edge1 seq 2: envelope row differs from its evidence" in bad.stdout
    assert "lab1/edge1 seq 5: no signed evidence stored" in bad.stdout


def test_text_with_copy_escapes_is_stored_exactly_as_signed(rig):
    """Readings go by COPY text built by the ingest: backslash, tab, newline and CR in any text
    column (value, nuclide, the `extra` JSON) come back exactly as the agent signed them."""
    agent, config, publisher, ingests, postgres = rig
    ingests.append(IngestProcess(config).start())
    wait_ready(publisher, agent, postgres.url)
    nasty = "a\\b\tc\nd\re \\N \\\\t é"
    base = {"device": "panel-1", "t": "2026-12-04T10:00:00.000000Z", "unit": None,
            "quality": "good"}
    items = [
        {**base, "id": "text-1", "channel": "label", "value": nasty, "nuclide": "F\\18\t"},
        {**base, "id": "obj-1", "channel": "blob", "value": {"k": nasty}, "note": nasty},
        {**base, "id": "num-1", "channel": "n", "value": -1.5e-300, "quality": "uncertain"},
        {**base, "id": "int-1", "channel": "i", "value": 2**63 - 1},
        {**base, "id": "null-1", "channel": "z", "value": None, "quality": "bad"},
    ]
    publisher.publish(*agent.envelope(items=items, device="panel-1"))
    publisher.wait_acked()
    wait_until(lambda: count_envelopes(postgres.url) >= 1, timeout=30)
    rows = {r[0]: r[1:] for r in query(
        postgres.url, "SELECT id, value, value_bool, value_text, nuclide, quality, extra"
                      " FROM readings")}
    assert rows["text-1"] == (None, None, nasty, "F\\18\t", "good", None)
    assert rows["obj-1"][:3] == (None, None, None)
    assert rows["obj-1"][5] == {"value": {"k": nasty}, "note": nasty}
    assert rows["num-1"][0] == -1.5e-300 and rows["num-1"][4] == "uncertain"
    assert rows["int-1"][0] == float(2**63 - 1)
    assert rows["null-1"][:3] == (None, None, None) and rows["null-1"][4] == "bad"
    ok = _verify_stored(config)
    assert ok.returncode == 0, ok.stdout + ok.stderr
