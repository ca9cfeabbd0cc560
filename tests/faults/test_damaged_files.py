"""Damaged files at start (issue 14): a corrupted state database or signing key.

The agent names the damaged file and says how to recover. By default it refuses to start
(exit 2) and leaves the file as it is; where the configuration allows a fresh start, the
damaged database is moved aside (never deleted) and an alert and an audit record say so.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from agentproc import AgentProcess, counter_devices, make_keys
from collector import Collector, decode_all
from faults.scenario import events, fault_config, finish, healthz, metrics
from helpers import cli_env, isoedge_cmd, wait_until

from agent.core.messages import render

pytestmark = pytest.mark.slow


def state_databases(state: Path) -> list[Path]:
    """The agent's SQLite files (one state database, or the older three)."""
    return sorted(p for p in state.glob("*.db") if p.is_file())


def run_once(tmp_path: Path, mosquitto, *, outbox: str = "") -> tuple[Path, int]:
    """Start an agent, let it store a few envelopes, stop it cleanly; return (config, port)."""
    config, port = fault_config(tmp_path, mosquitto.url, counter_devices(1, 0.01),
                                outbox=outbox)
    agent = AgentProcess(config).start()
    try:
        wait_until(lambda: metrics(port).get("isoedge_outbox_last_seq", 0) > 5, timeout=30)
    finally:
        assert finish(agent) == 0, agent.log()[-3000:]
    return config, port


def damage(path: Path, where: str) -> bytes:
    """Overwrite the header (first 100 bytes) or the second and third pages with garbage."""
    data = bytearray(path.read_bytes())
    if where == "header":
        data[0:100] = b"\xa5" * 100
    else:
        assert len(data) >= 3 * 4096, len(data)
        data[4096 : 3 * 4096] = bytes((i * 37 + 11) % 256 for i in range(2 * 4096))
    path.write_bytes(bytes(data))
    return bytes(data)


def start_and_wait(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(isoedge_cmd("run", "-c", str(config)), capture_output=True, text=True,
                          env=cli_env(), timeout=30, check=False)


@pytest.mark.parametrize("where", ["header", "pages"])
def test_a_damaged_state_database_refuses_the_start_naming_the_file(tmp_path, mosquitto, where):
    make_keys(tmp_path / "keys")
    config, _port = run_once(tmp_path, mosquitto)
    state = tmp_path / "state"
    for target in state_databases(state):
        before = {p.name for p in state.iterdir()}
        damaged = damage(target, where)
        result = start_and_wait(config)
        assert result.returncode == 2, (target.name, result.returncode, result.stderr[-2000:])
        assert str(target) in result.stderr, result.stderr[-2000:]
        assert "on_damaged" in result.stderr  # how to recover: the option, or move it away
        assert "Traceback" not in result.stderr
        # Refused means untouched: the file is where it was, byte for byte, nothing new.
        assert target.read_bytes() == damaged
        assert {p.name for p in state.iterdir()} - before <= {"agent.lock"}
        target.unlink()  # recover this one by hand (as the message says) and try the next


def test_where_allowed_a_damaged_database_is_moved_aside_with_an_alert_and_an_audit_record(
    tmp_path, mosquitto, teardown
):
    jwk = make_keys(tmp_path / "keys")
    config, port = run_once(tmp_path, mosquitto, outbox='on_damaged = "move_aside"')
    state = tmp_path / "state"
    target = state / "state.db" if (state / "state.db").exists() else state / "outbox.db"
    damaged = damage(target, "pages")
    collector = Collector(mosquitto.port).start()
    teardown.callback(collector.stop)
    agent = AgentProcess(config).start()
    try:
        wait_until(lambda: (healthz(port) or {}).get("checks", {}).get("broker") == "connected",
                   timeout=30)

        def recorded() -> bool:
            decoded = decode_all(collector.envelopes(), jwk)
            return any(i.get("event") == "state.damaged" for i in events(decoded, "audit"))
        wait_until(recorded, timeout=30)
    finally:
        assert finish(agent) == 0, agent.log()[-3000:]
    time.sleep(0.5)
    collector.stop()
    aside = [p for p in state.iterdir() if p.name.startswith(target.name + ".damaged-")
             and not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1, sorted(p.name for p in state.iterdir())
    assert aside[0].read_bytes() == damaged  # moved, never deleted or changed
    decoded = decode_all(collector.envelopes(), jwk)
    record = next(i for i in events(decoded, "audit") if i.get("event") == "state.damaged")
    assert record["subject"] == str(target)
    assert str(aside[0]) in str(record["new"])
    alerts = [a for a in events(decoded, "alerts") if a.get("rule") == "state.damaged"]
    assert alerts and alerts[0]["event"] == "alert.raised"
    # The stream keeps the message's code and parameters; a reader renders them.
    assert alerts[0]["message"] == "state.damaged"
    assert alerts[0]["params"]["path"] == str(target)
    assert str(target) in render(alerts[0]["message"], "ru", None, alerts[0]["params"])
    assert "moved aside" in agent.log()


@pytest.mark.parametrize("content", [b"", b"-----BEGIN PRIVATE KEY-----\ngarbage\n"])
def test_a_damaged_signing_key_refuses_the_start_naming_the_file(tmp_path, mosquitto, content):
    make_keys(tmp_path / "keys")
    config, _port = fault_config(tmp_path, mosquitto.url, counter_devices(1, 0.01))
    key = tmp_path / "keys" / "signing.key"
    key.write_bytes(content)
    result = start_and_wait(config)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "keys/signing.key" in result.stderr, result.stderr[-2000:]
    assert "isoedge keygen" in result.stderr  # how to recover
    assert "Traceback" not in result.stderr
