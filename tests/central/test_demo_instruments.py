"""Acceptance (issue 24): the demo's own five instruments (real simulators, the real agent as
`isoedge demo` runs it) through mosquitto and `isoedge ingest run` into PostgreSQL: every
envelope 1..last stored once, no gap, and every reading stored with its value as sent (numbers,
booleans of the hot cell's door and interlock, text states)."""

from __future__ import annotations

import base64
import signal
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import psycopg
from helpers import cli_env, free_port, isoedge_cmd, wait_until
from ingestproc import IngestProcess, query, report, write_ingest_config

from agent.delivery.outbox import stored_envelopes
from agent.delivery.signing import PUBLIC_JWK_NAME, generate_key_files

REPO = Path(__file__).resolve().parents[2]


def _outbox_envelopes(state: Path) -> dict[int, dict[str, Any]]:
    """Every envelope the agent signed (its outbox keeps sent ones as the replay archive)."""
    (path,) = [p for p in (state / "state").rglob("*.db") if "outbox" in p.name]
    with sqlite3.connect(path) as db:
        rows = stored_envelopes(db)
    out = {}
    for seq, _stream, body in rows:
        payload = orjson.loads(body)["payload"]
        out[int(seq)] = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return out


DEMO_DEVICES = {"dosecal-1", "hotcell-1", "area-monitor-1", "area-monitor-2", "synthesis-1"}


def _every_instrument_stored(url: str) -> bool:
    """Readings of all five instruments, booleans and numbers among them, and events stored."""
    try:
        devices = {d for (d,) in query(url, "SELECT DISTINCT device FROM readings")}
        (flags, numbers), = query(url, "SELECT count(value_bool), count(value) FROM readings")
        (events,), = query(url, "SELECT count(*) FROM events")
    except psycopg.Error:  # the ingest has not created its tables yet
        return False
    return devices == DEMO_DEVICES and flags > 0 and numbers > 0 and events > 0


def _stored_value(number: Any, flag: Any, text: Any) -> Any:
    if flag is not None:
        return flag
    return text if text is not None else number


def test_the_demo_instruments_are_stored_completely_with_every_value(tmp_path, mosquitto,
                                                                     postgres):
    state = tmp_path / "demo"
    generate_key_files(state / "keys")  # the demo signs with the key it finds there
    config = write_ingest_config(
        tmp_path / "ingest.toml", mosquitto.url, postgres.url,
        [("demo-site", "edge-1", [state / "keys" / PUBLIC_JWK_NAME])],
        extra="[repair]\ncheck_interval_s = 1\ngrace_s = 600\n",
    )
    ingest = IngestProcess(config).start()
    try:
        wait_until(lambda: "ingest connected" in ingest.log(), timeout=60)
        # The demo runs until every instrument's readings (numbers and the hot cell's booleans)
        # and its events are in the database, then stops as on Ctrl-C; --duration only caps it.
        out = tmp_path / "demo.out"
        with out.open("wb") as sink:
            demo = subprocess.Popen(
                isoedge_cmd("demo", "--broker", mosquitto.url, "--state-dir", str(state),
                            "--web", f"127.0.0.1:{free_port()}", "--plain", "--duration", "150"),
                stdout=sink, stderr=subprocess.STDOUT, env=cli_env())
        try:
            wait_until(lambda: _every_instrument_stored(postgres.url), timeout=120, interval=0.5)
            demo.send_signal(signal.SIGINT)
            code = demo.wait(timeout=60)
        finally:
            if demo.poll() is None:
                demo.kill()
                demo.wait(10)
        assert code == 0, out.read_text(errors="replace")[-3000:]
        signed = _outbox_envelopes(state)
        last = max(signed)
        assert sorted(signed) == list(range(1, last + 1))

        def all_stored() -> bool:
            return query(postgres.url, "SELECT count(*) FROM envelopes")[0][0] >= last

        wait_until(all_stored, timeout=60, interval=0.5)
        assert query(postgres.url, "SELECT count(*), min(seq), max(seq) FROM envelopes") == [
            (last, 1, last)]
        assert query(postgres.url, "SELECT count(*) FROM rejected") == [(0,)]
        sent = {it["id"]: it for e in signed.values() if e["stream"] == "readings"
                for it in e["items"]}
        stored = {
            rid: _stored_value(n, b, t)
            for rid, n, b, t in query(postgres.url,
                                      "SELECT id, value, value_bool, value_text FROM readings")
        }
        assert len(stored) == len(sent) > 0
        assert {rid: it.get("value") for rid, it in sent.items()} == stored
        kinds = Counter(type(v).__name__ for v in stored.values())
        assert kinds["bool"] > 0 and kinds["float"] > 0, kinds  # the hot cell's door/interlock
        devices = {d for (d,) in query(postgres.url, "SELECT DISTINCT device FROM readings")}
        assert devices == DEMO_DEVICES
        events = sum(len(e["items"]) for e in signed.values() if e["stream"] != "readings")
        assert query(postgres.url, "SELECT count(*) FROM events") == [(events,)]
        (entry,) = report(config)["agents"]
        assert (entry["first_seq"], entry["last_seq"], entry["envelopes"], entry["gaps"],
                entry["chain"], entry["readings"]) == (1, last, last, [], "ok", len(sent))
        assert ingest.terminate() == 0, ingest.log()
    finally:
        ingest.stop_quietly()
