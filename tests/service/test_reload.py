"""SIGHUP reload of `isoedge run`: real process, real mosquitto, real subscriber."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
import tomllib
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
import pytest
from helpers import REPO, cli_env, free_port, isoedge_cmd, wait_for_condition, wait_until

from agent.delivery.signing import generate_key_files
from agent.delivery.verification import KeyRegistry
from agent.service.config import load_config, parse_config
from agent.service.runtime import Agent
from agent.tools.verify import Verifier

if TYPE_CHECKING:
    from pathlib import Path

class Collector:
    """Subscribes to everything under isoedge/v1 and keeps verified envelopes."""

    def __init__(self, port: int, jwk: Path) -> None:
        self.keys = KeyRegistry.from_files([jwk])
        self.verifier = Verifier(self.keys)
        self.documents: list[dict] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-collector")
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *_args: self.subscribed.set()
        self.client.on_connect = lambda client, *_args: client.subscribe("isoedge/v1/#", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "collector did not subscribe"

    def _on_message(self, _client, _userdata, message) -> None:
        with self.lock:
            self.verifier.add(message.topic, message.payload)
            if message.topic.endswith("/status"):
                return
            document = self.keys.verify(message.payload).document
            self.documents.append(document)

    def items(self, stream: str) -> list[dict]:
        with self.lock:
            return [i for d in self.documents if d["stream"] == stream for i in d["items"]]

    def events(self, name: str) -> list[dict]:
        return [i for i in self.items("audit") if i.get("event") == name]

    def devices_seen(self) -> set[str]:
        return {i["device"] for i in self.items("readings")}

    def readings_of(self, device: str) -> int:
        return sum(1 for i in self.items("readings") if i["device"] == device)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker_port(mosquitto):
    return mosquitto.port


def _config(tmp_path: Path, port: int, devices: list[str], extra: str = "") -> str:
    blocks = "".join(
        f'\n[[devices]]\nid = "{d}"\ntype = "synthetic"\npoll_interval_s = 0.1\n'
        f'channels = ["dose_rate"]\n{extra}'
        for d in devices
    )
    return (
        f'[agent]\nsite = "lab"\nid = "edge1"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[broker]\nurl = "mqtt://127.0.0.1:{port}"\n'
        f'[signing]\nkey_file = "{tmp_path / "keys" / "signing.key"}"\n'
        '[outbox]\nfsync = "normal"\n'
        f"[web]\nenabled = false\n"
        f"{blocks}"
    )


def test_sighup_adds_a_device_keeps_seq_and_rejects_a_bad_file(tmp_path, broker_port):
    generate_key_files(tmp_path / "keys")
    config = tmp_path / "isoedge.toml"
    config.write_text(_config(tmp_path, broker_port, ["cal1"]))
    collector = Collector(broker_port, tmp_path / "keys" / "signing.pub.jwk")
    log = (tmp_path / "agent.log").open("w")
    agent = subprocess.Popen(isoedge_cmd("run", "-c", str(config)), env=cli_env(), cwd=REPO,
                             stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: collector.readings_of("cal1") >= 3, timeout=20)

        # 1. A valid change: one more device. The first keeps running, seq continues.
        config.write_text(_config(tmp_path, broker_port, ["cal1", "cal2"]))
        agent.send_signal(signal.SIGHUP)
        wait_until(lambda: collector.readings_of("cal2") >= 3, timeout=20)
        wait_until(lambda: collector.events("config.reloaded"), timeout=10)
        reloaded = collector.events("config.reloaded")[0]
        assert reloaded["added"] == ["cal2"]
        assert reloaded["removed"] == []
        assert reloaded["changed"] == []
        assert reloaded["old_devices"] == ["cal1"]
        assert reloaded["devices"] == ["cal1", "cal2"]
        assert reloaded["restart_required"] == []
        assert len(reloaded["sha256"]) == 64

        # 2. An invalid file: nothing changes, the agent keeps acquiring from both devices.
        config.write_text(_config(tmp_path, broker_port, ["cal1"], extra="bogus_key = 1\n"))
        agent.send_signal(signal.SIGHUP)
        wait_until(lambda: collector.events("config.reload_failed"), timeout=10)
        failed = collector.events("config.reload_failed")[0]
        assert any("bogus_key" in e for e in failed["errors"])
        assert failed["devices"] == ["cal1", "cal2"]
        counts = (collector.readings_of("cal1"), collector.readings_of("cal2"))
        wait_until(
            lambda: collector.readings_of("cal1") > counts[0]
            and collector.readings_of("cal2") > counts[1],
            timeout=10,
        )
        assert agent.poll() is None

        # 3. A device removed by a valid reload stops producing readings.
        config.write_text(_config(tmp_path, broker_port, ["cal2"]))
        agent.send_signal(signal.SIGHUP)
        wait_until(lambda: len(collector.events("config.reloaded")) == 2, timeout=10)
        assert collector.events("config.reloaded")[1]["removed"] == ["cal1"]
        time.sleep(0.5)  # readings of cal1 already queued are still delivered
        before = collector.readings_of("cal1")
        time.sleep(1.0)
        assert collector.readings_of("cal1") == before
    finally:
        agent.send_signal(signal.SIGTERM)
        returncode = agent.wait(timeout=15)
        log.close()
    output = (tmp_path / "agent.log").read_text()
    assert returncode == 0, output
    assert "configuration reload failed" in output
    _check_sequence(collector)


def _check_sequence(collector: Collector) -> None:
    """Everything received verifies; seq starts at 1 and has no gap across the reloads."""
    wait_until(lambda: collector.events("config.loaded"), timeout=5)
    time.sleep(0.3)
    collector.close()
    report = collector.verifier.report()
    assert report["gaps"] == [], report
    assert report["broken_chain"] == [], report
    assert report["bad_signatures"] == [], report
    assert report["agents"]["lab/edge1"]["first_seq"] == 1
    # Every reading id is unique even across reloads.
    ids = [i["id"] for i in collector.items("readings")]
    assert len(ids) == len(set(ids))
    assert json.loads(json.dumps(report))["envelopes"] > 0


async def test_reload_in_process_restarts_changed_devices_and_reports_restart_sections(tmp_path):
    generate_key_files(tmp_path / "keys")
    port = free_port()
    path = tmp_path / "isoedge.toml"
    path.write_text(_config(tmp_path, port, ["cal1", "cal2"]))
    agent = Agent(load_config(path), config_path=path)
    stop = asyncio.Event()
    runner = asyncio.create_task(agent.run(stop))
    try:
        await asyncio.wait_for(agent.started.wait(), 10)
        cal1, cal2 = agent.supervisors["cal1"], agent.supervisors["cal2"]
        text = _config(tmp_path, free_port(), ["cal1", "cal2"])
        text = text.replace('id = "cal1"\ntype = "synthetic"\npoll_interval_s = 0.1',
                            'id = "cal1"\ntype = "synthetic"\npoll_interval_s = 0.5')
        text += "[clock]\njump_threshold_s = 5.0\n"
        new = parse_config(tomllib.loads(text))
        result = await agent.reload(new)
        assert result.devices.changed == ["cal1"]
        assert result.devices.unchanged == ["cal2"]
        assert result.restart_required == ["broker"]
        assert result.clock_changed
        assert agent.supervisors["cal1"] is not cal1, "changed device: new supervisor"
        assert agent.supervisors["cal1"].config.poll_interval_s == 0.5
        assert agent.supervisors["cal2"] is cal2, "unchanged device: untouched"
        assert agent.config.broker.port == port, "broker change waits for a restart"
        assert agent.clock.settings.jump_threshold_s == 5.0
        await wait_for_condition(
            lambda: agent.supervisors["cal1"].state.value == "online", timeout=5
        )
        assert sorted(t.get_name() for t in asyncio.all_tasks()
                      if t.get_name().startswith("supervisor-")) == [
            "supervisor-cal1", "supervisor-cal2"
        ], "the old cal1 task is gone"
    finally:
        stop.set()
        await asyncio.wait_for(runner, 15)


async def test_reload_reports_a_changed_qc_programme_and_watches_an_added_device(tmp_path):
    """Apply-or-report: a changed `[qc]` is reported as restart_required (the running one
    kept, the status line says so); a device added by reload gets its poll interval in the
    rule engine, so its stale rule fires when it sends nothing."""
    generate_key_files(tmp_path / "keys")
    port = free_port()
    stale = ('\n[[rules]]\nname = "no-data"\ntype = "stale"\nfactor = 3\nseverity = "warning"\n'
             'while_offline = true\n\n[qc]\ntimezone = "UTC"\n')
    path = tmp_path / "isoedge.toml"
    path.write_text(_config(tmp_path, port, ["cal1"]) + stale)
    agent = Agent(load_config(path), config_path=path)
    stop = asyncio.Event()
    runner = asyncio.create_task(agent.run(stop))
    try:
        await asyncio.wait_for(agent.started.wait(), 10)
        # dc9 is added: a dose calibrator on a serial port that does not exist (no data).
        text = _config(tmp_path, port, ["cal1"]) + stale.replace('"UTC"', '"Asia/Almaty"')
        text += ('\n[[devices]]\nid = "dc9"\ntype = "capintec_crc15"\nport = "/dev/null-isoedge"'
                 '\npoll_interval_s = 0.2\n')
        result = await agent.reload(parse_config(tomllib.loads(text)))
        assert result.devices.added == ["dc9"]
        assert result.restart_required == ["qc"]
        assert result.applied == ["devices"]
        assert agent.config.qc.timezone == "UTC", "the running QC programme is kept"
        assert "restart required for qc" in agent.service_status()
        # dc9 never delivers (its port does not exist): after 3 x 0.2 s its stale alert fires.
        await wait_for_condition(
            lambda: agent.alerts.active_alert("no-data", "dc9", None) is not None, timeout=20
        )
        assert agent.alerts.active_alert("no-data", "cal1", None) is None
        # Removing it again clears its stale alert (nothing is watched any more).
        await agent.reload(parse_config(tomllib.loads(_config(tmp_path, port, ["cal1"]) + stale)))
        assert agent.alerts.active_alert("no-data", "dc9", None) is None
        assert agent.restart_required == [], "back to the running [qc]: nothing pending"
    finally:
        stop.set()
        await asyncio.wait_for(runner, 15)


def test_every_section_is_applied_or_reported():
    from agent.service.config import Config
    from agent.service.reload import APPLIED_SECTIONS, RESTART_SECTIONS

    assert set(APPLIED_SECTIONS) | set(RESTART_SECTIONS) == set(Config.model_fields)
    assert not set(APPLIED_SECTIONS) & set(RESTART_SECTIONS)
    assert "qc" in RESTART_SECTIONS
