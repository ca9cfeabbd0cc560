"""Run `isoedge run` as a subprocess against a config written by the test."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

from helpers import cli_env, isoedge_cmd

from agent.delivery.signing import generate_key_files


def make_keys(directory: Path) -> dict[str, Any]:
    """The files `isoedge keygen --out DIR` writes (the same function, in this process: the
    CLI's own behaviour is tests/delivery/test_signing.py's); returns the public JWK."""
    generate_key_files(directory)
    return dict(json.loads((directory / "signing.pub.jwk").read_text()))


def write_config(path: Path, broker_url: str, devices: str, extra: str = "", *,
                 site: str = "lab1", agent: str = "edge1", broker_extra: str = "") -> Path:
    """A complete configuration with keys in path.parent/keys and state in path.parent/state."""
    path.write_text(
        f"""
[agent]
site = "{site}"
id = "{agent}"
state_dir = "state"

[broker]
url = "{broker_url}"
reconnect_initial_s = 0.2
reconnect_max_s = 1.0
{broker_extra}

[signing]
key_file = "keys/signing.key"

[web]
enabled = false

{extra}

{devices}
"""
    )
    return path


def counter_devices(n: int, interval: float = 0.01, priorities: list[int] | None = None,
                    channels: int = 2) -> str:
    """`n` synthetic counter devices, `channels` channels each (a, b, ...): values 1, 2, 3 ...
    per channel."""
    names = ", ".join(f'"{chr(ord("a") + c)}"' for c in range(channels))
    blocks = []
    for i in range(n):
        priority = priorities[i] if priorities else 1
        blocks.append(f"""
[[devices]]
id = "dev-{i}"
type = "synthetic"
mode = "counter"
channels = [{names}]
unit = "uSv/h"
poll_interval_s = {interval}
priority = {priority}
""")
    return "\n".join(blocks)


class AgentProcess:
    """`isoedge run -c CONFIG` with its output captured to a log file."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.log_path = config.parent / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                isoedge_cmd("run", "-c", str(self.config)), stdout=log, stderr=log, env=cli_env()
            )
        return self

    def terminate(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
