"""Simulated device → `isoedge run` → real mosquitto → subscriber verifying with joserfc."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import time

import pytest
from agentproc import AgentProcess, make_keys, write_config
from collector import Collector, assert_gapless_chain, decode_all, jose_verify
from helpers import wait_until

SYNTHETIC = """
[[devices]]
id = "area-1"
type = "synthetic"
channels = ["dose_rate"]
unit = "mR/h"
poll_interval_s = 0.05
"""

RFC3339_MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture
def agent_setup(tmp_path, mosquitto):
    jwk = make_keys(tmp_path / "keys")
    collector = Collector(mosquitto.port).start()
    yield tmp_path, jwk, collector
    collector.stop()


def test_signed_readings_reach_a_subscriber_and_verify_with_joserfc(agent_setup, mosquitto):
    tmp_path, jwk, collector = agent_setup
    config = write_config(tmp_path / "agent.toml", mosquitto.url, SYNTHETIC)
    agent = AgentProcess(config).start()
    try:
        wait_until(lambda: sum(1 for m in collector.envelopes() if "/readings/" in m.topic) >= 5,
                   timeout=20)
    finally:
        code = agent.terminate()
    assert code == 0, agent.log()

    envelopes = collector.envelopes()
    header, _payload = jose_verify(envelopes[0].payload, jwk)
    assert header == {"alg": "Ed25519", "kid": jwk["kid"], "typ": "isoedge+json"}

    decoded = decode_all(envelopes, jwk)
    assert_gapless_chain(decoded)
    readings = [(t, d) for t, d, _p in decoded if d["stream"] == "readings"]
    assert readings
    for topic, document in readings:
        assert topic == "isoedge/v1/lab1/edge1/readings/area-1"
        assert document["v"] == 1
        assert (document["site"], document["agent"]) == ("lab1", "edge1")
        assert RFC3339_MICRO.match(document["created"])
        for item in document["items"]:
            assert item["device"] == "area-1"
            assert item["channel"] == "dose_rate"
            assert RFC3339_MICRO.match(item["t"])
            assert item["unit"] == "uSv/h"
            assert item["quality"] == "good"
            # mR/h is published in µSv/h; the instrument's own value and unit stay in `raw`.
            assert item["raw"]["unit"] == "mR/h"
            assert math.isclose(item["value"], item["raw"]["value"] * 10.0, rel_tol=1e-9)
            assert len(item["id"]) >= 16
    audits = [d for _t, d, _p in decoded if d["stream"] == "audit"]
    assert any(i["event"] == "config.loaded" for d in audits for i in d["items"])


def test_sigterm_stops_within_five_seconds_and_leaves_offline_status(agent_setup, mosquitto):
    tmp_path, _jwk, collector = agent_setup
    config = write_config(tmp_path / "agent.toml", mosquitto.url, SYNTHETIC)
    agent = AgentProcess(config).start()
    status_topic = "isoedge/v1/lab1/edge1/status"
    wait_until(lambda: any(m.topic == status_topic for m in collector.snapshot()), timeout=20)
    online = json.loads(next(m for m in collector.snapshot() if m.topic == status_topic).payload)
    assert online["state"] == "online"
    assert online["devices"]["area-1"]["state"] in {"connecting", "online"}
    started = time.monotonic()
    assert agent.terminate(timeout=10) == 0
    assert time.monotonic() - started < 5.0
    wait_until(
        lambda: json.loads([m for m in collector.snapshot() if m.topic == status_topic][-1].payload)[
            "state"] == "offline",
        timeout=5,
    )
    last = json.loads([m for m in collector.snapshot() if m.topic == status_topic][-1].payload)
    assert last["reason"] == "shutdown"
    # Everything acquired before the stop was published: the outbox is empty.
    out = agent.log()
    assert "agent stopped" in out


def test_sigterm_stops_within_five_seconds_when_the_broker_stopped_answering(
    agent_setup, mosquitto
):
    """A hung broker (process frozen, TCP still open) must not hold the agent past 5 s."""
    tmp_path, _jwk, _collector = agent_setup
    config = write_config(tmp_path / "agent.toml", mosquitto.url, SYNTHETIC)
    agent = AgentProcess(config).start()
    wait_until(lambda: "connected to broker" in agent.log(), timeout=20)
    assert mosquitto.proc is not None
    os.kill(mosquitto.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(1.0)  # readings go on: envelopes wait for PUBACKs that never come
        started = time.monotonic()
        code = agent.terminate(timeout=10)
        took = time.monotonic() - started
    finally:
        os.kill(mosquitto.proc.pid, signal.SIGCONT)
    assert code == 0
    assert took < 5.0, agent.log()[-2000:]
    assert "could not publish offline status" in agent.log()
    assert "agent stopped" in agent.log()


def test_last_will_marks_agent_offline_when_killed(agent_setup, mosquitto):
    tmp_path, _jwk, collector = agent_setup
    config = write_config(tmp_path / "agent.toml", mosquitto.url, SYNTHETIC,
                          broker_extra="keepalive_s = 5")
    agent = AgentProcess(config).start()
    status_topic = "isoedge/v1/lab1/edge1/status"
    try:
        wait_until(lambda: any(m.topic == status_topic for m in collector.snapshot()), timeout=20)
    finally:
        agent.kill()
    # The broker publishes the will when the TCP connection drops without DISCONNECT.
    wait_until(
        lambda: json.loads([m for m in collector.snapshot() if m.topic == status_topic][-1].payload)[
            "state"] == "offline",
        timeout=15,
    )


def test_driver_failure_is_survived_with_backoff(agent_setup, mosquitto):
    tmp_path, jwk, collector = agent_setup
    devices = SYNTHETIC + """
[[devices]]
id = "flaky"
type = "synthetic"
poll_interval_s = 0.02
fail_after = 5
backoff = { initial_s = 0.1, max_s = 0.3 }
"""
    config = write_config(tmp_path / "agent.toml", mosquitto.url, devices)
    agent = AgentProcess(config).start()
    try:
        def flaky_items() -> int:
            decoded = decode_all(collector.envelopes(), jwk)
            return sum(len(d["items"]) for t, d, _ in decoded if t.endswith("/flaky"))
        # 5 samples per connection: more than 15 means it failed and reconnected at least 3 times.
        wait_until(lambda: flaky_items() > 15, timeout=30)
    finally:
        assert agent.terminate() == 0
    log = agent.log()
    assert "device failed; will reconnect" in log
    assert '"device": "flaky"' in log
    decoded = decode_all(collector.envelopes(), jwk)
    assert any(t.endswith("/area-1") for t, _d, _p in decoded), "healthy device kept flowing"


def test_modbus_simulator_to_subscriber_end_to_end(agent_setup, mosquitto):
    """The walking skeleton: `isoedge simulate modbus` → `isoedge run` → mosquitto → joserfc."""
    import subprocess

    from helpers import REPO, cli_env, free_port, isoedge_cmd

    tmp_path, jwk, collector = agent_setup
    port = free_port()
    simulator = subprocess.Popen(
        isoedge_cmd("simulate", "modbus", "--profile", "hotcell", "--port", str(port)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env(),
    )
    try:
        assert simulator.stdout is not None
        banner = simulator.stdout.readline()
        assert f"127.0.0.1:{port}" in banner, banner
        hotcell = (REPO / "config/maps/hotcell.toml").read_text()
        devices = hotcell[hotcell.index("[[devices]]"):].replace("port = 15020", f"port = {port}")
        config = write_config(tmp_path / "agent.toml", mosquitto.url, devices.replace(
            "poll_interval_s = 1.0", "poll_interval_s = 0.2"))
        agent = AgentProcess(config).start()
        try:
            wait_until(lambda: sum(1 for m in collector.envelopes()
                                   if m.topic.endswith("/readings/hotcell-1")) >= 3, timeout=30)
        finally:
            assert agent.terminate() == 0, agent.log()[-2000:]
    finally:
        simulator.terminate()
        simulator.wait(10)
    decoded = decode_all(collector.envelopes(), jwk)
    assert_gapless_chain(decoded)
    items = [i for t, d, _p in decoded if t.endswith("/readings/hotcell-1") for i in d["items"]]
    by_channel = {i["channel"]: i for i in items}
    assert {"cell_pressure", "temperature", "dose_rate_outside", "door_closed"} <= set(by_channel)
    pressure = by_channel["cell_pressure"]
    assert pressure["unit"] == "Pa" and pressure["quality"] == "good"
    assert pressure["value"] < 0  # a hot cell is kept below room pressure
    assert by_channel["temperature"]["unit"] == "Cel"
    assert by_channel["dose_rate_outside"]["unit"] == "uSv/h"


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_both_mqtt_protocol_versions_deliver_signed_readings(agent_setup, mosquitto, protocol):
    tmp_path, jwk, collector = agent_setup
    config = write_config(tmp_path / "agent.toml", mosquitto.url, SYNTHETIC,
                          broker_extra=f'protocol = "{protocol}"')
    agent = AgentProcess(config).start()
    try:
        wait_until(lambda: any("/readings/" in m.topic for m in collector.envelopes()), timeout=20)
    finally:
        assert agent.terminate() == 0
    assert_gapless_chain(decode_all(collector.envelopes(), jwk))
    expected = "V311" if protocol == "3.1.1" else "V5"
    assert f'"protocol": "{expected}"' in agent.log()
