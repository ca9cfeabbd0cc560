"""What the fault tests share: an agent config with its console on, and the user's view of it.

Everything is read the way an operator or a monitor reads it: `/healthz`, `/metrics`, the log,
and the signed envelopes on the broker (verified with joserfc by `collector.decode_all`).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

from agentproc import AgentProcess, write_config
from collector import Collector, assert_gapless_chain, decode_all
from helpers import free_port


def fault_config(tmp_path: Path, broker_url: str, devices: str, *, outbox: str = "",
                 extra: str = "", broker_extra: str = "") -> tuple[Path, int]:
    """A config with the console on a free loopback port; returns (path, web port)."""
    port = free_port()
    config = write_config(
        tmp_path / "agent.toml", broker_url, devices,
        extra=f"[outbox]\n{outbox}\n{extra}",
        broker_extra=broker_extra,
    )
    text = config.read_text().replace(
        "[web]\nenabled = false", f'[web]\nenabled = true\nlisten = "127.0.0.1:{port}"'
    )
    config.write_text(text)
    return config, port


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body) of a GET on the console; (0, b"") when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (OSError, TimeoutError):
        return 0, b""


def healthz(port: int) -> dict[str, Any] | None:
    status, body = http_get(port, "/healthz")
    if status == 0:
        return None
    return dict(json.loads(body))


def metrics(port: int) -> dict[str, float]:
    """Unlabelled samples of /metrics ({} when the console does not answer)."""
    status, body = http_get(port, "/metrics")
    if status != 200:
        return {}
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        match = re.match(r"^([a-z_]+)(\{[^}]*\})?\s+(\S+)$", line)
        if match:
            name = match.group(1) + (match.group(2) or "")
            out[name] = float(match.group(3))
    return out


def reading_runs_are_whole(decoded: list[tuple[str, dict[str, Any], bytes]]) -> dict[str, Any]:
    """Per channel, in seq order, each counter value is the previous + 1, or 1 (a new driver
    session after a pause or restart). Returns the channels' counts; raises on a hole."""
    last: dict[tuple[str, str], float] = {}
    counts: dict[tuple[str, str], int] = defaultdict(int)
    seen_ids: set[str] = set()
    for _topic, document, _payload in decoded:
        if document["stream"] != "readings":
            continue
        for item in document["items"]:
            if item["id"] in seen_ids:
                continue
            seen_ids.add(item["id"])
            key = (item["device"], item["channel"])
            value = item["value"]
            previous = last.get(key)
            assert value == 1.0 or previous == value - 1, (
                f"{key}: {value} follows {previous}: readings lost in between"
            )
            last[key] = value
            counts[key] += 1
    return {"channels": dict(counts), "readings": len(seen_ids)}


def events(decoded: list[tuple[str, dict[str, Any], bytes]], stream: str) -> list[dict[str, Any]]:
    """Items of one event stream (alerts, audit), in seq order."""
    return [i for _t, d, _p in decoded if d["stream"] == stream for i in d["items"]]


def state_db(state: Path) -> Path:
    """The database holding the outbox: the one state database, or the older outbox.db."""
    merged = state / "state.db"
    return merged if merged.exists() else state / "outbox.db"


def backlog_drained(figures: dict[str, float]) -> bool:
    """Connected, and nothing waits longer than a second: the envelopes still counted are the
    ones in flight (acquisition goes on), not a backlog."""
    if figures.get("isoedge_mqtt_connected") != 1:
        return False
    return (figures.get("isoedge_outbox_envelopes", 1) == 0
            or figures.get("isoedge_outbox_oldest_unsent_age_seconds", 99.0) < 1.0)


def verified_delivery(collector: Collector, jwk: Any) -> tuple[list[Any], dict[str, Any]]:
    """After the agent stopped: every envelope collected, verified, gapless and chained, and
    every counter run whole. Returns the decoded envelopes and the channels' counts."""
    time.sleep(1)  # the last envelopes on their way to the collector
    collector.stop()
    decoded = decode_all(collector.envelopes(), jwk)
    assert_gapless_chain(decoded)
    return decoded, reading_runs_are_whole(decoded)


def finish(agent: AgentProcess, timeout: float = 15.0) -> int:
    """SIGTERM and wait; an agent that does not stop in time is killed and reported as -9."""
    try:
        return agent.terminate(timeout)
    except subprocess.TimeoutExpired:
        agent.kill()
        return -9
