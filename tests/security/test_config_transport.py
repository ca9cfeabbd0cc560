"""Transport: `check-config` refuses a console beyond loopback without TLS and broker
credentials over plain mqtt:// to another host, unless `allow_insecure = true` says why; state
files are the agent user's only (issue 20)."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from agentproc import AgentProcess, counter_devices, make_keys, write_config
from helpers import cli_env, isoedge_cmd, wait_until

from agent.service.config import ConfigError, parse_config

BASE = {"agent": {"site": "lab", "id": "edge1"}}


def _check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "site.toml"
    path.write_text('[agent]\nsite = "lab"\nid = "edge1"\n' + text)
    return subprocess.run(isoedge_cmd("check-config", str(path)), capture_output=True, text=True,
                          env=cli_env(), timeout=60, check=False)


def test_check_config_refuses_a_console_beyond_loopback_without_tls(tmp_path):
    done = _check(tmp_path, '[web]\nlisten = "0.0.0.0:8088"\n')
    assert done.returncode == 2, done.stdout + done.stderr
    assert "web" in done.stderr
    assert "without TLS" in done.stderr
    ok = _check(tmp_path, '[web]\nlisten = "0.0.0.0:8088"\nallow_insecure = true\n'
                          'insecure_reason = "isolated lab network, TLS terminated upstream"\n')
    assert ok.returncode == 0, ok.stderr
    with pytest.raises(ConfigError, match="insecure_reason"):
        parse_config({**BASE, "web": {"listen": "10.1.2.3:8088", "allow_insecure": True}})
    for listen in ("127.0.0.1:8088", "[::1]:8088", "localhost:8088"):
        parse_config({**BASE, "web": {"listen": listen}})
    parse_config({**BASE, "web": {"listen": "0.0.0.0:8088", "enabled": False}})


def test_check_config_refuses_broker_credentials_in_clear_text_to_another_host(tmp_path):
    done = _check(tmp_path, '[broker]\nurl = "mqtt://broker.hospital.example:1883"\n'
                            'username = "edge1"\npassword_file = "broker.password"\n')
    assert done.returncode == 2, done.stdout + done.stderr
    assert "broker" in done.stderr
    assert "clear text" in done.stderr
    for url in ("mqtts://broker.hospital.example:8883", "mqtt://127.0.0.1:1883"):
        parse_config({**BASE, "broker": {"url": url, "username": "edge1"}})
    parse_config({**BASE, "broker": {"url": "mqtt://10.0.0.5", "username": "edge1",
                                     "allow_insecure": True, "insecure_reason": "bench VLAN"}})
    parse_config({**BASE, "broker": {"url": "mqtt://10.0.0.5"}})  # no credentials: nothing leaks


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_files_are_the_agent_users_only(tmp_path, mosquitto):
    make_keys(tmp_path / "keys")
    config = write_config(tmp_path / "isoedge.toml", mosquitto.url, counter_devices(1, 0.05))
    state = tmp_path / "state"
    state.mkdir()
    old = state / "outbox.db"
    old.touch(mode=0o644)  # as an earlier run outside systemd left it
    old.chmod(0o644)
    agent = AgentProcess(config).start()
    try:
        wait_until(lambda: (state / "outbox.db-wal").exists() and _mode(old) == 0o600,
                   timeout=30)
        files = [p for p in state.iterdir() if p.is_file()]
        assert {p.name for p in files} >= {"outbox.db", "outbox.db-wal", "agent.lock"}
        for path in files:
            assert _mode(path) & 0o077 == 0, (path.name, oct(_mode(path)))
    finally:
        assert agent.terminate() == 0, agent.log()


def test_the_ingest_refuses_broker_credentials_in_clear_text_too():
    from central.config import ConfigError as IngestConfigError
    from central.config import parse_config as parse_ingest

    data = {"database": {"url": "postgresql://127.0.0.1/isoedge"},
            "broker": {"url": "mqtt://broker.hospital.example", "username": "ingest"}}
    with pytest.raises(IngestConfigError, match="clear text"):
        parse_ingest(data, "ingest.toml")
    parse_ingest({**data, "broker": {**data["broker"], "url": "mqtts://broker.hospital.example"}},
                 "ingest.toml")
