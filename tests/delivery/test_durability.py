"""Nothing lost, nothing forged: broker outage, agent SIGKILL, tampering, quota (issue 6)."""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import time
from collections import defaultdict

import paho.mqtt.client as mqtt
import pytest
from agentproc import AgentProcess, counter_devices, make_keys, write_config
from collector import Collector, assert_gapless_chain, decode_all
from helpers import cli_env, isoedge_cmd, wait_until
from statestore import durable_item_ids

from agent.delivery.settings import BrokerSection

pytestmark = pytest.mark.slow




def counters_by_channel(decoded) -> dict[tuple[str, str], list[float]]:
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for _topic, document, _payload in decoded:
        if document["stream"] != "readings":
            continue
        for item in document["items"]:
            values[(item["device"], item["channel"])].append(item["value"])
    return values


def _backlog_arrived(collector: Collector, channels: int, at_least: int) -> bool:
    """Every counter channel arrived complete from 1 and past `at_least` (payloads read
    without checking signatures: the test verifies every one at the end)."""
    values: dict[tuple[str, str], set[float]] = defaultdict(set)
    for message in collector.envelopes():
        payload = json.loads(message.payload)["payload"]
        document = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        if document["stream"] == "readings":
            for item in document["items"]:
                values[(item["device"], item["channel"])].add(item["value"])
    return len(values) == channels and all(
        len(seen) > at_least and seen == set(map(float, range(1, len(seen) + 1)))
        for seen in values.values())


def test_broker_outage_of_30_s_loses_nothing(tmp_path, mosquitto):
    jwk = make_keys(tmp_path / "keys")
    collector = Collector(mosquitto.port).start()
    config = write_config(tmp_path / "agent.toml", mosquitto.url, counter_devices(3))
    agent = AgentProcess(config).start()
    try:
        wait_until(lambda: len(collector.envelopes()) > 10, timeout=20)
        mosquitto.stop()
        time.sleep(30)
        mosquitto.start()
        # Once the agent has reconnected and drained the 30 s backlog (every channel's counter
        # complete past the outage), stop it cleanly: that flushes and sends what was acquired
        # up to the stop.
        wait_until(lambda: _backlog_arrived(collector, 6, 30 * 20), timeout=90, interval=0.5)
    finally:
        code = agent.terminate()
    assert code == 0, agent.log()[-3000:]
    time.sleep(1)
    collector.stop()

    decoded = decode_all(collector.envelopes(), jwk)  # every signature verified by joserfc
    assert_gapless_chain(decoded)
    values = counters_by_channel(decoded)
    assert len(values) == 6
    for key, seen in values.items():
        unique = sorted(set(seen))
        # Counters run 1, 2, 3 ... per channel: every value the source produced arrived.
        assert unique == [float(v) for v in range(1, len(unique) + 1)], f"{key} has holes"
        # The outage lasted 30 s at ~50 values/s per channel: the backlog is really in there.
        assert len(unique) > 30 * 20, (key, len(unique))
    assert "broker connection lost" in agent.log() or "broker unreachable" in agent.log()


def test_sigkill_loses_nothing_durable_and_seq_continues(tmp_path, mosquitto):
    jwk = make_keys(tmp_path / "keys")
    collector = Collector(mosquitto.port).start()
    config = write_config(tmp_path / "agent.toml", mosquitto.url, counter_devices(3, 0.005))
    agent = AgentProcess(config)
    # Broker down during the kill, so the outbox holds a real backlog when the agent dies.
    agent.start()
    wait_until(lambda: len(collector.envelopes()) > 5, timeout=20)
    mosquitto.stop()
    time.sleep(2)
    agent.kill()
    durable, unsent_seqs = durable_item_ids(tmp_path / "state" / "outbox.db")
    assert len(durable) > 500
    before = decode_all(collector.envelopes(), jwk)
    received_before = {i["id"] for _t, d, _p in before for i in d["items"]}
    seqs_before = {d["seq"] for _t, d, _p in before}

    mosquitto.start()
    agent2 = AgentProcess(config).start()
    try:
        def delivered() -> set[str]:
            return {i["id"] for _t, d, _p in decode_all(collector.envelopes(), jwk) for i in d["items"]}
        wait_until(lambda: durable <= delivered(), timeout=30)
    finally:
        assert agent2.terminate() == 0
    collector.stop()
    decoded = decode_all(collector.envelopes(), jwk)
    # One agent identity, one chain: seq never restarts or skips across the crash.
    assert_gapless_chain(decoded)
    assert received_before  # some had already gone out before the kill
    # Rows are deleted on PUBACK. An envelope the broker forwarded but whose PUBACK never
    # reached the agent (the broker stopped in between) stays and is sent again: at least
    # once. Those can only be the last envelopes in flight, never an earlier one.
    resent = unsent_seqs & seqs_before
    acknowledged = seqs_before - unsent_seqs
    window = BrokerSection.model_fields["max_inflight"].default
    assert len(resent) <= window, "more than one in-flight window kept after its PUBACK"
    assert not resent or min(resent) > max(acknowledged), (sorted(resent), max(acknowledged))


def run_verify(port: int, jwk_path, publish, *extra: str) -> tuple[int, dict]:
    """Start `isoedge verify`, publish envelopes while it listens, return (exit code, report)."""
    proc = subprocess.Popen(
        isoedge_cmd("verify", "--broker", f"mqtt://127.0.0.1:{port}", "--key", str(jwk_path),
                    "--idle", "3", "--topic", "isoedge/v1/#", *extra),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()  # "isoedge verify: subscribed to ..." once it listens
    assert "subscribed" in line, line
    publish()
    out, err = proc.communicate(timeout=30)
    return proc.returncode, json.loads(out) if out.strip().startswith("{") else {"stderr": err}


@pytest.fixture
def captured(tmp_path, mosquitto):
    """A real run's envelopes (raw bytes, in order), captured from the broker."""
    make_keys(tmp_path / "keys")
    collector = Collector(mosquitto.port).start()
    # An envelope every 0.1 s (twelve are wanted; the 1 s default would take twelve seconds).
    config = write_config(tmp_path / "agent.toml", mosquitto.url, counter_devices(1, 0.02),
                          "[outbox]\nmax_commit_delay_ms = 100\n")
    agent = AgentProcess(config).start()
    try:
        wait_until(lambda: len(collector.envelopes()) >= 12, timeout=20)
    finally:
        agent.terminate()
    collector.stop()
    envelopes = collector.envelopes()[:12]
    return tmp_path / "keys" / "signing.pub.jwk", [(m.topic, m.payload) for m in envelopes]


def republisher(port: int, envelopes):
    def publish() -> None:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client.connect("127.0.0.1", port)
        client.loop_start()
        for topic, body in envelopes:
            client.publish(topic, body, qos=1).wait_for_publish(5)
        client.disconnect()
        client.loop_stop()
    return publish


def test_verify_passes_an_untouched_stream(captured, mosquitto):
    jwk_path, envelopes = captured
    code, report = run_verify(mosquitto.port, jwk_path, republisher(mosquitto.port, envelopes))
    assert code == 0, report
    assert report["ok"] is True
    assert report["envelopes"] == len(envelopes)


def test_verify_detects_a_changed_byte(captured, mosquitto):
    jwk_path, envelopes = captured
    topic, body = envelopes[5]
    document = json.loads(body)
    payload = document["payload"]
    document["payload"] = payload[:20] + ("x" if payload[20] != "x" else "y") + payload[21:]
    tampered = [*envelopes[:5], (topic, json.dumps(document).encode()), *envelopes[6:]]
    code, report = run_verify(mosquitto.port, jwk_path, republisher(mosquitto.port, tampered))
    assert code == 1
    assert report["bad_signature_count"] == 1
    assert report["gaps"], "the forged envelope is not counted, so its seq is missing"


def test_verify_detects_a_replayed_envelope(captured, mosquitto):
    jwk_path, envelopes = captured
    replayed = [*envelopes, envelopes[3]]
    code, report = run_verify(mosquitto.port, jwk_path, republisher(mosquitto.port, replayed))
    assert code == 1
    assert report["duplicate_count"] == 1
    assert report["duplicates"][0]["seq"] == json.loads(
        base64.urlsafe_b64decode(json.loads(envelopes[3][1])["payload"] + "==")
    )["seq"]


def test_verify_detects_a_dropped_envelope(captured, mosquitto):
    jwk_path, envelopes = captured
    dropped = envelopes[:6] + envelopes[7:]
    code, report = run_verify(mosquitto.port, jwk_path, republisher(mosquitto.port, dropped))
    assert code == 1
    assert report["gaps"] and report["gaps"][0]["missing"] == 1


def test_quota_full_pauses_low_priority_first_and_raises_an_alert(tmp_path, mosquitto):
    jwk = make_keys(tmp_path / "keys")
    collector = Collector(mosquitto.port).start()
    devices = counter_devices(2, 0.002, priorities=[1, 5])
    config = write_config(tmp_path / "agent.toml", mosquitto.url, devices,
                          extra="[outbox]\nquota_mb = 1.0\n")
    agent = AgentProcess(config).start()
    try:
        wait_until(lambda: len(collector.envelopes()) > 3, timeout=20)
        mosquitto.stop()  # backlog builds up until the quota bites
        status = tmp_path / "status.json"

        def quota_hit() -> bool:
            result = subprocess.run(isoedge_cmd("outbox", "status", "-c", str(config), "--json"),
                                    capture_output=True, text=True, env=cli_env(), timeout=30)
            status.write_text(result.stdout)
            return json.loads(result.stdout)["disk_bytes"] >= 0.9 * 1024 * 1024
        wait_until(quota_hit, timeout=60, interval=0.5)
        time.sleep(3)
        mosquitto.start()
        wait_until(lambda: any(
            i.get("event") == "alert.cleared" and i.get("rule") == "outbox.quota"
            for _t, d, _p in decode_all(collector.envelopes(), jwk) for i in d["items"]),
            timeout=60)
    finally:
        agent.terminate()
    collector.stop()
    decoded = decode_all(collector.envelopes(), jwk)
    assert_gapless_chain(decoded)
    alerts = [i for _t, d, _p in decoded if d["stream"] == "alerts" for i in d["items"]
              if i.get("rule") == "outbox.quota"]
    raised = [a for a in alerts if a["event"] in {"alert.raised", "alert.updated"}]
    assert raised, alerts
    details = raised[0]["details"]
    assert details["paused_devices"] == ["dev-0"]  # priority 1 pauses first, at 90 %
    assert details["state"] == "high"
    assert raised[0]["severity"] == "alarm"
    if len(raised) > 1:  # at 100 % everything pauses, and the alert is escalated
        assert raised[1]["details"]["state"] == "full"
    log = agent.log()
    assert "acquisition paused" in log and "acquisition resumed" in log
    # Never silently dropped: every counter value acquired arrived, without holes.
    for key, seen in counters_by_channel(decoded).items():
        unique = sorted(set(seen))
        assert unique == [float(v) for v in range(1, len(unique) + 1)], key


def test_a_second_agent_on_the_same_state_directory_is_refused(tmp_path, mosquitto):
    make_keys(tmp_path / "keys")
    config = write_config(tmp_path / "agent.toml", mosquitto.url, counter_devices(1, 0.05))
    first = AgentProcess(config).start()
    try:
        wait_until(lambda: "agent starting" in first.log(), timeout=20)
        second = subprocess.run(isoedge_cmd("run", "-c", str(config)), capture_output=True,
                                text=True, env=cli_env(), timeout=60)
    finally:
        assert first.terminate() == 0
    assert second.returncode == 1
    assert "another IsoEdge agent" in second.stderr
    assert str(tmp_path / "state") in second.stderr


def test_an_outbox_that_fails_stops_the_agent_with_exit_code_1(tmp_path, mosquitto):
    """A broken outbox (here: its chain table made read-only) must not leave a hung agent."""
    make_keys(tmp_path / "keys")
    config = write_config(tmp_path / "agent.toml", mosquitto.url, counter_devices(1, 0.01))
    first = AgentProcess(config).start()
    wait_until(lambda: "agent starting" in first.log(), timeout=20)
    assert first.terminate() == 0
    db = sqlite3.connect(tmp_path / "state" / "outbox.db")
    # Simulate a database that refuses writes (a failing disk, a corrupt table).
    db.execute("CREATE TRIGGER refuse BEFORE INSERT ON envelopes BEGIN "
               "SELECT RAISE(ABORT, 'disk failure (simulated)'); END")
    db.commit()
    db.close()
    agent = AgentProcess(config).start()
    assert agent.proc is not None
    code = agent.proc.wait(30)
    assert code == 1
    assert "outbox failed; stopping the agent" in agent.log()
